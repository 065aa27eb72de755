"""Language conditioning: the same observations under two instructions give two behaviours, for every family.

The data are real Push-T windows: each of four human demos is stored twice, once as recorded ("follow the
demo") and once with its actions mirrored across the board ("mirror the demo"), so only the instruction,
read from the store's `episode_tasks`, tells the two apart.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robopolicy.datasets.normalizer import Normalizer
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.datasets.text import instruction_tokens
from robopolicy.policies.registry import make_policy
from tests.policies.test_policy_learning import KEYPOINT_META, SMALL, train

META = {"obs": {**KEYPOINT_META["obs"], "instruction": {"shape": [32], "type": "text"}},
        "action": KEYPOINT_META["action"]}
TASKS = ("follow the demo", "mirror the demo")
BOARD = 512.0
EPISODES = 4


def follow_and_mirror(pusht: EpisodeStore) -> EpisodeStore:
    """Episodes 0-3 as recorded, then the same observations with mirrored actions, each with its instruction."""
    source = pusht.load(["state", "keypoint", "action"])
    rows = np.concatenate([np.arange(s.start, s.stop) for s in map(source.episode_slice, range(EPISODES))])
    data = {key: source[key][rows] for key in ("state", "keypoint", "action")}
    mirrored = {**data, "action": BOARD - data["action"]}
    lengths = source.episode_lengths[:EPISODES]
    ends = np.cumsum(np.concatenate([lengths, lengths]))
    store = EpisodeStore.from_arrays({key: np.concatenate([data[key], mirrored[key]]) for key in data}, ends)
    store.update_attrs({"episode_tasks": [TASKS[0]] * EPISODES + [TASKS[1]] * EPISODES})
    return store


def test_windows_carry_their_episode_instruction(pusht):
    store = follow_and_mirror(pusht)
    windows = SequenceDataset(store, META, horizon=16, n_obs_steps=2, n_action_steps=8)
    first_mirrored = int(np.flatnonzero(windows.sampler.episode == EPISODES)[0])
    batch = windows[np.array([0, first_mirrored])]
    assert batch["obs"]["instruction"].shape == (2, 1, 32) and batch["obs"]["instruction"].dtype == torch.int64
    np.testing.assert_array_equal(batch["obs"]["instruction"][:, 0].numpy(), instruction_tokens(TASKS, 32))
    torch.testing.assert_close(batch["obs"]["keypoint"][0], batch["obs"]["keypoint"][1])  # the same observation


@pytest.mark.slow
@pytest.mark.parametrize("family", list(SMALL))
def test_each_family_follows_the_instruction(family, pusht):
    store = follow_and_mirror(pusht)
    windows = SequenceDataset(store, META, horizon=16, n_obs_steps=2, n_action_steps=8)
    n_recorded = int(np.searchsorted(windows.sampler.episode, EPISODES))
    picks = np.linspace(0, n_recorded - 1, 8).astype(np.int64)
    mirrored = n_recorded + picks  # the same windows, with mirrored actions
    batch = windows[np.concatenate([picks, mirrored])]
    settings, steps, bound = SMALL[family]
    torch.manual_seed(0)
    policy = make_policy(family, META, settings)
    policy.set_normalizer(Normalizer.fit(store, META))
    train(policy, iter(lambda: batch, None), steps, decay=True)
    policy.eval()
    predicted = policy.predict_action(batch["obs"], generator=torch.Generator().manual_seed(0))["action_pred"]
    swapped = torch.cat([batch["action"][8:], batch["action"][:8]])
    own, other = ((predicted - target).abs().mean().item() for target in (batch["action"], swapped))
    assert own < 2 * bound, f"{family}: mean error {own:.1f} against its own instruction's actions"
    assert other > 10 * own, f"{family}: {other:.1f} from the other instruction's actions, {own:.1f} from its own"
