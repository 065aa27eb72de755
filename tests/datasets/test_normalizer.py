"""Normalizer: each mode on real Push-T values, streaming equals in-memory statistics, exact inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robopolicy.datasets import normalizer as normalizer_module
from robopolicy.datasets.normalizer import Normalizer, RunningStats, affine_from_stats
from robopolicy.datasets.store import EpisodeStore
from robopolicy.envs.pusht import PUSHT_IMAGE_SHAPE_META

LOW_DIM_META = {"obs": {"agent_pos": {"shape": [2], "source": "state", "dims": [0, 2]},
                        "keypoint": {"shape": [9, 2]}},
                "action": {"shape": [2]}}


@pytest.fixture(scope="module")
def actions(pusht) -> np.ndarray:
    return pusht.read("action").astype(np.float64)


@pytest.mark.parametrize("mode", ["limits", "gaussian", "quantile", "identity"])
def test_modes_on_pusht_actions(pusht, actions, mode):
    normalizer = Normalizer.fit(pusht, LOW_DIM_META, modes={"action": mode})
    raw = torch.from_numpy(pusht.read("action"))
    y = normalizer["action"].normalize(raw).double().numpy()
    if mode == "limits":
        np.testing.assert_allclose(y.min(0), -1.0, atol=1e-6)
        np.testing.assert_allclose(y.max(0), 1.0, atol=1e-6)
    elif mode == "gaussian":
        np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(y.std(0), 1.0, atol=1e-5)
    elif mode == "quantile":
        np.testing.assert_allclose(np.quantile(y, [0.01, 0.99], axis=0), [[-1, -1], [1, 1]], atol=1e-5)
        assert y.min() < -1.0 and y.max() > 1.0  # not clipped, so the inverse stays exact
    else:
        np.testing.assert_array_equal(y, actions)
    back = normalizer["action"].unnormalize(torch.from_numpy(y.astype(np.float32))).double().numpy()
    assert np.abs(back - actions).max() < 1e-4  # float32 rounding on a 0..512 scale
    assert normalizer.modes == {"agent_pos": "limits", "keypoint": "limits", "action": mode}


def test_streaming_stats_equal_in_memory_numpy(pusht, actions):
    normalizer = Normalizer.fit(pusht, LOW_DIM_META)
    field = normalizer["keypoint"]
    keypoints = pusht.read("keypoint").astype(np.float64)
    assert field.mean.shape == (9, 2)
    np.testing.assert_allclose(field.mean.numpy(), keypoints.mean(0), rtol=1e-6)
    np.testing.assert_allclose(field.std.numpy(), keypoints.std(0), rtol=1e-5)
    np.testing.assert_allclose(field.min.numpy(), keypoints.min(0))
    np.testing.assert_allclose(field.q99.numpy(), np.quantile(keypoints, 0.99, axis=0), rtol=1e-6)
    agent = normalizer["agent_pos"]
    np.testing.assert_allclose(agent.max.numpy(), pusht.read("state")[:, :2].max(0))


def test_fit_on_chosen_episodes(pusht):
    mask = np.zeros(pusht.n_episodes, bool)
    mask[[3, 4, 50]] = True
    normalizer = Normalizer.fit(pusht, LOW_DIM_META, episode_mask=mask)
    chosen = np.concatenate([pusht.episode(i, ["action"])["action"] for i in (3, 4, 50)])
    np.testing.assert_allclose(normalizer["action"].min.numpy(), chosen.min(0))
    np.testing.assert_allclose(normalizer["action"].max.numpy(), chosen.max(0))


def test_image_stats_per_channel_in_policy_layout(pusht, tmp_path):
    small = EpisodeStore.create(tmp_path / "small.zarr")
    for index in range(6):
        small.append_episode(pusht.episode(index, ["img", "state", "action"]))
    first_episodes = np.arange(small.n_episodes) < 4
    frames = small.read("img", 0, int(small.episode_ends[3])).astype(np.float64) / 255.0
    normalizer = Normalizer.fit(small, PUSHT_IMAGE_SHAPE_META, modes={"img": "gaussian"}, episode_mask=first_episodes)
    field = normalizer["img"]
    assert field.scale.shape == (3, 1, 1)
    np.testing.assert_allclose(field.mean.numpy().ravel(), frames.reshape(-1, 3).mean(0), rtol=1e-6)
    np.testing.assert_allclose(field.std.numpy().ravel(), frames.reshape(-1, 3).std(0), rtol=1e-5)
    images = torch.rand(4, 2, 3, 96, 96)
    out = normalizer.normalize({"img": images, "other": images})
    torch.testing.assert_close(out["img"][:, :, 1], (images[:, :, 1] - field.mean[1]) / field.std[1], rtol=1e-5, atol=1e-5)
    assert out["other"] is images


def test_identity_keys_are_not_read(pusht, monkeypatch):
    real_iter_blocks = normalizer_module.iter_blocks

    def no_images(array, start, stop, desc=None):
        assert array.shape[1:] != (96, 96, 3), "the identity-mode image key was streamed"
        return real_iter_blocks(array, start, stop, desc)

    monkeypatch.setattr(normalizer_module, "iter_blocks", no_images)
    normalizer = Normalizer.fit(pusht, PUSHT_IMAGE_SHAPE_META)  # img defaults to identity: no 2.8 GB pass
    assert normalizer.modes["img"] == "identity"
    assert torch.equal(normalizer["img"].scale, torch.ones(3, 1, 1))
    with pytest.raises(AssertionError, match="identity-mode image key was streamed"):
        Normalizer.fit(pusht, PUSHT_IMAGE_SHAPE_META, modes={"img": "limits"})


def test_bad_fit_arguments_fail_before_any_streaming(pusht):
    with pytest.raises(ValueError, match="episode_mask has shape \\(1,\\), the store has 206 episodes"):
        Normalizer.fit(pusht, LOW_DIM_META, episode_mask=np.ones(1, bool))
    with pytest.raises(ValueError, match="mode for 'action' must be one of"):
        Normalizer.fit(pusht, LOW_DIM_META, modes={"action": "minmax"})
    wrong = {"obs": {"keypoint": {"shape": [9, 3]}}, "action": {"shape": [2]}}
    with pytest.raises(ValueError, match=r"\[data/keypoint\]: rows have shape \(9, 2\), shape_meta says \[9, 3\]"):
        Normalizer.fit(pusht, wrong)


def test_flat_dimensions_map_to_zero():
    stats = {"min": np.array([2.0, 0.0]), "max": np.array([2.0, 4.0]), "mean": np.array([2.0, 1.0]),
             "std": np.array([0.0, 1.0]), "q01": np.array([2.0, 0.0]), "q99": np.array([2.0, 4.0])}
    scale, offset = affine_from_stats("limits", stats)
    np.testing.assert_allclose(np.array([2.0, 4.0]) * scale + offset, [0.0, 1.0])
    scale, offset = affine_from_stats("gaussian", stats)
    np.testing.assert_allclose(np.array([2.0, 1.0]) * scale + offset, [0.0, 0.0])
    with pytest.raises(ValueError, match="must be one of"):
        affine_from_stats("minmax", stats)


def test_running_stats_subsample_is_close_to_exact_quantiles():
    values = np.random.default_rng(0).normal(size=(400_000, 2))
    stats = RunningStats(total_rows=len(values), max_quantile_rows=50_000)
    for block in np.array_split(values, 37):
        stats.update(block)
    result = stats.result()
    np.testing.assert_allclose(result["mean"], values.mean(0), atol=1e-12)
    np.testing.assert_allclose(result["q99"], np.quantile(values, 0.99, axis=0), atol=0.05)


def test_save_load_round_trip(pusht, tmp_path):
    normalizer = Normalizer.fit(pusht, LOW_DIM_META, modes={"keypoint": "gaussian", "action": "quantile"})
    normalizer.save(tmp_path / "normalizer.safetensors")
    loaded = Normalizer.load(tmp_path / "normalizer.safetensors")
    assert loaded.modes == normalizer.modes
    for key in normalizer.fields:
        for name, tensor in normalizer[key].named_buffers():
            assert torch.equal(getattr(loaded[key], name), tensor), (key, name)
    x = torch.from_numpy(pusht.read("action")[:100])
    torch.testing.assert_close(loaded["action"].normalize(x), normalizer["action"].normalize(x), rtol=0, atol=0)


def test_nan_in_fit_names_the_key(tmp_path):
    store = EpisodeStore.create(tmp_path / "n.zarr")
    action = np.zeros((6, 2), np.float32)
    action[4, 0] = np.nan
    store.append_episode({"action": action, "state": np.zeros((6, 5), np.float32)})
    meta = {"obs": {"state": {"shape": [5]}}, "action": {"shape": [2]}}
    with pytest.raises(ValueError, match=r"\[data/action\]: NaN or inf"):
        Normalizer.fit(store, meta)


def test_text_keys_get_no_normalizer_and_refuse_a_mode():
    store = EpisodeStore.from_arrays({"state": np.ones((4, 2), np.float32), "action": np.ones((4, 1), np.float32)},
                                     np.array([2, 4]))
    store.update_attrs({"episode_tasks": ["open the drawer", "close the drawer"]})
    meta = {"obs": {"state": {"shape": [2]}, "instruction": {"shape": [32], "type": "text"}}, "action": {"shape": [1]}}
    assert set(Normalizer.fit(store, meta).modes) == {"state", "action"}
    with pytest.raises(ValueError, match="not normalized"):
        Normalizer.fit(store, meta, modes={"instruction": "limits"})
