"""Policies learn: every family overfits real Push-T windows; adaptive flow takes fewer steps when it can."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robopolicy.datasets.normalizer import Normalizer
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.envs.pusht import PUSHT_IMAGE_SHAPE_META
from robopolicy.policies.presets import make_preset
from robopolicy.policies.registry import make_policy

KEYPOINT_META = {"obs": {"agent_pos": {"shape": [2], "source": "state", "dims": [0, 2]}, "keypoint": {"shape": [9, 2]}},
                 "action": {"shape": [2]}}
SMALL = {
    "diffusion_unet": ({"backbone": {"unet": {"down_dims": [32, 64, 128]}}}, 1000),
    "diffusion_transformer": ({"backbone": {"kind": "transformer", "transformer": {
        "d_model": 64, "n_heads": 4, "n_layers": 2, "dropout": 0.0}}}, 1000),
    "flow": ({"backbone": {"unet": {"down_dims": [32, 64, 128]}}}, 1000),
    "act": ({"d_model": 64, "n_heads": 4, "n_encoder_layers": 2, "n_decoder_layers": 2, "n_vae_encoder_layers": 2,
             "dropout": 0.0}, 600),
}


def train(policy, batches, steps: int, lr: float = 1e-3) -> list[float]:
    """Plain AdamW steps over an iterator of batches; returns the losses."""
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _, batch in zip(range(steps), batches):
        loss = policy.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def repeat(batch):
    while True:
        yield batch


@pytest.mark.slow
@pytest.mark.parametrize("family", list(SMALL))
def test_each_family_overfits_pusht_windows(family, pusht):
    torch.manual_seed(0)
    store = pusht.load(["state", "keypoint", "action"])
    windows = SequenceDataset(store, KEYPOINT_META, horizon=16, n_obs_steps=2, n_action_steps=8)
    batch = windows[np.arange(8) * 2000 + 100]  # 8 windows from 8 different demos
    settings, steps = SMALL[family]
    policy = make_policy(family, KEYPOINT_META, settings)
    policy.set_normalizer(Normalizer.fit(store, KEYPOINT_META))
    losses = train(policy, repeat(batch), steps)
    assert np.mean(losses[-20:]) < np.mean(losses[:10]) / 10, "the loss should fall by more than 10x"
    policy.eval()
    predicted = policy.predict_action(batch["obs"], generator=torch.Generator().manual_seed(0))["action_pred"]
    error = (predicted - batch["action"]).abs().mean().item()
    spread = batch["action"].std().item()  # about 94 on the 0..512 board
    assert error < 20.0, f"mean error {error:.1f} of the predicted chunk (demo spread {spread:.0f})"


def toy_batches(bimodal: bool, batch_size: int = 64, seed: int = 0):
    """obs x ~ U(-1, 1); the 4-step chunk is 0.5 x (one mode) or +-1 at random (two modes)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        x = torch.rand(batch_size, 1, 1, generator=generator) * 2 - 1
        if bimodal:
            target = torch.randint(0, 2, (batch_size, 1, 1), generator=generator).float() * 2 - 1
        else:
            target = 0.5 * x
        yield {"obs": {"x": x}, "action": target.expand(batch_size, 4, 1).contiguous()}


@pytest.mark.slow
def test_adaptive_flow_takes_fewer_steps_when_actions_are_unimodal():
    meta = {"obs": {"x": {"shape": [1]}}, "action": {"shape": [1]}}
    settings = {"horizon": 4, "n_obs_steps": 1, "n_action_steps": 1, "adaptive": True, "variance_hidden_dim": 64,
                "time_sampling": "beta", "backbone": {"unet": {"down_dims": [32, 64], "step_embed_dim": 32}}}
    anchors = EpisodeStore.from_arrays({"x": np.array([[-1.0], [1.0]], np.float32),
                                        "action": np.array([[-1.0], [1.0]], np.float32)}, np.array([2]))
    steps_taken = {}
    for bimodal in (False, True):
        torch.manual_seed(0)
        policy = make_policy("flow", meta, settings)
        policy.set_normalizer(Normalizer.fit(anchors, meta, modes={"action": "identity", "x": "identity"}))
        train(policy, toy_batches(bimodal), 1500, lr=2e-3)
        policy.eval()
        obs = next(toy_batches(bimodal, batch_size=256, seed=1))["obs"]
        with torch.no_grad():
            features = policy.encode(obs)
            noise = torch.randn(256, 4, 1, generator=torch.Generator().manual_seed(2))
            chunk, taken = policy.sample_adaptive(features, noise)
        steps_taken[bimodal] = taken.float().mean().item()
        if bimodal:
            share_near_mode = ((chunk.abs() - 1).abs() < 0.25).float().mean().item()
            assert share_near_mode > 0.75, "bimodal samples should land near +-1"
        else:  # one step from a velocity trained mostly near the noise end: close to 0.5 x (spread 0.25)
            assert (chunk - 0.5 * obs["x"]).abs().mean().item() < 0.08
    assert steps_taken[False] <= 2.0, steps_taken
    assert steps_taken[True] >= 2 * steps_taken[False], steps_taken


@pytest.mark.slow
def test_diffusion_policy_presets_have_the_published_sizes():
    lowdim_meta = {"obs": {"agent_pos": {"shape": [2]}, "keypoint": {"shape": [9, 2]}}, "action": {"shape": [2]}}
    count = lambda policy: sum(p.numel() for p in policy.parameters())  # noqa: E731
    assert round(count(make_preset("dp_pusht_image", PUSHT_IMAGE_SHAPE_META)) / 1e6) == 263
    assert round(count(make_preset("dp_pusht_lowdim", lowdim_meta)) / 1e6) == 66
