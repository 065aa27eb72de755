"""Demonstrations from robomimic HDF5 and LeRobot v2.1 / v3.0 datasets (written here with h5py,
pyarrow and PyAV per their published layouts) become episode stores: values, frames and times
survive, broken episodes are reported and skipped, and an interrupted conversion resumes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image as PILImage

from robopolicy.cli import main
from robopolicy.datasets.convert import run
from robopolicy.datasets.convert.formats import open_source
from robopolicy.datasets.convert.run import convert_source
from robopolicy.datasets.errors import DataError
from robopolicy.datasets.store import EpisodeStore
from robopolicy.envs.video import write_mp4

FPS = 10
LENGTH = 12
HEIGHT, WIDTH = 32, 48


# ---------------------------------------------------------------- robomimic
def write_robomimic(path: Path, control_freq: int | None = 20,
                    problem_info: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Three good demos (demo_0, demo_1, demo_10: numeric order) and a broken one (demo_2). Demos 0 and 1
    carry an instruction in `ep_meta` (as RoboCasa writes it); `problem_info` gives the file one (as LIBERO)."""
    rng = np.random.default_rng(0)
    demos = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        env_kwargs = {"control_freq": control_freq} if control_freq else {}
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": env_kwargs})
        if problem_info is not None:
            data.attrs["problem_info"] = json.dumps({"problem_name": "lift", "language_instruction": problem_info})
        for number, length in ((0, 5), (1, 7), (10, 4), (2, 6)):
            demo = data.create_group(f"demo_{number}")
            if number in (0, 1):
                demo.attrs["ep_meta"] = json.dumps({"layout_id": 3, "lang": f"lift the cube {number}"})
            values = {"robot0_eef_pos": rng.normal(size=(length, 3)),
                      "agentview_image": rng.integers(0, 255, (length, 8, 8, 3), dtype=np.uint8),
                      "actions": rng.normal(size=(length, 7)).astype(np.float32)}
            demo.create_dataset("obs/robot0_eef_pos", data=values["robot0_eef_pos"])
            demo.create_dataset("obs/agentview_image", data=values["agentview_image"])
            demo.create_dataset("actions", data=values["actions"][: length - (number == 2)])  # demo_2: one short
            demo.create_dataset("rewards", data=np.arange(length, dtype=np.float64))
            demo.create_dataset("dones", data=(np.arange(length) == length - 1).astype(np.int64))
            demos[f"demo_{number}"] = values
        f.create_dataset("mask/train", data=np.array([b"demo_0", b"demo_10"]))
        f.create_dataset("mask/valid", data=np.array([b"demo_1"]))
    return demos


def test_robomimic_demos_keep_values_env_args_and_filter_keys(tmp_path):
    demos = write_robomimic(tmp_path / "lift.hdf5")
    summary = convert_source(open_source("robomimic", tmp_path / "lift.hdf5", {}), tmp_path / "out.zarr")
    assert summary["converted"] == 3 and summary["episodes"] == 3 and summary["steps"] == 5 + 7 + 4
    assert summary["dropped"] == [{"episode": "demo_2", "reason": summary["dropped"][0]["reason"]}]
    assert "different lengths" in summary["dropped"][0]["reason"]
    store = EpisodeStore.open(tmp_path / "out.zarr")
    assert store.fps == 20 and store.attrs["env_args"]["env_name"] == "Lift"
    assert store.attrs["splits"] == {"train": [0, 2], "valid": [1]}  # demo_10 is the third episode
    # the env name is no instruction: demo_10 has none; the dropped demo_2 takes no place
    assert store.episode_tasks == ["lift the cube 0", "lift the cube 1", None]
    assert store.attrs["episode_tasks"] == store.episode_tasks
    for index, name in enumerate(["demo_0", "demo_1", "demo_10"]):
        episode = store.episode(index)
        np.testing.assert_allclose(episode["robot0_eef_pos"], demos[name]["robot0_eef_pos"])
        np.testing.assert_array_equal(episode["agentview_image"], demos[name]["agentview_image"])
        np.testing.assert_array_equal(episode["action"], demos[name]["actions"])
        assert episode["done"][-1] == 1 and episode["reward"].tolist() == list(range(len(episode["reward"])))


def test_an_interrupted_conversion_resumes_without_redoing_or_duplicating(tmp_path, monkeypatch):
    write_robomimic(tmp_path / "lift.hdf5")
    saves = []
    real_save = run._save

    def dies_after_the_second_append(store, records, tasks):
        saves.append(len(records))
        if len(saves) == 2:  # the second episode is in the store but not yet in its record
            raise KeyboardInterrupt
        real_save(store, records, tasks)

    monkeypatch.setattr(run, "_save", dies_after_the_second_append)
    with pytest.raises(KeyboardInterrupt):
        convert_source(open_source("robomimic", tmp_path / "lift.hdf5", {}), tmp_path / "out.zarr")
    monkeypatch.setattr(run, "_save", real_save)
    interrupted = EpisodeStore.open(tmp_path / "out.zarr")
    assert interrupted.n_episodes == 2 and interrupted.attrs["episode_tasks"] == ["lift the cube 0"]
    assert interrupted.episode_tasks == ["lift the cube 0", None]  # aligned with the episodes, the task not yet kept
    summary = convert_source(open_source("robomimic", tmp_path / "lift.hdf5", {}), tmp_path / "out.zarr")
    assert summary["resumed_past"] == 2 and summary["converted"] == 1 and summary["episodes"] == 3
    again = convert_source(open_source("robomimic", tmp_path / "lift.hdf5", {}), tmp_path / "out.zarr")
    assert again["converted"] == 0 and again["episodes"] == 3
    store = EpisodeStore.open(tmp_path / "out.zarr")
    assert store.episode_lengths.tolist() == [5, 7, 4]
    # the recovered episode's task is read again from the source
    assert store.episode_tasks == store.attrs["episode_tasks"] == ["lift the cube 0", "lift the cube 1", None]


def test_fps_option_is_stored_for_any_format_and_wins_over_the_sources(tmp_path, caplog, capsys):
    write_robomimic(tmp_path / "nofps.hdf5", control_freq=None)
    with caplog.at_level("WARNING"):
        summary = convert_source(open_source("robomimic", tmp_path / "nofps.hdf5", {}), tmp_path / "nofps.zarr")
    assert summary["fps"] is None and EpisodeStore.open(tmp_path / "nofps.zarr").fps is None
    assert any("no fps recorded" in r.message and "fps=HZ" in r.message for r in caplog.records)
    assert main(["dataset", "convert", "--from", "robomimic", str(tmp_path / "nofps.hdf5"), str(tmp_path / "cli.zarr"),
                 "fps=15"]) == 0
    assert EpisodeStore.open(tmp_path / "cli.zarr").attrs["fps"] == 15.0
    capsys.readouterr()
    assert main(["dataset", "info", str(tmp_path / "cli.zarr")]) == 0
    assert "fps 15.0" in capsys.readouterr().out

    write_robomimic(tmp_path / "lift.hdf5")  # records control_freq 20
    caplog.clear()
    with caplog.at_level("WARNING"):
        summary = convert_source(open_source("robomimic", tmp_path / "lift.hdf5", {}), tmp_path / "lift.zarr", fps=10)
    assert summary["fps"] == 10 and EpisodeStore.open(tmp_path / "lift.zarr").fps == 10
    assert any("records 20 fps; storing fps=10 as given" in r.message for r in caplog.records)
    assert not any("no fps recorded" in r.message for r in caplog.records)
    with pytest.raises(ValueError, match="fps=0"):
        convert_source(open_source("robomimic", tmp_path / "lift.hdf5", {}), tmp_path / "zero.zarr", fps=0)


def test_a_file_wide_instruction_names_the_demos_without_their_own(tmp_path):
    write_robomimic(tmp_path / "libero.hdf5", problem_info="put the bowl on the plate")
    convert_source(open_source("robomimic", tmp_path / "libero.hdf5", {}), tmp_path / "out.zarr")
    tasks = EpisodeStore.open(tmp_path / "out.zarr").episode_tasks
    assert tasks == ["lift the cube 0", "lift the cube 1", "put the bowl on the plate"]


def test_bad_sources_and_outputs_are_refused_naming_the_file(tmp_path):
    (tmp_path / "notes.hdf5").write_text("not hdf5")
    with pytest.raises(DataError, match="notes.hdf5.*not a readable HDF5"):
        open_source("robomimic", tmp_path / "notes.hdf5", {})
    with pytest.raises(ValueError, match="takes the options \\['keys'\\], not \\['resize'\\]"):
        open_source("robomimic", tmp_path / "notes.hdf5", {"resize": [8, 8]})
    with pytest.raises(ValueError, match="unknown --from format 'bagfile'.*Known: .*'rosbag', 'video'"):
        open_source("bagfile", tmp_path, {})
    with pytest.raises(DataError, match="meta/info.json"):
        open_source("lerobot", tmp_path, {})
    write_robomimic(tmp_path / "lift.hdf5")
    EpisodeStore.create(tmp_path / "other.zarr")
    with pytest.raises(DataError, match="(?s)was not converted from robomimic.*overwrite=true"):
        convert_source(open_source("robomimic", tmp_path / "lift.hdf5", {}), tmp_path / "other.zarr")


# ---------------------------------------------------------------- LeRobot
def gray_frames(first: int, count: int) -> np.ndarray:
    """Frames whose gray level encodes their index in the video (10 levels apart)."""
    levels = (20 + 10 * np.arange(first, first + count)) % 256
    return np.broadcast_to(levels[:, None, None, None], (count, HEIGHT, WIDTH, 3)).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    write_mp4(frames, path, fps, crf=0, pix_fmt="yuv444p")  # lossless: gray levels survive


def png(level: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.full((8, 10, 3), level, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def rows(episode: int, first_index: int) -> pa.Table:
    steps = np.arange(LENGTH)
    state = np.stack([steps + 100 * episode, -steps], axis=1).astype(np.float32)
    wrist = [{"bytes": png(int(5 * k)), "path": None} for k in steps]  # an `image` feature: PNG in the parquet
    return pa.table({"observation.images.wrist": pa.array(wrist, type=pa.struct([("bytes", pa.binary()),
                                                                               ("path", pa.string())])),
                     "observation.state": pa.array(list(state), type=pa.list_(pa.float32())),
                     "action": pa.array(list(state + 0.5), type=pa.list_(pa.float32())),
                     "timestamp": pa.array(steps / FPS, type=pa.float32()),
                     "frame_index": pa.array(steps, type=pa.int64()),
                     "episode_index": pa.array(np.full(LENGTH, episode), type=pa.int64()),
                     "index": pa.array(first_index + steps, type=pa.int64()),
                     "task_index": pa.array(np.zeros(LENGTH), type=pa.int64())})


FEATURES = {"observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
            "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
            "observation.images.front": {"dtype": "video", "shape": [HEIGHT, WIDTH, 3],
                                         "names": ["height", "width", "channels"]},
            "observation.images.wrist": {"dtype": "image", "shape": [8, 10, 3], "names": ["height", "width", "channels"]},
            **{k: {"dtype": "int64", "shape": [1], "names": None}
               for k in ("frame_index", "episode_index", "index", "task_index")},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None}}


TASKS = ["push the T into its outline", "push the T to the left"]


def write_lerobot_v21(root: Path) -> None:
    """Three episodes; the video of episode 2 stops after 8 of its 12 frames."""
    info = {"codebase_version": "v2.1", "robot_type": "test", "fps": FPS, "chunks_size": 1000,
            "total_episodes": 3, "splits": {"train": "0:2", "val": "2:3"}, "features": FEATURES,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "episodes.jsonl").write_text(
        "".join(json.dumps({"episode_index": e, "tasks": [TASKS[e % 2]], "length": LENGTH}) + "\n" for e in range(3)))
    (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": task}) + "\n"
                                                       for i, task in enumerate(TASKS)))
    for episode in range(3):
        (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(rows(episode, LENGTH * episode), root / f"data/chunk-000/episode_{episode:06d}.parquet")
        frames = gray_frames(0, 8 if episode == 2 else LENGTH)
        write_video(root / f"videos/chunk-000/observation.images.front/episode_{episode:06d}.mp4", frames)


def write_lerobot_v30(root: Path) -> None:
    """Two episodes sharing one data file and one video file; a third whose video file is missing."""
    info = {"codebase_version": "v3.0", "robot_type": "test", "fps": FPS, "chunks_size": 1000,
            "total_episodes": 3, "features": FEATURES,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    pq.write_table(pa.concat_tables([rows(e, LENGTH * e) for e in range(3)]), root / "data/chunk-000/file-000.parquet")
    write_video(root / "videos/observation.images.front/chunk-000/file-000.mp4", gray_frames(0, 2 * LENGTH))
    key = "videos/observation.images.front"
    pq.write_table(pa.table({"task_index": range(len(TASKS)), "task": TASKS}), root / "meta/tasks.parquet")
    episodes = [{"episode_index": e, "tasks": [TASKS[e % 2]], "length": LENGTH, "data/chunk_index": 0,
                 "data/file_index": 0, "dataset_from_index": LENGTH * e, "dataset_to_index": LENGTH * (e + 1),
                 f"{key}/chunk_index": 0, f"{key}/file_index": e // 2,
                 f"{key}/from_timestamp": (e % 2) * LENGTH / FPS, f"{key}/to_timestamp": (e % 2 + 1) * LENGTH / FPS}
                for e in range(3)]
    pq.write_table(pa.Table.from_pylist(episodes), root / "meta/episodes/chunk-000/file-000.parquet")


def assert_episode(store: EpisodeStore, index: int, episode: int, first_frame: int, shape=(HEIGHT, WIDTH)) -> None:
    values = store.episode(index)
    np.testing.assert_array_equal(values["observation.state"][:, 0], np.arange(LENGTH) + 100 * episode)
    np.testing.assert_array_equal(values["action"][:, 1], -np.arange(LENGTH) + 0.5)
    frames = values["observation.images.front"]
    assert frames.shape == (LENGTH, *shape, 3) and frames.dtype == np.uint8
    expected = gray_frames(first_frame, LENGTH)[:, 0, 0, 0].astype(float)
    np.testing.assert_allclose(frames.reshape(LENGTH, -1).mean(axis=1), expected, atol=2.0)  # lossless-ish x264
    wrist = values["observation.images.wrist"]
    assert wrist.shape[0] == LENGTH and wrist.dtype == np.uint8
    np.testing.assert_array_equal(wrist[:, 0, 0, 0], 5 * np.arange(LENGTH))
    stamps = store.timestamps("observation.images.front")[store.episode_slice(index)]
    np.testing.assert_allclose(stamps, np.arange(LENGTH) / FPS, atol=1e-6)


def test_lerobot_v21_episodes_convert_and_a_short_video_is_reported(tmp_path, capsys):
    write_lerobot_v21(tmp_path / "v21")
    assert main(["dataset", "convert", "--from", "lerobot", str(tmp_path / "v21"), str(tmp_path / "out.zarr")]) == 0
    store = EpisodeStore.open(tmp_path / "out.zarr")
    assert store.n_episodes == 2 and store.fps == FPS
    for episode in range(2):
        assert_episode(store, episode, episode, first_frame=0)
    record = store.attrs["converted_from"]["episodes"]
    assert record[2]["index"] is None and "shorter than its rows" in record[2]["dropped"]
    assert store.attrs["splits"] == {"train": [0, 1], "val": []}
    assert store.attrs["lerobot"]["codebase_version"] == "v2.1"
    assert store.episode_tasks == TASKS  # per episode from meta/episodes.jsonl; episode 2 was dropped
    assert main(["dataset", "info", str(tmp_path / "out.zarr")]) == 0
    assert "tasks 2 distinct, named for 2 of 2 episodes" in capsys.readouterr().out


def test_truncated_parquet_and_video_files_drop_their_episodes_with_the_reason(tmp_path):
    write_lerobot_v21(tmp_path / "v21")
    parquet = tmp_path / "v21/data/chunk-000/episode_000000.parquet"
    parquet.write_bytes(parquet.read_bytes()[:200])
    video = tmp_path / "v21/videos/chunk-000/observation.images.front/episode_000001.mp4"
    video.write_bytes(video.read_bytes()[:300])
    with pytest.raises(DataError) as raised:  # no episode left: an error listing every episode's reason
        convert_source(open_source("lerobot", tmp_path / "v21", {}), tmp_path / "out.zarr")
    reasons = dict(line.strip().split(": ", 1) for line in raised.value.problem.splitlines()[1:])
    assert set(reasons) == {"0", "1", "2"}
    assert "episode_000000.parquet cannot be read" in reasons["0"]
    assert "episode_000001.mp4" in reasons["1"] and "shorter than its rows" in reasons["2"]
    assert "was removed" in raised.value.fix and not (tmp_path / "out.zarr").exists()


def test_lerobot_v30_episodes_are_cut_from_shared_files_at_their_offsets(tmp_path):
    write_lerobot_v30(tmp_path / "v30")
    summary = convert_source(open_source("lerobot", tmp_path / "v30", {"resize": [16, 24]}), tmp_path / "out.zarr")
    assert summary["episodes"] == 2 and "file-001.mp4 is missing" in summary["dropped"][0]["reason"]
    store = EpisodeStore.open(tmp_path / "out.zarr")
    assert_episode(store, 0, 0, first_frame=0, shape=(16, 24))
    assert_episode(store, 1, 1, first_frame=LENGTH, shape=(16, 24))  # frames 12..23 of the shared video
    assert store.episode_tasks == TASKS  # from the episodes' `tasks` in meta/episodes/*/*.parquet


# ---------------------------------------------------------------- raw video + poses
def write_raw_video(root: Path) -> None:
    """Episode "a": 60 frames at 30 fps (gray level 4 x frame) and a CSV of poses every 10 ms over
    0.1-1.9 s: x = t, yaw = t rad, width = 0.05 t. Episode "b": an NPZ with recorded actions. "c": no poses."""
    frames = np.broadcast_to((4 * np.arange(60))[:, None, None, None], (60, HEIGHT, WIDTH, 3)).astype(np.uint8)
    for name in ("a", "b", "c"):
        write_video(root / f"{name}.mp4", frames, fps=30)
    t = np.round(np.arange(0.1, 1.9001, 0.01), 6)
    quat = np.stack([np.zeros_like(t), np.zeros_like(t), np.sin(t / 2), np.cos(t / 2)], axis=1)
    header = "timestamp,x,y,z,qx,qy,qz,qw,gripper_width\n"
    lines = [",".join(str(v) for v in (ti, ti, 0.0, 1.0, *q, 0.05 * ti)) for ti, q in zip(t, quat, strict=True)]
    (root / "a.csv").write_text(header + "\n".join(lines) + "\n")
    pose = np.concatenate([np.stack([t, 0 * t, 0 * t + 1], axis=1), quat], axis=1)
    np.savez(root / "b.npz", timestamp=t, pose=pose, gripper_width=0.05 * t, action=np.stack([t, -t] * 5, axis=1))


def test_raw_videos_sample_frames_and_interpolated_poses_at_the_target_rate(tmp_path):
    write_raw_video(tmp_path / "videos")
    summary = convert_source(open_source("video", tmp_path / "videos", {"rate": 10}), tmp_path / "abs.zarr")
    assert summary["episodes"] == 2 and "no c.csv or c.npz" in summary["dropped"][0]["reason"]
    store = EpisodeStore.open(tmp_path / "abs.zarr")
    a, b = store.episode(0), store.episode(1)
    ticks = np.round(np.arange(0.1, 1.9001, 0.1), 6)
    np.testing.assert_allclose(store.timestamps("image")[store.episode_slice(0)], ticks, atol=1e-9)
    # the frame shown at each tick: frame round(30 t), gray level 4x its index
    np.testing.assert_allclose(a["image"].reshape(len(ticks), -1).mean(axis=1), 4 * np.round(30 * ticks), atol=2)
    np.testing.assert_allclose(a["eef_pos"][:, 0], ticks, atol=1e-6)
    np.testing.assert_allclose(a["eef_rot6d"][:, :3], np.stack([np.cos(ticks), np.sin(ticks), 0 * ticks], 1), atol=1e-6)
    np.testing.assert_allclose(a["gripper_width"][:, 0], 0.05 * ticks, atol=1e-7)
    following = np.append(ticks[1:], ticks[-1])  # absolute actions: the next tick's pose and width
    np.testing.assert_allclose(a["action"][:, 0], following, atol=1e-6)
    np.testing.assert_allclose(a["action"][:, 9], 0.05 * following, atol=1e-7)
    np.testing.assert_allclose(b["action"], np.stack([ticks, -ticks] * 5, axis=1), atol=1e-6)  # recorded actions

    relative = convert_source(open_source("video", tmp_path / "videos", {"rate": 10, "actions": "relative"}),
                              tmp_path / "rel.zarr")
    action = EpisodeStore.open(tmp_path / "rel.zarr").episode(0)["action"][:-1]
    # 10 cm along x in the world, seen from a frame turned by yaw t; then 0.1 rad more yaw
    np.testing.assert_allclose(action[:, :3], np.stack([0.1 * np.cos(ticks[:-1]), -0.1 * np.sin(ticks[:-1]),
                                                        0 * ticks[:-1]], 1), atol=1e-5)
    np.testing.assert_allclose(action[:, 3:9], np.tile([np.cos(0.1), np.sin(0.1), 0, -np.sin(0.1), np.cos(0.1), 0],
                                                       (len(action), 1)), atol=1e-5)
    assert relative["episodes"] == 2


def test_an_episode_that_does_not_fit_the_store_is_dropped_not_fatal(tmp_path):
    write_raw_video(tmp_path / "videos")
    pose_file = tmp_path / "videos" / "b.npz"
    with np.load(pose_file) as npz:
        values = dict(npz)
    np.savez(pose_file, **{**values, "action": values["action"][:, :2]})  # 2 action dims where "a" has 10
    summary = convert_source(open_source("video", tmp_path / "videos", {}), tmp_path / "out.zarr")
    assert summary["episodes"] == 1
    assert [d["episode"] for d in summary["dropped"]] == ["b", "c"]
    assert "rows of shape (2,), store has (10,)" in summary["dropped"][0]["reason"]


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_image_keys_are_written_with_the_chosen_codec(tmp_path, zarr_format):
    from robopolicy.datasets.zarr_io import describe_codec

    rng = np.random.default_rng(0)
    frames = np.zeros((6, 32, 48, 3), np.uint8)
    frames[:, 8:24, 8:40] = rng.integers(0, 255, (6, 16, 32, 3))
    errors = {}
    for codec, quality in (("blosc", None), ("none", None), ("jpegxl", None), ("jpegxl", 80), ("jpeg", 80)):
        path = tmp_path / f"{codec}{quality}.zarr"
        store = EpisodeStore.create(path, zarr_format=zarr_format, image_codec=codec, image_quality=quality)
        store.append_episode({"img": frames, "state": np.zeros((6, 2), np.float32)})
        reopened = EpisodeStore.open(path)
        errors[codec, quality] = np.abs(reopened.read("img").astype(int) - frames).mean()
        assert "jpeg" not in describe_codec(reopened["state"])  # low-dim keys keep blosc
        if codec.startswith("jpeg"):
            assert codec in describe_codec(reopened["img"])
    assert errors["blosc", None] == errors["none", None] == errors["jpegxl", None] == 0  # lossless
    assert 0 < errors["jpegxl", 80] < 20 and 0 < errors["jpeg", 80] < 20
    with pytest.raises(ValueError, match="image_codec must be one of"):
        EpisodeStore.create(tmp_path / "bad.zarr", image_codec="png")


def test_frames_from_lossy_video_are_stored_as_jpeg_unless_a_codec_is_named(tmp_path):
    from robopolicy.datasets.zarr_io import describe_codec

    write_raw_video(tmp_path / "videos")
    runs = {"default": {}, "blosc": {"image_codec": "blosc"}, "q95": {"image_quality": 95}}
    for name, options in runs.items():
        convert_source(open_source("video", tmp_path / "videos", {"rate": 10}), tmp_path / f"{name}.zarr", **options)
    default = EpisodeStore.open(tmp_path / "default.zarr")
    assert "jpeg-q90" in describe_codec(default["image"]) and "jpeg" not in describe_codec(default["eef_pos"])
    assert default.attrs["image_codec"] == {"codec": "jpeg", "quality": 90}
    assert "jpeg" not in describe_codec(EpisodeStore.open(tmp_path / "blosc.zarr")["image"])  # the user's wins
    assert "jpeg-q95" in describe_codec(EpisodeStore.open(tmp_path / "q95.zarr")["image"])

    # LeRobot: PNG `image` features are lossless, so a dataset with them stays lossless; videos alone take jpeg
    write_lerobot_v21(tmp_path / "v21")
    convert_source(open_source("lerobot", tmp_path / "v21", {}), tmp_path / "mixed.zarr")
    assert "jpeg" not in describe_codec(EpisodeStore.open(tmp_path / "mixed.zarr")["observation.images.front"])
    info = json.loads((tmp_path / "v21/meta/info.json").read_text())
    del info["features"]["observation.images.wrist"]
    (tmp_path / "v21/meta/info.json").write_text(json.dumps(info))
    convert_source(open_source("lerobot", tmp_path / "v21", {}), tmp_path / "videos_only.zarr")
    store = EpisodeStore.open(tmp_path / "videos_only.zarr")
    assert "jpeg-q90" in describe_codec(store["observation.images.front"])
    levels = store.episode(0)["observation.images.front"].reshape(LENGTH, -1).mean(axis=1)
    np.testing.assert_allclose(levels, gray_frames(0, LENGTH)[:, 0, 0, 0], atol=2.0)


def test_stores_merge_into_one_keeping_values_timestamps_and_tasks(tmp_path):
    for name, task, value in (("b_close.zarr", "close the drawer", 1.0), ("a_open.zarr", None, 2.0)):
        store = EpisodeStore.create(tmp_path / "stores" / name, attrs={"fps": 10.0})
        for length in (3, 4):
            store.append_episode({"state": np.full((length, 2), value, np.float32),
                                  "action": np.arange(length, dtype=np.float32)[:, None]},
                                 timestamps={"state": np.arange(length) / 10.0})
        if task:
            store.update_attrs({"episode_tasks": [task, task]})
        store.close()
    source = open_source("zarr", tmp_path / "stores", {"task": "open the drawer"})
    summary = convert_source(source, tmp_path / "merged.zarr")
    assert summary["episodes"] == 4 and summary["fps"] == 10.0
    merged = EpisodeStore.open(tmp_path / "merged.zarr")
    # name order: a_open (no tasks of its own: task= names them), then b_close (its own)
    assert merged.episode_tasks == ["open the drawer"] * 2 + ["close the drawer"] * 2
    assert merged.read("state")[:, 0].tolist() == [2.0] * 7 + [1.0] * 7
    assert merged.episode_lengths.tolist() == [3, 4, 3, 4]
    np.testing.assert_allclose(merged.timestamps("state")[7:10], [0.0, 0.1, 0.2])
    assert convert_source(open_source("zarr", tmp_path / "stores", {}), tmp_path / "merged.zarr")["converted"] == 0
    with pytest.raises(DataError, match="lies inside the source"):  # it would read its own output when resumed
        convert_source(open_source("zarr", tmp_path / "stores", {}), tmp_path / "stores" / "all.zarr")


def test_stores_of_different_rates_are_not_merged(tmp_path):
    for name, fps in (("a.zarr", 10.0), ("b.zarr", 30.0)):
        store = EpisodeStore.create(tmp_path / name, attrs={"fps": fps})
        store.append_episode({"action": np.zeros((2, 1), np.float32)})
        store.close()
    with pytest.raises(DataError, match="different rates"):
        open_source("zarr", tmp_path, {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds none"):
        open_source("zarr", tmp_path / "empty", {})
