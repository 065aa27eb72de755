"""Bad stores fail early with an error that names the path, the key and a fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from robopolicy.cli import main
from robopolicy.datasets.errors import DataError
from robopolicy.datasets.inspect import validate
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.shape_meta import parse_shape_meta
from robopolicy.datasets.store import EpisodeStore
from robopolicy.envs.pusht import PUSHT_IMAGE_SHAPE_META


def write_raw_store(path: Path, data: dict[str, np.ndarray], episode_ends: list[int] | None) -> Path:
    """A zarr v2 store written without robopolicy, as another tool might have written it (zarr 2 wrote every
    chunk, all-zero ones too; zarr 3 skips those unless told to write them)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    every_chunk = {"write_empty_chunks": True}
    for key, value in data.items():
        group.create_array(f"data/{key}", shape=value.shape, dtype=value.dtype, config=every_chunk)[:] = value
    if episode_ends is not None:
        group.create_array("meta/episode_ends", shape=(len(episode_ends),), dtype="i8", config=every_chunk)[:] = \
            episode_ends
    return path


def good_data(n: int = 10) -> dict[str, np.ndarray]:
    return {"action": np.zeros((n, 2), np.float32), "state": np.zeros((n, 5), np.float32),
            "img": np.zeros((n, 96, 96, 3), np.uint8)}


def expect_error(path: Path, *fragments: str) -> DataError:
    with pytest.raises(DataError) as info:
        EpisodeStore.open(path)
    message = str(info.value)
    for fragment in (str(path), *fragments):
        assert fragment in message, f"{fragment!r} missing from: {message}"
    assert "fix:" in message
    return info.value


def test_missing_episode_ends(tmp_path):
    expect_error(write_raw_store(tmp_path / "s.zarr", good_data(), None), "missing meta/episode_ends")


def test_episode_ends_not_increasing(tmp_path):
    error = expect_error(write_raw_store(tmp_path / "s.zarr", good_data(), [5, 3, 10]), "not strictly increasing at episode 1")
    assert error.key == "meta/episode_ends"


def test_episode_ends_not_ending_at_array_length(tmp_path):
    expect_error(write_raw_store(tmp_path / "s.zarr", good_data(), [5, 8]), "ends at row 8", "has 10 rows")


def test_keys_of_different_lengths(tmp_path):
    data = good_data() | {"state": np.zeros((9, 5), np.float32)}
    expect_error(write_raw_store(tmp_path / "s.zarr", data, [5, 10]), "different lengths", "'data/state': 9")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_actions(tmp_path, bad, capsys):
    data = good_data()
    data["action"][7, 1] = bad
    path = write_raw_store(tmp_path / "s.zarr", data, [5, 10])
    store = EpisodeStore.open(path)
    with pytest.raises(DataError, match=r"\[data/action\]: NaN or inf at row 7 \(episode 1\)"):
        SequenceDataset(store, PUSHT_IMAGE_SHAPE_META, horizon=4, n_obs_steps=2, n_action_steps=2)
    findings = validate(store)
    assert [(f.level, f.key) for f in findings] == [("error", "data/action")]
    assert main(["dataset", "validate", str(path)]) == 1
    assert "NaN or inf at row 7" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_non_finite_low_dim_observations(tmp_path, bad):
    data = good_data()
    data["state"][6, 1] = bad  # agent_pos reads dims [0, 2) of state
    store = EpisodeStore.open(write_raw_store(tmp_path / "s.zarr", data, [5, 10]))
    with pytest.raises(DataError, match=r"\[data/state\]: NaN or inf at row 6 \(episode 1\)"):
        SequenceDataset(store, PUSHT_IMAGE_SHAPE_META, horizon=4, n_obs_steps=2, n_action_steps=2)
    assert [(f.level, f.key) for f in validate(store)] == [("error", "data/state")]


def test_images_of_the_wrong_rank(tmp_path):
    data = good_data() | {"img": np.zeros((10, 96, 96), np.uint8)}
    store = EpisodeStore.open(write_raw_store(tmp_path / "s.zarr", data, [5, 10]))
    assert [(f.level, f.key) for f in validate(store)] == [("error", "data/img")]
    with pytest.raises(DataError, match=r"\[data/img\]: images must be \(T, H, W, C\)"):
        SequenceDataset(store, PUSHT_IMAGE_SHAPE_META, horizon=4, n_obs_steps=2, n_action_steps=2)


@pytest.mark.parametrize("make", ["missing", "file", "empty_dir"])
def test_path_that_is_not_a_store(tmp_path, make, capsys):
    path = tmp_path / "not_a_store"
    if make == "file":
        path.write_text("hello")
    elif make == "empty_dir":
        path.mkdir()
    expected = {"missing": "does not exist", "file": "is a file", "empty_dir": "not a zarr store"}[make]
    expect_error(path, expected)
    assert main(["dataset", "info", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_shape_meta_key_missing_from_store(tmp_path):
    store = EpisodeStore.open(write_raw_store(tmp_path / "s.zarr", good_data(), [5, 10]))
    meta = {"obs": {"agent_pos": {"shape": [2], "source": "agent_pos"}}, "action": {"shape": [2]}}
    with pytest.raises(DataError, match=r"\[data/agent_pos\]: obs.agent_pos key not in the store(.|\n)*'state'"):
        SequenceDataset(store, meta, horizon=4, n_obs_steps=2, n_action_steps=2)


def test_append_with_mismatched_episode(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr")
    store.append_episode({"action": np.zeros((3, 2), np.float32), "state": np.zeros((3, 5), np.float32)})
    with pytest.raises(DataError, match="differ from the store's"):
        store.append_episode({"action": np.zeros((3, 2), np.float32)})
    with pytest.raises(DataError, match=r"\[data/state\]: rows of shape \(4,\), store has \(5,\)"):
        store.append_episode({"action": np.zeros((3, 2), np.float32), "state": np.zeros((3, 4), np.float32)})
    with pytest.raises(DataError, match="share one non-zero length"):
        store.append_episode({"action": np.zeros((3, 2), np.float32), "state": np.zeros((2, 5), np.float32)})
    assert EpisodeStore.open(tmp_path / "s.zarr").n_episodes == 1


def test_a_text_key_needs_every_episode_to_name_its_task(tmp_path):
    store = EpisodeStore.open(write_raw_store(tmp_path / "s.zarr", good_data(), [5, 10]), mode="a")
    store.update_attrs({"episode_tasks": ["open the drawer"]})
    meta = {"obs": {"instruction": {"shape": [8], "type": "text"}}, "action": {"shape": [2]}}
    with pytest.raises(DataError, match=r"1 of 2 episodes have no task string \(first: episode 1\)"):
        SequenceDataset(store, meta, horizon=4, n_obs_steps=2, n_action_steps=2)
    store.update_attrs({"episode_tasks": ["open the drawer", "close the drawer"]})
    with pytest.raises(DataError, match=r"for long ones set obs.instruction.shape to \[96\]"):
        SequenceDataset(store, meta, horizon=4, n_obs_steps=2, n_action_steps=2)


def test_depth_with_several_channels(tmp_path):
    data = good_data() | {"depth": np.ones((10, 96, 96, 3), np.float32)}
    store = EpisodeStore.open(write_raw_store(tmp_path / "s.zarr", data, [5, 10]))
    meta = {"obs": {"depth": {"shape": [96, 96], "type": "depth"}}, "action": {"shape": [2]}}
    with pytest.raises(DataError, match=r"\[data/depth\]: depth must be \(T, H, W\) or \(T, H, W, 1\)"):
        SequenceDataset(store, meta, horizon=4, n_obs_steps=2, n_action_steps=2)


@pytest.mark.parametrize("meta, message", [
    ({"obs": {"state": [5]}, "action": {"shape": [2]}}, "obs.state must be a mapping"),
    ({"obs": {"state": {"shape": [2], "dims": "01"}}, "action": {"shape": [2]}}, "obs.state.dims must be"),
    ({"obs": {}, "action": [2]}, "'action' must be"),
    ({"obs": {"img": {"shape": [96, 96], "type": "rgb"}}, "action": {"shape": [2]}}, r"obs.img.shape must be \[C, H, W\]"),
    ({"obs": {"state": {"shape": [2], "type": "joint"}}, "action": {"shape": [2]}}, "obs.state.type must be one of"),
    ({"obs": {"task": {"shape": [4, 8], "type": "text"}}, "action": {"shape": [2]}}, r"task.shape must be \[L\]"),
    ({"obs": {"task": {"shape": [32], "type": "text", "horizon": 2}}, "action": {"shape": [2]}}, "one step"),
])
def test_malformed_shape_meta(meta, message):
    with pytest.raises(ValueError, match=message):
        parse_shape_meta(meta)
