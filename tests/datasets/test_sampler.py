"""Windows, padding and splits match Diffusion Policy's semantics on the real Push-T store.

Splits and window tables are compared with tests/golden/sampler.json, recorded by running Diffusion
Policy's own get_val_mask, downsample_mask and create_indices (tests/golden/make_sampler_golden.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robopolicy.datasets.sampler import SequenceSampler, downsample_mask, split_episodes, val_mask
from robopolicy.datasets.sequence import SequenceDataset, make_dataloader
from robopolicy.datasets.store import EpisodeStore
from robopolicy.envs.pusht import PUSHT_IMAGE_SHAPE_META
from tests.conftest import synthetic_episode
from tests.golden.make_sampler_golden import GOLDEN, digest

DP = json.loads(GOLDEN.read_text())
PUSHT_ENDS = np.array(DP["pusht"]["episode_ends"], np.int64)
PUSHT_SPLIT = DP["splits"][0]  # Push-T's config: val_ratio 0.02, seed 42, max_train_episodes 90


def reference_sample(array, window, sequence_length):
    """Diffusion Policy's padding: positions outside the data repeat the first / last frame read."""
    buffer_start, buffer_end, sample_start, sample_end = window
    sample = np.asarray(array[buffer_start:buffer_end])
    out = np.empty((sequence_length, *sample.shape[1:]), sample.dtype)
    out[:sample_start] = sample[0]
    out[sample_end:] = sample[-1]
    out[sample_start:sample_end] = sample
    return out


def ids_mask(n_episodes, ids):
    mask = np.zeros(n_episodes, bool)
    mask[ids] = True
    return mask


def golden_windows(length, before, mask):
    return next(w for w in DP["pusht"]["windows"]
                if (w["sequence_length"], w["pad_before"], w["mask"]) == (length, before, mask))


def split_id(split):
    return "n{n_episodes}-val{val_ratio}-seed{seed}-max{max_train_episodes}".format(**split)


@pytest.mark.parametrize("split", DP["splits"], ids=[split_id(s) for s in DP["splits"]])
def test_split_steps_match_diffusion_policy_golden_episode_ids(split):
    """The val_ratio draw and the max_train_episodes cap, each as Diffusion Policy's sampler functions give them."""
    n, ratio, seed, max_train = split["n_episodes"], split["val_ratio"], split["seed"], split["max_train_episodes"]
    np.testing.assert_array_equal(val_mask(n, ratio, seed), ids_mask(n, split["val_ids"]))
    np.testing.assert_array_equal(downsample_mask(~ids_mask(n, split["val_ids"]), max_train, seed),
                                  ids_mask(n, split["train_ids"]))


@pytest.mark.parametrize("split", DP["dataset_splits"], ids=[split_id(s) for s in DP["dataset_splits"]])
def test_train_and_validation_episodes_are_those_of_diffusion_policy_datasets(split):
    """Training and validation episodes as Diffusion Policy's PushTLowdimDataset and its get_validation_dataset
    chose them: validation is every episode not trained on, not only the val_ratio draw."""
    n, ratio, seed, max_train = split["n_episodes"], split["val_ratio"], split["seed"], split["max_train_episodes"]
    train, val = split_episodes(n, val_ratio=ratio, seed=seed, max_train_episodes=max_train)
    assert np.flatnonzero(train).tolist() == split["train_ids"], f"train ids {np.flatnonzero(train).tolist()}"
    assert np.flatnonzero(val).tolist() == split["validation_ids"], f"validation ids {np.flatnonzero(val).tolist()}"


@pytest.mark.parametrize("golden", DP["pusht"]["windows"],
                         ids=[f"len{w['sequence_length']}-before{w['pad_before']}-{w['mask']}" for w in DP["pusht"]["windows"]])
def test_pusht_window_table_matches_diffusion_policy_golden(golden):
    masks = {"all": np.ones(len(PUSHT_ENDS), bool), "train": ids_mask(len(PUSHT_ENDS), PUSHT_SPLIT["train_ids"]),
             "val": ids_mask(len(PUSHT_ENDS), PUSHT_SPLIT["val_ids"])}
    sampler = SequenceSampler(PUSHT_ENDS, golden["sequence_length"], golden["pad_before"], golden["pad_after"],
                              episode_mask=masks[golden["mask"]])
    table = sampler.buffer_indices()
    assert len(sampler) == len(table) == golden["count"], f"{len(table)} windows, expected {golden['count']}"
    n = len(golden["first_rows"])
    np.testing.assert_array_equal(table[:n], golden["first_rows"])
    np.testing.assert_array_equal(table[-n:], golden["last_rows"])
    assert digest(table) == golden["sha256"], "the window table differs from Diffusion Policy's inside"


@pytest.mark.parametrize("golden", DP["small"]["windows"],
                         ids=[f"len{w['sequence_length']}-before{w['pad_before']}-after{w['pad_after']}"
                              for w in DP["small"]["windows"]])
def test_short_masked_and_overpadded_episodes_window_like_diffusion_policy(golden):
    sampler = SequenceSampler(np.array(DP["small"]["episode_ends"]), golden["sequence_length"], golden["pad_before"],
                              golden["pad_after"], episode_mask=np.array(DP["small"]["mask"]))
    np.testing.assert_array_equal(sampler.buffer_indices().reshape(-1, 4), np.array(golden["rows"]).reshape(-1, 4))


def test_window_count_and_padded_indices_match_diffusion_policy(pusht):
    np.testing.assert_array_equal(pusht.episode_ends, PUSHT_ENDS)  # the store the golden file was made from
    sampler = SequenceSampler(pusht.episode_ends, sequence_length=16, pad_before=1, pad_after=7)
    assert len(sampler) == 25650 - 7 * 206 == 24208
    assert digest(sampler.buffer_indices()) == golden_windows(16, 1, "all")["sha256"]


def test_split_matches_diffusion_policy_pusht_config(pusht):
    dataset = SequenceDataset(pusht, PUSHT_IMAGE_SHAPE_META, 16, 2, 8, val_ratio=0.02, seed=42, max_train_episodes=90)
    validation = dataset.get_validation_dataset()
    golden = DP["dataset_splits"][0]  # Diffusion Policy's PushTLowdimDataset on this store, the same windows
    assert (len(golden["train_ids"]), len(golden["validation_ids"])) == (90, 116)
    np.testing.assert_array_equal(dataset.episode_mask, ids_mask(len(PUSHT_ENDS), golden["train_ids"]))
    np.testing.assert_array_equal(validation.episode_mask, ids_mask(len(PUSHT_ENDS), golden["validation_ids"]))
    assert len(dataset) == golden["train_windows"] == golden_windows(16, 1, "train")["count"], len(dataset)
    assert len(validation) == golden["validation_windows"], f"{len(validation)} validation windows"


@pytest.mark.parametrize("latency", [0, 3])
def test_window_values_match_diffusion_policy_padding(pusht, pusht_memory, latency):
    dataset = SequenceDataset(pusht_memory, PUSHT_IMAGE_SHAPE_META, horizon=16, n_obs_steps=2, n_action_steps=8,
                              n_latency_steps=latency)
    # Diffusion Policy's configs pad n_obs_steps - 1 + n_latency_steps steps before each episode
    reference = SequenceSampler(pusht.episode_ends, 16 + latency, 1 + latency, 7).buffer_indices()
    assert digest(reference) == golden_windows(16 + latency, 1 + latency, "all")["sha256"]  # as Diffusion Policy's
    assert len(dataset) == len(reference)
    # the first windows of an episode (front padding), the last (back padding) and random ones
    picks = np.concatenate([[0, 1, 2], len(dataset) - np.arange(1, 9), np.random.default_rng(0).integers(0, len(dataset), 40)])
    batch = dataset[picks]
    for b, w in enumerate(picks):
        state = reference_sample(pusht["state"], reference[w], 16 + latency)
        action = reference_sample(pusht["action"], reference[w], 16 + latency)
        image = reference_sample(pusht["img"], reference[w], 16 + latency)
        np.testing.assert_array_equal(batch["action"][b].numpy(), action[latency:])
        np.testing.assert_array_equal(batch["obs"]["agent_pos"][b].numpy(), state[:2, :2])
        expected_image = torch.from_numpy(image[:2]).permute(0, 3, 1, 2) / 255.0
        torch.testing.assert_close(batch["obs"]["img"][b], expected_image, rtol=0, atol=1e-7)
    single = dataset[int(picks[-1])]
    torch.testing.assert_close(single["action"], batch["action"][-1])
    assert single["obs"]["img"].shape == (2, 3, 96, 96) and 0.0 <= float(single["obs"]["img"].min())
    assert float(batch["obs"]["img"].max()) <= 1.0


def test_lazy_and_in_memory_give_identical_windows(pusht, pusht_memory):
    lazy = SequenceDataset(pusht, PUSHT_IMAGE_SHAPE_META, 16, 2, 8)
    memory = SequenceDataset(pusht_memory, PUSHT_IMAGE_SHAPE_META, 16, 2, 8)
    picks = np.array([0, 5, 999, 24207])
    a, b = lazy[picks], memory[picks]
    for key in ("img", "agent_pos"):
        torch.testing.assert_close(a["obs"][key], b["obs"][key], rtol=0, atol=0)
    torch.testing.assert_close(a["action"], b["action"], rtol=0, atol=0)


def small_store(lengths=(10, 4, 7)) -> EpisodeStore:
    episodes = [synthetic_episode(i, n) for i, n in enumerate(lengths)]
    data = {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0]}
    return EpisodeStore.from_arrays(data, np.cumsum(lengths))


def test_per_key_horizon_stride_and_action_padding_mask():
    store = small_store()
    meta = {"obs": {"past": {"shape": [3], "source": "state", "horizon": 3, "down_sample_steps": 2},
                    "now": {"shape": [3], "source": "state"}},
            "action": {"shape": [2]}}
    dataset = SequenceDataset(store, meta, horizon=4, n_obs_steps=2, n_action_steps=3)
    # episode 0 has 10 steps: windows start at -1 .. 10 - 4 + 2 = 8, i.e. 10 windows
    first = dataset[0]
    assert first["action"][:, 1].tolist() == [0.0, 0.0, 1.0, 2.0]  # front padding repeats step 0
    assert first["action_is_pad"].tolist() == [True, False, False, False]
    assert first["obs"]["now"][:, 0].tolist() == [0.0, 0.0]  # state[:, 0] = 2 * step
    window = dataset[6]  # start 5: current step 6, strided history 2, 4, 6
    assert window["obs"]["past"][:, 0].tolist() == [4.0, 8.0, 12.0]
    assert window["obs"]["now"][:, 0].tolist() == [10.0, 12.0]
    last = dataset[9]  # start 8: actions 8, 9, then padding with step 9
    assert last["action"][:, 1].tolist() == [8.0, 9.0, 9.0, 9.0]
    assert last["action_is_pad"].tolist() == [False, False, True, True]
    assert len(dataset) == 10 + 4 + 7  # length - horizon + pad_before + pad_after + 1 = length per episode


def test_dataloader_with_workers_matches_direct_batches(pusht, pusht_memory):
    dataset = SequenceDataset(pusht_memory, PUSHT_IMAGE_SHAPE_META, 16, 2, 8)
    loader = make_dataloader(dataset, batch_size=16, shuffle=False, num_workers=2)
    batches = [b for _, b in zip(range(3), loader)]
    for i, batch in enumerate(batches):
        direct = dataset[np.arange(16 * i, 16 * (i + 1))]
        torch.testing.assert_close(batch["obs"]["img"], direct["obs"]["img"], rtol=0, atol=0)
        torch.testing.assert_close(batch["action"], direct["action"], rtol=0, atol=0)
    lazy = SequenceDataset(pusht, PUSHT_IMAGE_SHAPE_META, 16, 2, 8)
    lazy_batch = next(iter(make_dataloader(lazy, batch_size=16, shuffle=False, num_workers=1)))
    torch.testing.assert_close(lazy_batch["obs"]["img"], batches[0]["obs"]["img"], rtol=0, atol=0)


def test_shuffled_loader_is_seeded(pusht_memory):
    dataset = SequenceDataset(pusht_memory, PUSHT_IMAGE_SHAPE_META, 16, 2, 8)
    first = [next(iter(make_dataloader(dataset, batch_size=8, seed=s)))["action"] for s in (1, 1, 2)]
    torch.testing.assert_close(first[0], first[1])
    assert not torch.equal(first[0], first[2])


@pytest.mark.parametrize("lazy", [False, True])
def test_single_windows_equal_batched_windows(pusht, pusht_memory, lazy):
    meta = {"obs": {"img": PUSHT_IMAGE_SHAPE_META["obs"]["img"],
                    "history": {"shape": [5], "source": "state", "horizon": 4, "down_sample_steps": 3}},
            "action": {"shape": [2]}}
    dataset = SequenceDataset(pusht if lazy else pusht_memory, meta, horizon=16, n_obs_steps=2, n_action_steps=8,
                              n_latency_steps=1)
    picks = np.array([0, 1, 2, 3, 500, len(dataset) - 2, len(dataset) - 1])
    batch = dataset[picks]
    for b, w in enumerate(picks):
        single = dataset[int(w)]
        for key in meta["obs"]:
            torch.testing.assert_close(single["obs"][key], batch["obs"][key][b], rtol=0, atol=0)
        torch.testing.assert_close(single["action"], batch["action"][b], rtol=0, atol=0)
        assert torch.equal(single["action_is_pad"], batch["action_is_pad"][b])


def test_returned_tensors_do_not_alias_the_store():
    episode = synthetic_episode(0, 12)
    episode["img"] = episode["img"].astype(np.float32)  # float frames: the path that could share memory
    store = EpisodeStore.from_arrays(episode, np.array([12]))
    before = {k: store[k].copy() for k in store.keys}
    meta = {"obs": {"img": {"shape": [3, 16, 16], "type": "rgb"}, "state": {"shape": [3]}}, "action": {"shape": [2]}}
    dataset = SequenceDataset(store, meta, horizon=4, n_obs_steps=2, n_action_steps=2)
    for sample in (dataset[5], dataset[np.array([5, 6])]):
        for tensor in [*sample["obs"].values(), sample["action"]]:
            tensor.add_(1000.0)
    for key, value in before.items():
        np.testing.assert_array_equal(store[key], value)
