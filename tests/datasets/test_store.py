"""Episode store: reading Diffusion Policy's v2 store, writing v3/v2, zip, fsspec, codecs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.store import EpisodeStore
from tests.conftest import synthetic_episode


def test_reads_diffusion_policy_pusht_store(pusht):
    assert pusht.zarr_format == 2
    assert pusht.keys == ["action", "img", "keypoint", "n_contacts", "state"]
    assert pusht.n_episodes == 206 and pusht.n_steps == 25650
    assert pusht.episode_ends[:3].tolist() == [161, 279, 420]
    lengths = pusht.episode_lengths
    assert (lengths.min(), np.median(lengths), lengths.max()) == (49, 122, 246)
    assert pusht["img"].shape == (25650, 96, 96, 3) and pusht["img"].dtype == np.float32
    episode = pusht.episode(1, ["action", "state"])
    assert episode["action"].shape == (118, 2)
    np.testing.assert_array_equal(episode["state"], np.asarray(pusht["state"][161:279]))


def test_load_turns_float_frames_into_identical_uint8(pusht, pusht_memory):
    assert pusht_memory.is_in_memory and pusht_memory["img"].dtype == np.uint8
    rows = slice(20000, 20300)
    np.testing.assert_array_equal(pusht_memory["img"][rows].astype(np.float32), np.asarray(pusht["img"][rows]))
    np.testing.assert_array_equal(pusht_memory["action"], pusht.read("action"))


def test_load_keeps_float_frames_that_are_not_whole_numbers(tmp_path):
    store = EpisodeStore.create(tmp_path / "f.zarr")
    frames = np.full((5, 16, 16, 3), 0.5, np.float32)
    store.append_episode({"img": frames, "action": np.zeros((5, 2), np.float32)})
    loaded = store.load()
    assert loaded["img"].dtype == np.float32 and float(loaded["img"].max()) == 0.5
    store.append_episode({"img": np.full((2, 16, 16, 3), 7.0, np.float32), "action": np.zeros((2, 2), np.float32)})
    assert store.load(["img"], images_as_uint8=False)["img"].dtype == np.float32


def test_v3_store_appends_and_shards_image_chunks(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr")
    lengths = [30, 7, 51]
    for index, length in enumerate(lengths):
        assert store.append_episode(synthetic_episode(index, length)) == index
    reopened = EpisodeStore.open(tmp_path / "s.zarr")
    assert reopened.zarr_format == 3
    assert reopened.episode_ends.tolist() == [30, 37, 88]
    for index, length in enumerate(lengths):
        expected = synthetic_episode(index, length)
        got = reopened.episode(index)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    image = reopened["img"]
    assert image.chunks == (1, 16, 16, 3) and image.shards == (256, 16, 16, 3)
    chunk_files = [p for p in (tmp_path / "s.zarr" / "data" / "img").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(chunk_files) == 1, "88 frames should live in one shard file, not one file per frame"


def test_v2_writer_is_plain_zarr_v2(tmp_path):
    store = EpisodeStore.create(tmp_path / "v2.zarr", zarr_format=2)
    store.append_episode(synthetic_episode(0, 12))
    store.append_episode(synthetic_episode(1, 5))
    meta = json.loads((tmp_path / "v2.zarr" / "meta" / "episode_ends" / ".zarray").read_text())
    assert meta["zarr_format"] == 2 and meta["dtype"] == "<i8"
    raw = zarr.open_group(str(tmp_path / "v2.zarr"), mode="r")
    assert raw["meta/episode_ends"][:].tolist() == [12, 17]
    np.testing.assert_array_equal(raw["data/state"][12:], synthetic_episode(1, 5)["state"])


def test_round_trip_v2_to_ours_to_v2_keeps_every_value(pusht, tmp_path):
    keys = ["action", "keypoint", "n_contacts", "state"]
    ours = pusht.copy_to(tmp_path / "ours.zarr", keys=keys)
    back = ours.copy_to(tmp_path / "back.zarr", zarr_format=2)
    assert (ours.zarr_format, back.zarr_format) == (3, 2)
    assert back.episode_ends.tolist() == pusht.episode_ends.tolist()
    for key in keys:
        original = pusht.read(key)
        assert back[key].dtype == original.dtype
        np.testing.assert_array_equal(back.read(key), original)


@pytest.mark.slow
def test_round_trip_of_the_image_key(pusht, tmp_path):
    ours = pusht.copy_to(tmp_path / "ours.zarr", keys=["img"])
    back = ours.copy_to(tmp_path / "back.zarr", zarr_format=2)
    for start in range(0, pusht.n_steps, 5000):
        np.testing.assert_array_equal(back.read("img", start, start + 5000), pusht.read("img", start, start + 5000))


def _write_v2_zip(path: Path, compressor, frames: np.ndarray) -> None:
    """A UMI-style .zarr.zip: v2 group written into a zip file."""
    zip_store = zarr.storage.ZipStore(str(path), mode="w")
    group = zarr.open_group(zip_store, mode="w", zarr_format=2)
    group.create_array("data/rgb", shape=frames.shape, chunks=(1, *frames.shape[1:]), dtype="uint8",
                       compressors=compressor)[:] = frames
    group.create_array("data/action", shape=(len(frames), 3), dtype="f4")[:] = np.arange(len(frames) * 3).reshape(-1, 3)
    group.create_array("meta/episode_ends", shape=(2,), dtype="i8")[:] = [4, len(frames)]
    zip_store.close()


def test_reads_zip_store(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (10, 24, 32, 3), dtype=np.uint8)
    _write_v2_zip(tmp_path / "demo.zarr.zip", numcodecs.Blosc("lz4", 3), frames)
    assert zipfile.is_zipfile(tmp_path / "demo.zarr.zip")
    store = EpisodeStore.open(tmp_path / "demo.zarr.zip")
    assert store.episode_lengths.tolist() == [4, 6]
    np.testing.assert_array_equal(store.read("rgb"), frames)
    assert store.load()["action"][-1].tolist() == [27.0, 28.0, 29.0]


@pytest.mark.parametrize("codec_name", ["Jpegxl", "Jpeg2k"])
def test_reads_image_codec_stores(tmp_path, codec_name):
    pytest.importorskip("imagecodecs", reason="image codecs are the optional 'codecs' extra")
    import imagecodecs.numcodecs as image_codecs

    codec_class = getattr(image_codecs, codec_name)
    codec = codec_class(level=100, lossless=True) if codec_name == "Jpegxl" else codec_class(level=0, reversible=True)
    ramp = np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) % 251
    frames = np.stack([np.stack([ramp + i, ramp * 2 % 256, ramp], -1) for i in range(10)]).astype(np.uint8)
    _write_v2_zip(tmp_path / "codec.zarr.zip", codec, frames)
    store = EpisodeStore.open(tmp_path / "codec.zarr.zip")
    np.testing.assert_array_equal(store.read("rgb"), frames)


def test_fsspec_memory_and_file_urls(tmp_path):
    url = "memory://robopolicy-test/store.zarr"
    store = EpisodeStore.create(url)
    store.append_episode(synthetic_episode(0, 9))
    store.append_episode(synthetic_episode(1, 3))
    reopened = EpisodeStore.open(url)
    assert reopened.episode_ends.tolist() == [9, 12]
    np.testing.assert_array_equal(reopened.episode(1)["action"], synthetic_episode(1, 3)["action"])

    local = EpisodeStore.create(tmp_path / "f.zarr")
    local.append_episode(synthetic_episode(3, 4))
    via_url = EpisodeStore.open(f"file://{tmp_path / 'f.zarr'}", load=True)
    assert via_url.is_in_memory and via_url["state"][:, 1].tolist() == [3000.0, 3001.0, 3002.0, 3003.0]


def test_timestamps_and_fps(tmp_path):
    store = EpisodeStore.create(tmp_path / "t.zarr")
    store.append_episode(synthetic_episode(0, 5), timestamps={"img": np.arange(5) / 30.0})
    reopened = EpisodeStore.open(tmp_path / "t.zarr")
    assert reopened.fps == pytest.approx(30.0)
    np.testing.assert_allclose(reopened.timestamps("img")[:], np.arange(5) / 30.0)
    assert reopened.timestamps("action") is None
    with_attr = EpisodeStore.create(tmp_path / "a.zarr", attrs={"fps": 10})
    assert EpisodeStore.open(with_attr.path).fps == 10.0


def test_in_memory_store_appends(tmp_path):
    store = EpisodeStore.from_arrays(synthetic_episode(0, 4), np.array([4]))
    store.append_episode(synthetic_episode(1, 2))
    assert store.episode_ends.tolist() == [4, 6]
    assert store["action"][4:, 0].tolist() == [1.0, 1.0]
    disk = store.copy_to(tmp_path / "c.zarr")
    np.testing.assert_array_equal(disk.read("img"), store["img"])


def test_create_never_replaces_what_it_should_not(tmp_path):
    EpisodeStore.create(tmp_path / "s.zarr").append_episode(synthetic_episode(0, 3))
    with pytest.raises(DataError, match="already exists"):
        EpisodeStore.create(tmp_path / "s.zarr")
    assert EpisodeStore.open(tmp_path / "s.zarr").n_episodes == 1
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a zarr store; refusing to delete it"):
        EpisodeStore.create(tmp_path / "runs", overwrite=True)
    assert (tmp_path / "runs" / "notes.txt").read_text() == "keep me"
    assert EpisodeStore.create(tmp_path / "s.zarr", overwrite=True).n_episodes == 0
    url = "memory://robopolicy-test/exists.zarr"
    EpisodeStore.create(url).append_episode(synthetic_episode(0, 3))
    with pytest.raises(DataError, match="already exists"):
        EpisodeStore.create(url)
    assert EpisodeStore.open(url).n_episodes == 1


def test_copy_onto_itself_is_refused(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr")
    store.append_episode(synthetic_episode(0, 3))
    with pytest.raises(DataError, match="onto itself"):
        store.copy_to(tmp_path / "s.zarr", overwrite=True)
    np.testing.assert_array_equal(EpisodeStore.open(tmp_path / "s.zarr").read("state"), synthetic_episode(0, 3)["state"])


def test_timestamps_must_be_given_for_the_same_keys_every_episode(tmp_path):
    store = EpisodeStore.create(tmp_path / "t.zarr")
    store.append_episode(synthetic_episode(0, 3), timestamps={"img": np.arange(3.0)})
    with pytest.raises(DataError, match=r"timestamps given for \[\], earlier episodes have them for \['img'\]"):
        store.append_episode(synthetic_episode(1, 3))
    memory = EpisodeStore.from_arrays(synthetic_episode(0, 3), np.array([3]))
    with pytest.raises(DataError, match="timestamps given for"):
        memory.append_episode(synthetic_episode(1, 2), timestamps={"img": np.arange(2.0)})
    group = zarr.open_group(str(tmp_path / "t.zarr"), mode="a")
    group["timestamps/img"].resize((2,))
    with pytest.raises(DataError, match="different lengths.*'timestamps/img': 2"):
        EpisodeStore.open(tmp_path / "t.zarr")


def test_unknown_codec_names_the_key_and_the_fix(tmp_path):
    store = EpisodeStore.create(tmp_path / "c.zarr", zarr_format=2)
    store.append_episode(synthetic_episode(0, 3))
    meta_path = tmp_path / "c.zarr" / "data" / "img" / ".zarray"
    meta = json.loads(meta_path.read_text())
    meta["compressor"] = {"id": "imagecodecs_not_installed_here"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"\[data/img\]: compressed with a codec that is not installed(.|\n)*pip install"):
        EpisodeStore.open(tmp_path / "c.zarr")


def test_reading_is_confined_to_committed_rows(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr")
    store.append_episode(synthetic_episode(0, 4))
    assert store.read("state", 2, 99).shape == (2, 3)
    with pytest.raises(ValueError, match="in-memory copy"):
        EpisodeStore.open(tmp_path / "s.zarr", mode="a", load=True)
