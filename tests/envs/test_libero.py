"""LIBERO offline: the four suites build with their official init states, and a policy trained on a LIBERO-format
LeRobot dataset (written here, as LeRobot's LIBERO datasets are laid out) is evaluated through the evaluator,
one task or a whole suite, each task told its own instruction."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from robopolicy.envs.registry import env_instruction, make_env
from tests.cli.test_own_demos import TINY, run_cli
from tests.needs import require

require("sim")
require("libero")
pytestmark = pytest.mark.sim
SIZE, LENGTH = 32, 12
GOAL = {"name": "libero", "suite": "libero_goal", "image_size": SIZE}


SUITES = ["libero_spatial", "libero_object", "libero_goal", "libero_10"]
BASE_HEIGHTS = (0.912, 0.0, 0.42)  # the robot base on its mount (table scenes), on the floor, in the living room
REST_M = 0.005  # objects at rest move less than this in 20 held steps


def objects_rest_after_the_wait(suite: str, task_id: int) -> tuple[float, float]:
    """(largest object motion over 20 held steps after reset's wait, robot base height) of one task."""
    env = make_env({"name": "libero", "suite": suite, "task_id": task_id, "image_size": SIZE})
    try:
        obs, info = env.reset(seed=51)  # init state 1 of 50
        assert obs["observation.images.image"].shape == (SIZE, SIZE, 3) and obs["observation.state"].shape == (8,)
        assert info == {"is_success": False, "score": 0.0}
        sim = env.sim_env.env.sim
        bodies = list(env.sim_env.env.obj_body_id.values())
        before = sim.data.body_xpos[bodies].copy()
        for _ in range(20):
            env.step(env.hold_action(obs, None))
        moved = float(np.linalg.norm(sim.data.body_xpos[bodies] - before, axis=1).max())
        return moved, float(sim.data.body_xpos[sim.model.body_name2id("robot0_base")][2])
    finally:
        env.close()


@pytest.mark.parametrize("suite", SUITES)
def test_each_suite_builds_and_its_objects_rest_once_dropped(suite, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    moved, base = objects_rest_after_the_wait(suite, 0)
    assert moved < REST_M, f"{suite} task 0: an object still moves {1000 * moved:.1f} mm after the wait"
    assert min(abs(base - h) for h in BASE_HEIGHTS) < 1e-3, f"robot base at z {base:.3f}"
    assert env_instruction({"name": "libero", "suite": suite, "task_id": 0})


@pytest.mark.slow
@pytest.mark.parametrize("suite", SUITES)
def test_every_task_of_every_suite_rests_once_dropped(suite, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    motion = {task_id: objects_rest_after_the_wait(suite, task_id)[0] for task_id in range(10)}
    moving = {task_id: moved for task_id, moved in motion.items() if moved >= REST_M}
    assert not moving, f"{suite}: objects still moving after the wait (task: metres) {moving}"


def png(frame: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def write_libero_lerobot(root: Path, tasks: list[str], episodes: int = 4) -> None:
    """A LeRobot v2.1 dataset with LIBERO's features (two PNG cameras, 8-D state, 7-D action, 10 fps)."""
    features = {"observation.images.image": {"dtype": "image", "shape": [SIZE, SIZE, 3], "names": None},
                "observation.images.wrist_image": {"dtype": "image", "shape": [SIZE, SIZE, 3], "names": None},
                "observation.state": {"dtype": "float32", "shape": [8], "names": None},
                "action": {"dtype": "float32", "shape": [7], "names": None},
                **{k: {"dtype": "int64", "shape": [1], "names": None}
                   for k in ("frame_index", "episode_index", "index", "task_index")},
                "timestamp": {"dtype": "float32", "shape": [1], "names": None}}
    info = {"codebase_version": "v2.1", "robot_type": "panda", "fps": 10, "chunks_size": 1000,
            "total_episodes": episodes, "features": features,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"}
    (root / "meta").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                                       for i, t in enumerate(tasks)))
    (root / "meta" / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "tasks": [tasks[e % len(tasks)]], "length": LENGTH}) + "\n"
        for e in range(episodes)))
    rng = np.random.default_rng(0)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for e in range(episodes):
        steps = np.arange(LENGTH)
        frames = rng.integers(0, 255, (2, LENGTH, SIZE, SIZE, 3), dtype=np.uint8)
        state = rng.normal(size=(LENGTH, 8)).astype(np.float32)
        action = np.clip(rng.normal(scale=0.3, size=(LENGTH, 7)), -1, 1).astype(np.float32)
        pq.write_table(pa.table({
            "observation.images.image": pa.array([png(f) for f in frames[0]], type=image_type),
            "observation.images.wrist_image": pa.array([png(f) for f in frames[1]], type=image_type),
            "observation.state": pa.array(list(state), type=pa.list_(pa.float32())),
            "action": pa.array(list(action), type=pa.list_(pa.float32())),
            "timestamp": pa.array(steps / 10, type=pa.float32()),
            "frame_index": pa.array(steps, type=pa.int64()), "episode_index": pa.array(np.full(LENGTH, e)),
            "index": pa.array(e * LENGTH + steps, type=pa.int64()),
            "task_index": pa.array(np.full(LENGTH, e % len(tasks)), type=pa.int64())}),
            root / f"data/chunk-000/episode_{e:06d}.parquet")


@pytest.mark.slow
def test_a_policy_trained_on_a_libero_lerobot_dataset_is_evaluated_on_the_four_suites(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    tasks = [env_instruction({**GOAL, "task_id": i}) for i in (0, 1)]
    write_libero_lerobot(tmp_path / "libero_lerobot", tasks)
    store = tmp_path / "libero.zarr"
    run_cli(capsys, "dataset", "convert", "--from", "lerobot", str(tmp_path / "libero_lerobot"), str(store))
    run_dir = tmp_path / "run"
    small = ["policy.settings.horizon=8", "policy.settings.n_action_steps=4", "encoder.image.crop_shape=[28,28]",
             "encoder.image.pool=avg"]
    run_cli(capsys, "train", f"data={store}", f"run_dir={run_dir}", *TINY, *small,
            f"task.env={{name: libero, suite: libero_goal, task_id: 1, image_size: {SIZE}}}")
    checkpoint = str(run_dir / "checkpoints" / "last")
    one = run_cli(capsys, "eval", checkpoint, "n_episodes=1", "n_envs=1", "n_videos=0", "env.max_steps=4",
                  f"out={tmp_path / 'one'}")
    assert one["instruction"] == tasks[1] and 0.0 <= one["success_rate"] <= 1.0
    suite = run_cli(capsys, "eval", checkpoint, "suite=libero", "n_episodes=1", "n_envs=1", "n_videos=1",
                    "env.max_steps=4", f"out={tmp_path / 'suite'}")  # the four suites, 40 tasks
    report = json.loads(Path(suite["suite_json"]).read_text())
    assert list(report["tasks"]) == [f"{name}/task_{i}" for name in SUITES for i in range(10)]
    assert report["tasks"]["libero_goal/task_0"]["instruction"] == tasks[0]
    assert all(t["instruction"] == env_instruction({**GOAL, "suite": name.split("/")[0], "task_id": int(name[-1])})
               for name, t in report["tasks"].items())
    assert set(report["suites"]) == set(SUITES) and report["success_rate"] == suite["success_rate"]
    assert all(Path(t["videos"][0]).is_file() for t in report["tasks"].values())  # a video per task
    assert "| libero_10/task_9 |" in Path(suite["suite_md"]).read_text()


def scripted_motion() -> list[np.ndarray]:
    """75 steps of end-effector deltas: +x, +y, +z, back diagonally, then a turn about z; gripper open."""
    legs = [[0.5, 0, 0, 0, 0, 0], [0, 0.5, 0, 0, 0, 0], [0, 0, 0.5, 0, 0, 0], [-0.5, -0.5, -0.5, 0, 0, 0],
            [0, 0, 0, 0, 0, 0.3]]
    return [np.array([*leg, -1.0]) for leg in legs for _ in range(15)]


def grip_path(env, sim) -> np.ndarray:
    """(steps, 3) grip-site displacement from its start while the scripted motion plays."""
    site = sim.model.site_name2id("gripper0_right_grip_site")
    start = sim.data.site_xpos[site].copy()
    path = []
    for action in scripted_motion():
        env.step(action)
        path.append(sim.data.site_xpos[site] - start)
    return np.array(path)


@pytest.mark.slow
def test_the_arm_moves_in_a_libero_scene_as_in_a_plain_robosuite_scene(monkeypatch):
    """The same end-effector deltas move the grip site along the same path in a LIBERO scene (its mounted Panda,
    LIBERO's controller settings) as in robosuite's own Lift scene. Measured: path lengths 0.436 and 0.438 m,
    4.7 mm apart on average and 11 mm at most (the two arms start from different joint configurations)."""
    import robosuite
    from robosuite.controllers import load_composite_controller_config

    monkeypatch.setenv("MUJOCO_GL", "egl")
    env = make_env({**GOAL, "task_id": 0})
    try:
        env.reset(seed=0)
        in_libero = grip_path(env.sim_env, env.sim_env.env.sim)
    finally:
        env.close()
    plain = robosuite.make("Lift", robots="Panda", controller_configs=load_composite_controller_config(robot="Panda"),
                           has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False, control_freq=20)
    try:
        plain.reset()
        in_robosuite = grip_path(plain, plain.sim)
    finally:
        plain.close()
    lengths = [np.linalg.norm(np.diff(p, axis=0), axis=1).sum() for p in (in_libero, in_robosuite)]
    assert abs(lengths[0] - lengths[1]) < 0.02 * lengths[1] and lengths[1] > 0.3, lengths
    apart = np.linalg.norm(in_libero - in_robosuite, axis=1)
    assert apart.max() < 0.02 and apart.mean() < 0.01, (apart.max(), apart.mean())
