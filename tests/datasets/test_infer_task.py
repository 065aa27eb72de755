"""The task built from a store alone: key types from dtype, rank and name; the action key; errors that list the
store's keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.infer_task import infer_shape_meta, infer_task
from robopolicy.datasets.store import EpisodeStore

T = 12


def write_store(path, **extra: np.ndarray) -> EpisodeStore:
    rng = np.random.default_rng(0)
    data = {
        "observation.images.top": rng.integers(0, 255, (T, 40, 48, 3), dtype=np.uint8),
        "observation.state": rng.normal(size=(T, 26)).astype(np.float32),
        "depth_cam": rng.random((T, 32, 32)).astype(np.float32),
        "cloud": rng.normal(size=(T, 64, 6)).astype(np.float32),
        "legacy_rgb": np.floor(rng.random((T, 16, 16, 3)) * 255).astype(np.float32),  # older stores: float 0..255
        "frame_index": np.arange(T, dtype=np.int64).reshape(T, 1),
        "next.reward": np.zeros((T, 1), np.float32),
        "keypoints": rng.normal(size=(T, 9, 2)).astype(np.float32),
        "mask": np.zeros((T, 20, 20), np.bool_),
        **extra,
    }
    store = EpisodeStore.create(path, attrs={"fps": 30})
    for end in (5, T):
        start = 0 if end == 5 else 5
        store.append_episode({k: v[start:end] for k, v in data.items()})
    return store


def test_every_key_is_typed_from_its_dtype_rank_and_name(tmp_path):
    write_store(tmp_path / "demos.zarr", action=np.zeros((T, 26), np.float32))
    task = infer_task(str(tmp_path / "demos.zarr"))
    assert task["shape_meta"] == {
        "obs": {
            "cloud": {"shape": [64, 6], "type": "point_cloud"},
            "depth_cam": {"shape": [32, 32], "type": "depth"},
            "images_top": {"shape": [3, 40, 48], "type": "rgb", "source": "observation.images.top"},
            "keypoints": {"shape": [9, 2], "type": "low_dim"},
            "legacy_rgb": {"shape": [3, 16, 16], "type": "rgb"},
            "state": {"shape": [26], "type": "low_dim", "source": "observation.state"},
        },
        "action": {"shape": [26]},
    }
    assert task["name"] == "demos" and task["control_hz"] == 30.0
    assert task["dataset"]["val_ratio"] == 0.1 and task["env"] is None
    # 90% crops of the smallest frames (16x16), too small for keypoints: average pooling
    assert task["encoder"] == {"image": {"crop_shape": [14, 14], "pool": "avg"}}


def test_obs_and_action_pick_keys_and_a_renamed_action_is_its_source(tmp_path):
    store = write_store(tmp_path / "demos.zarr", actions=np.zeros((T, 7), np.float32))
    meta = infer_shape_meta(store, obs=["observation.state"], action=None)
    assert meta == {"obs": {"state": {"shape": [26], "type": "low_dim", "source": "observation.state"}},
                    "action": {"shape": [7], "source": "actions"}}
    meta = infer_shape_meta(store, obs=["observation.state"], action="observation.state")
    assert meta["action"] == {"shape": [26], "source": "observation.state"}


@pytest.mark.parametrize("actions, problem", [({}, "no 'action' or 'actions' key"),
                                              ({"action": np.zeros((T, 2), np.float32),
                                                "actions": np.zeros((T, 2), np.float32)},
                                               "both 'action' and 'actions'")])
def test_a_missing_or_ambiguous_action_lists_the_store_keys(tmp_path, actions, problem):
    store = write_store(tmp_path / "demos.zarr", **actions)
    with pytest.raises(DataError) as error:
        infer_shape_meta(store)
    assert problem in str(error.value) and "action=KEY" in str(error.value)
    assert "'observation.state'" in str(error.value) and "'frame_index'" in str(error.value)


def test_picking_a_missing_or_unusable_key_names_it_and_the_store_keys(tmp_path):
    store = write_store(tmp_path / "demos.zarr", action=np.zeros((T, 2), np.float32))
    with pytest.raises(DataError, match=r"no observation key 'wrist'(.|\n)*'observation.images.top'"):
        infer_shape_meta(store, obs=["wrist"])
    with pytest.raises(DataError, match=r"mask(.|\n)*leave it out of obs"):
        infer_shape_meta(store, obs=["mask"])
    with pytest.raises(DataError, match="no action key 'act'"):
        infer_shape_meta(store, action="act")


def test_a_key_missing_from_a_partly_loaded_store_is_reported_with_every_stored_key(tmp_path):
    """The trainer loads only the keys shape_meta names; the hint must list what the user's store holds."""
    from robopolicy.datasets.sequence import SequenceDataset

    write_store(tmp_path / "demos.zarr", action=np.zeros((T, 26), np.float32))
    loaded = EpisodeStore.open(tmp_path / "demos.zarr").load(["action"])
    meta = {"obs": {"agent_pos": {"shape": [2], "type": "low_dim"}}, "action": {"shape": [26]}}
    with pytest.raises(DataError) as error:
        SequenceDataset(loaded, meta, horizon=4, n_obs_steps=2, n_action_steps=2)
    message = str(error.value)
    assert "data/agent_pos" in message and "obs.agent_pos key not in the store" in message
    assert "'observation.state'" in message and "'observation.images.top'" in message and "'cloud'" in message


def test_channels_first_frames_train_like_the_same_frames_channels_last(tmp_path):
    from robopolicy.datasets.normalizer import Normalizer
    from robopolicy.datasets.sequence import SequenceDataset

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (T, 16, 20, 3), dtype=np.uint8)
    action = rng.normal(size=(T, 2)).astype(np.float32)
    windows = {}
    for name, stored in (("hwc", frames), ("chw", np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))):
        store = EpisodeStore.create(tmp_path / f"{name}.zarr")
        store.append_episode({"cam": stored, "action": action})
        meta = infer_shape_meta(store)
        assert meta["obs"] == {"cam": {"shape": [3, 16, 20], "type": "rgb"}}
        dataset = SequenceDataset(store, meta, horizon=4, n_obs_steps=2, n_action_steps=2)
        windows[name] = dataset[[0, 3, 5]]["obs"]["cam"]
        stats = Normalizer.fit(store, meta, modes={"cam": "gaussian"}).state_dict()
        windows[name + "_stats"] = {k: v for k, v in stats.items() if k.startswith("fields.cam.")}
    assert windows["hwc"].shape == (3, 2, 3, 16, 20)
    assert torch.equal(windows["hwc"], windows["chw"])
    assert windows["hwc_stats"].keys() == windows["chw_stats"].keys() and len(windows["hwc_stats"]) == 8
    assert windows["hwc_stats"]["fields.cam.mean"].shape == (3, 1, 1)  # per channel
    for key, value in windows["hwc_stats"].items():
        torch.testing.assert_close(value, windows["chw_stats"][key])


def test_a_store_of_several_tasks_gets_an_instruction_key(tmp_path):
    store = write_store(tmp_path / "demos.zarr", action=np.zeros((T, 26), np.float32))
    store.update_attrs({"episode_tasks": ["open the drawer", "close the drawer and then press the green button"]})
    meta = infer_shape_meta(store)
    assert meta["obs"]["instruction"] == {"shape": [96], "type": "text"}  # room beyond the longest (48 bytes)
    store.update_attrs({"episode_tasks": ["open the drawer", "x" * 100]})
    assert infer_shape_meta(store)["obs"]["instruction"] == {"shape": [112], "type": "text"}
    store.update_attrs({"episode_tasks": ["open the drawer", "open the drawer"]})
    assert "instruction" not in infer_shape_meta(store)["obs"]  # one task: nothing to tell apart
    assert infer_shape_meta(store, obs=["cloud", "instruction"])["obs"]["instruction"]["type"] == "text"
    store.update_attrs({"episode_tasks": ["open the drawer"]})
    with pytest.raises(DataError, match="1 of 2 episodes have no task string"):
        infer_shape_meta(store, obs=["instruction"])
