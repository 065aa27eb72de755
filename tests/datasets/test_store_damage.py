"""Damaged stores: a missing chunk file is listed by validate and refused by reads (never read as zeros), and a
chunk that cannot be decoded is named by validate --deep and by the read that meets it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from robopolicy.cli import main
from robopolicy.datasets.errors import DataError
from robopolicy.datasets.inspect import validate
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.envs.pusht import PUSHT_IMAGE_SHAPE_META
from tests.conftest import synthetic_episode

EPISODES, LENGTH = 3, 200  # 600 frames: 600 one-frame chunks (v2), 3 shards of 256 frames (v3)
# The file that holds image rows 256..511 (v3: a shard of 256 one-frame chunks) or row 5 (v2: one chunk).
IMAGE_FILE = {2: "data/img/5.0.0.0", 3: "data/img/c/1/0/0/0"}
IMAGE_PIECE = {2: "chunk 5 (rows [5, 6))", 3: "shard 1 (rows [256, 512))"}
IMAGE_ROWS = {2: (0, 10), 3: (250, 300)}


def write_store(path: Path, zarr_format: int) -> Path:
    """A small store of ours with an image key; closed, so that it can be damaged and reopened."""
    with EpisodeStore.create(path, zarr_format=zarr_format) as store:
        for index in range(EPISODES):
            store.append_episode(synthetic_episode(index, LENGTH))
    return path


def pusht_copy(pusht_path: Path, tmp_path: Path) -> Path:
    """A private copy of the shared Push-T store (the shared one is read only)."""
    return Path(shutil.copytree(pusht_path, tmp_path / "pusht.zarr"))


def truncate(path: Path) -> None:
    """Cut a chunk file to half its bytes, as a full disk or an interrupted copy would."""
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def errors(findings: list) -> list[tuple[str, str]]:
    return [(f.key, f.message) for f in findings if f.level == "error"]


def expect_read_error(read, path: Path, key: str, *fragments: str) -> DataError:
    """`read()` raises DataError naming the store, the key and every fragment (and a fix)."""
    with pytest.raises(DataError) as info:
        read()
    error = info.value
    assert error.path == str(path) and error.key == key, str(error)
    for fragment in fragments:
        assert fragment in error.problem, f"{fragment!r} not in {error.problem!r}"
    assert error.fix
    return error


# ---------------------------------------------------------------------------------------- missing chunks
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_missing_image_chunk_is_listed_and_refused(tmp_path, zarr_format, capsys):
    path = write_store(tmp_path / "s.zarr", zarr_format)
    (path / IMAGE_FILE[zarr_format]).unlink()
    store = EpisodeStore.open(path)
    assert errors(validate(store)) == [
        ("data/img", f"{IMAGE_PIECE[zarr_format]} missing: file {IMAGE_FILE[zarr_format]} "
                     "(zarr would read zeros in its place)")]
    start, stop = IMAGE_ROWS[zarr_format]
    expect_read_error(lambda: store.read("img", start, stop), path, "data/img", IMAGE_PIECE[zarr_format],
                      IMAGE_FILE[zarr_format])
    expect_read_error(lambda: store.load(["img"]), path, "data/img", IMAGE_PIECE[zarr_format])
    np.testing.assert_array_equal(store.read("img", 520, 530), synthetic_episode(2, LENGTH)["img"][120:130])
    assert main(["dataset", "validate", str(path)]) == 1
    assert f"error: [data/img] {IMAGE_PIECE[zarr_format]} missing" in capsys.readouterr().out


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_missing_low_dim_chunk_is_refused_not_read_as_zeros(tmp_path, zarr_format):
    path = write_store(tmp_path / "s.zarr", zarr_format)
    (path / ("data/action/0.0" if zarr_format == 2 else "data/action/c/0/0")).unlink()
    store = EpisodeStore.open(path)
    assert [key for key, message in errors(validate(store))] == ["data/action"]
    assert "chunk 0 (rows [0, 600)) missing" in errors(validate(store))[0][1]
    expect_read_error(lambda: store.read("action"), path, "data/action", "chunk 0 (rows [0, 600))")


def test_deleted_pusht_chunks_are_listed_and_refused_in_training_reads(pusht_path, tmp_path):
    path = pusht_copy(pusht_path, tmp_path)
    (path / "data/img/7.0.0.0").unlink()
    dataset = SequenceDataset(EpisodeStore.open(path), PUSHT_IMAGE_SHAPE_META, horizon=16, n_obs_steps=2,
                              n_action_steps=8)
    windows = np.flatnonzero((dataset.sampler.start >= 1127) & (dataset.sampler.start < 1280))
    expect_read_error(lambda: dataset[int(windows[0])], path, "data/img", "chunk 7 (rows [1127, 1288))")
    expect_read_error(lambda: dataset[windows[:4]], path, "data/img", "chunk 7 (rows [1127, 1288))")
    (path / "data/action/3.0").unlink()  # rows 483..643 (161-row chunks): zarr read them as (0, 0)
    store = EpisodeStore.open(path)
    assert errors(validate(store)) == [
        ("data/action", "chunk 3 (rows [483, 644)) missing: file data/action/3.0 (zarr would read zeros in its place)"),
        ("data/img", "chunk 7 (rows [1127, 1288)) missing: file data/img/7.0.0.0 (zarr would read zeros in its place)")]
    expect_read_error(lambda: store.read("action", 400, 500), path, "data/action", "chunk 3 (rows [483, 644))",
                      "data/action/3.0")
    expect_read_error(lambda: SequenceDataset(store, PUSHT_IMAGE_SHAPE_META, horizon=16, n_obs_steps=2,
                                              n_action_steps=8), path, "data/action", "chunk 3 (rows [483, 644))")


def test_a_missing_episode_ends_chunk_fails_the_open(tmp_path):
    path = write_store(tmp_path / "s.zarr", 3)
    (path / "meta/episode_ends/c/0").unlink()
    expect_read_error(lambda: EpisodeStore.open(path), path, "meta/episode_ends", "chunk 0", "missing")


def test_all_zero_chunks_are_written_so_a_missing_file_is_always_damage(tmp_path):
    path = tmp_path / "zeros.zarr"
    with EpisodeStore.create(path, zarr_format=2) as store:
        store.append_episode({"img": np.zeros((3, 16, 16, 3), np.uint8), "gripper": np.zeros((3, 1), np.float32)})
    assert sorted(p.name for p in (path / "data/img").iterdir() if not p.name.startswith(".")) == \
        ["0.0.0.0", "1.0.0.0", "2.0.0.0"]
    assert (path / "data/gripper/0.0").is_file()
    reopened = EpisodeStore.open(path)
    assert validate(reopened, deep=True) == []
    assert not reopened.read("img").any()


# ---------------------------------------------------------------------------------------- damaged chunks
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_truncated_image_chunk_is_found_by_deep_validation_and_named_by_reads(tmp_path, zarr_format, capsys):
    path = write_store(tmp_path / "s.zarr", zarr_format)
    truncate(path / IMAGE_FILE[zarr_format])
    store = EpisodeStore.open(path)
    assert errors(validate(store)) == []  # uint8 frames are not decoded by the cheap checks
    start, stop = IMAGE_ROWS[zarr_format]
    first = 5 if zarr_format == 2 else 256
    named = f"chunk {first} (rows [{first}, {first + 1})" + (")" if zarr_format == 2 else ", shard 1)")
    error = expect_read_error(lambda: store.read("img", start, stop), path, "data/img", named, "cannot be decoded")
    assert isinstance(error.__cause__, (RuntimeError, ValueError))  # the codec's own error, kept as the cause
    deep = errors(validate(store, deep=True))
    assert [key for key, _ in deep] == ["data/img"]
    run = "chunk 5 (rows [5, 6)) " if zarr_format == 2 else "chunks 256-511 (rows [256, 512), shard 1) "
    assert deep[0][1].startswith(run + "cannot be decoded"), deep
    assert main(["dataset", "validate", "--deep", str(path)]) == 1
    assert f"error: [data/img] {run}cannot be decoded" in capsys.readouterr().out


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_corrupted_image_chunk_fails_training_reads_with_a_data_error(tmp_path, zarr_format):
    path = write_store(tmp_path / "s.zarr", zarr_format)
    chunk = path / IMAGE_FILE[zarr_format]
    content = bytearray(chunk.read_bytes())
    content[40:60] = bytes(20)  # overwrite bytes inside the compressed frames (inside the first chunk of a shard)
    chunk.write_bytes(bytes(content))
    store = EpisodeStore.open(path)
    shape_meta = {"obs": {"img": {"shape": [3, 16, 16], "type": "rgb"}}, "action": {"shape": [2]}}
    dataset = SequenceDataset(store, shape_meta, horizon=4, n_obs_steps=2, n_action_steps=2)
    row = 5 if zarr_format == 2 else 256
    window = int(np.flatnonzero(dataset.sampler.start == row - 1)[0])
    expect_read_error(lambda: dataset[window], path, "data/img", f"chunk {row} (rows [{row}, {row + 1})",
                      "cannot be decoded")
    assert [key for key, _ in errors(validate(store, deep=True))] == ["data/img"]


def test_damaged_pusht_chunks_are_named_by_validation_and_reads(pusht_path, tmp_path):
    path = pusht_copy(pusht_path, tmp_path)
    truncate(path / "data/action/3.0")
    truncate(path / "data/img/7.0.0.0")
    store = EpisodeStore.open(path)
    deep = errors(validate(store, deep=True))
    assert [(key, message.split(" cannot be decoded")[0]) for key, message in deep] == [
        ("data/action", "chunk 3 (rows [483, 644))"), ("data/img", "chunk 7 (rows [1127, 1288))")]
    expect_read_error(lambda: store.read("action", 600, 700), path, "data/action", "chunk 3 (rows [483, 644))",
                      "cannot be decoded")
    expect_read_error(lambda: store.read("img", 1100, 1200), path, "data/img", "chunk 7 (rows [1127, 1288))",
                      "cannot be decoded")
    expect_read_error(lambda: store.load(["action"]), path, "data/action", "chunk 3 (rows [483, 644))")
