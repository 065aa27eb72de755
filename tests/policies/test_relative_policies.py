"""Every policy family with relative trajectories: it trains on relative windows, and its absolute actions follow the
observed end-effector pose (moved and turned, the whole predicted trajectory moves and turns with it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from robopolicy.datasets.normalizer import ABSOLUTE_ACTION, Normalizer
from robopolicy.datasets.relative import (
    matrix_to_rot6d,
    relative_windows,
    rot6d_to_matrix,
)
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.policies.registry import make_policy
from tests.policies.test_policies import ENCODER, TINY

META = {"obs": {"eef_pos": {"shape": [3]}, "eef_rot6d": {"shape": [6]}},
        "action": {"shape": [10], "frame": "relative"}}


def arm_store(seed: int = 0) -> EpisodeStore:
    """Three episodes of a wandering gripper whose actions lead its pose by a few centimetres and degrees."""
    rng = np.random.default_rng(seed)
    n = 90
    position = np.cumsum(rng.normal(0, 0.01, (n, 3)), axis=0) + [0.0, 0.0, 1.0]
    rotation = Rotation.from_rotvec(np.cumsum(rng.normal(0, 0.03, (n, 3)), axis=0)).as_matrix()
    ahead = Rotation.from_rotvec(rng.normal(0, 0.05, (n, 3))).as_matrix()
    turned = matrix_to_rot6d(torch.from_numpy(rotation @ ahead)).numpy()
    action = np.concatenate([position + rng.normal(0, 0.02, (n, 3)), turned, rng.uniform(-1, 1, (n, 1))], 1)
    data = {"eef_pos": position, "eef_rot6d": matrix_to_rot6d(torch.from_numpy(rotation)).numpy(), "action": action}
    return EpisodeStore.from_arrays({k: v.astype(np.float32) for k, v in data.items()}, np.array([30, 60, 90]))


@pytest.mark.parametrize("family", list(TINY))
def test_a_relative_policy_trains_and_its_actions_move_with_the_arm(family):
    torch.manual_seed(0)
    policy = make_policy(family, META, {**TINY[family], "encoder": ENCODER})
    store = arm_store()
    dataset = SequenceDataset.for_window(store, policy.shape_meta, policy.config.window)
    normalizer = Normalizer.fit(store, META)
    normalizer.refit(relative_windows(dataset, policy.shape_meta.action_frame))
    policy.set_normalizer(normalizer)
    assert float(normalizer[ABSOLUTE_ACTION].min[2]) > 0.8  # absolute heights kept for the runtime's range
    assert float(normalizer["eef_pos"].max.abs().max()) < 0.2  # pose keys seen relative: small offsets
    batch = dataset[np.arange(8)]
    loss = policy.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    policy.eval()

    obs = batch["obs"]
    turn = torch.from_numpy(Rotation.from_euler("z", 50, degrees=True).as_matrix()).float()
    shift = torch.tensor([0.3, -0.2, 0.1])
    moved = {"eef_pos": obs["eef_pos"] @ turn.T + shift,
             "eef_rot6d": matrix_to_rot6d(turn @ rot6d_to_matrix(obs["eef_rot6d"]))}
    here = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action_pred"]
    there = policy.predict_action(moved, generator=torch.Generator().manual_seed(0))["action_pred"]
    torch.testing.assert_close(there[..., :3], here[..., :3] @ turn.T + shift, atol=2e-4, rtol=0)
    torch.testing.assert_close(there[..., 3:9], matrix_to_rot6d(turn @ rot6d_to_matrix(here[..., 3:9])), atol=2e-4,
                               rtol=0)
    torch.testing.assert_close(there[..., 9], here[..., 9], atol=2e-4, rtol=0)
    assert (here[..., :3] - obs["eef_pos"][:, -1:]).norm(dim=-1).max() < 1.0  # absolute, near the arm
