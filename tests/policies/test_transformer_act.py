"""ActionTransformer (shapes, causality) and the ACT policy (loss, KL, inference, ensembling, overfitting)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robopolicy.datasets.normalizer import Normalizer
from robopolicy.datasets.store import EpisodeStore
from robopolicy.policies.act.config import ACTConfig
from robopolicy.policies.act.ensemble import TemporalEnsembler
from robopolicy.policies.act.model import ACTPolicy, kl_to_standard_normal, masked_l1
from robopolicy.policies.networks.transformer import (
    ActionTransformer,
    TransformerConfig,
)
from robopolicy.policies.registry import make_policy

SHAPE_META = {"obs": {"agent_pos": {"shape": [2]}, "keypoint": {"shape": [9, 2]}}, "action": {"shape": [2]}}
TINY_ACT = {"horizon": 6, "n_obs_steps": 2, "n_action_steps": 3, "d_model": 32, "n_heads": 4,
            "n_encoder_layers": 1, "n_decoder_layers": 1, "n_vae_encoder_layers": 1, "latent_dim": 4, "dropout": 0.0}


def tiny_transformer(conditioning: str, causal: bool) -> ActionTransformer:
    config = TransformerConfig(d_model=16, n_heads=2, n_layers=2, dropout=0.0, conditioning=conditioning, causal=causal)
    return ActionTransformer(3, 5, {"pos": 4, "img": 6}, {"pos": 2, "img": 1}, config).eval()


def transformer_inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(batch, 5, 3, generator=generator)
    features = {"pos": torch.randn(batch, 2, 4, generator=generator),
                "img": torch.randn(batch, 1, 6, generator=generator)}
    return sample, torch.tensor([3.0, 70.0])[:batch], features


@pytest.mark.parametrize("conditioning", ["cross_attention", "in_context"])
def test_action_transformer_shape(conditioning: str) -> None:
    sample, timestep, features = transformer_inputs()
    out = tiny_transformer(conditioning, causal=True)(sample, timestep, features)
    assert out.shape == (2, 5, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("conditioning", ["cross_attention", "in_context"])
def test_causal_transformer_ignores_later_actions(conditioning: str) -> None:
    torch.manual_seed(0)
    sample, timestep, features = transformer_inputs()
    changed = sample.clone()
    changed[:, 3:] += 5.0
    for causal in (True, False):
        net = tiny_transformer(conditioning, causal)
        with torch.no_grad():
            before, after = net(sample, timestep, features), net(changed, timestep, features)
        earlier_moved = (before[:, :3] - after[:, :3]).abs().max().item()
        if causal:
            assert earlier_moved < 1e-5
        else:
            assert earlier_moved > 1e-3
        assert (before[:, 3:] - after[:, 3:]).abs().max().item() > 1e-3


def test_action_transformer_rejects_wrong_shapes() -> None:
    sample, timestep, features = transformer_inputs()
    net = tiny_transformer("cross_attention", causal=True)
    with pytest.raises(ValueError, match="sample must be"):
        net(sample[:, :4], timestep, features)
    with pytest.raises(ValueError, match="timestep must be"):
        net(sample, timestep[:1], features)


def test_transformer_config_validates() -> None:
    with pytest.raises(ValueError, match="conditioning"):
        TransformerConfig(conditioning="film")
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(d_model=30, n_heads=4)


def fitted_normalizer(seed: int = 0) -> Normalizer:
    rng = np.random.default_rng(seed)
    data = {"agent_pos": rng.uniform(0, 500, (40, 2)), "keypoint": rng.uniform(-3, 3, (40, 9, 2)),
            "action": rng.uniform(0, 500, (40, 2))}
    return Normalizer.fit(EpisodeStore.from_arrays(data, np.array([20, 40])), SHAPE_META)


def make_act(**overrides: object) -> ACTPolicy:
    torch.manual_seed(0)
    policy = make_policy("act", SHAPE_META, {**TINY_ACT, **overrides})
    policy.set_normalizer(fitted_normalizer())
    return policy


def raw_batch(batch: int, seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    obs = {"agent_pos": torch.rand(batch, 2, 2, generator=generator) * 500,
           "keypoint": torch.rand(batch, 2, 9, 2, generator=generator) * 6 - 3}
    is_pad = torch.zeros(batch, 6, dtype=torch.bool)
    is_pad[0, -2:] = True
    return {"obs": obs, "action": torch.rand(batch, 6, 2, generator=generator) * 500, "action_is_pad": is_pad}


def test_act_loss_backward_and_prediction() -> None:
    policy = make_act()
    assert isinstance(policy, ACTPolicy)
    batch = raw_batch(4)
    loss = policy.compute_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    policy.eval()
    first = policy.predict_action(batch["obs"], generator=torch.Generator())
    second = policy.predict_action(batch["obs"])
    assert first["action"].shape == (4, 3, 2) and first["action_pred"].shape == (4, 6, 2)
    assert torch.equal(first["action_pred"], second["action_pred"])
    assert torch.equal(first["action"], first["action_pred"][:, 1:4])
    assert first["action_pred"].abs().max() > 5.0  # raw units (actions span 0..500), not normalized [-1, 1]


def test_kl_and_masked_l1_on_known_values() -> None:
    assert kl_to_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0
    mean, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 * (mu^2 + var - 1 - log var) per dim: 0.5 and 0.5 * (1 - log 2)
    assert kl_to_standard_normal(mean, logvar).item() == pytest.approx(0.5 + 0.5 * (1.0 - math.log(2.0)))
    prediction, target = torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [2.0, 2.0], [100.0, 100.0]]])
    assert masked_l1(prediction, target, torch.tensor([[False, False, True]])).item() == pytest.approx(1.5)


def test_act_kl_term_is_zero_when_the_posterior_is_the_prior() -> None:
    policy = make_act(kl_weight=1000.0)
    torch.nn.init.zeros_(policy.style_encoder.to_latent.weight)
    torch.nn.init.zeros_(policy.style_encoder.to_latent.bias)
    batch = raw_batch(4)
    torch.manual_seed(5)  # the same z sample in both calls
    with_kl = policy.compute_loss(batch)
    policy.config.kl_weight = 0.0
    torch.manual_seed(5)
    assert with_kl.item() == pytest.approx(policy.compute_loss(batch).item(), abs=1e-6)


def test_act_config_validates() -> None:
    with pytest.raises(ValueError, match="n_action_steps == 1"):
        ACTConfig(temporal_ensemble=True, n_action_steps=4)
    with pytest.raises(ValueError, match="divisible"):
        ACTConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="n_obs_steps"):  # the shared PolicyConfig checks still run
        ACTConfig(horizon=4, n_obs_steps=5)


def test_temporal_ensembler_hand_computed() -> None:
    k = 0.5
    ensembler = TemporalEnsembler(k)
    chunks = [torch.tensor([[[1.0], [2.0], [3.0]]]), torch.tensor([[[10.0], [20.0], [30.0]]]),
              torch.tensor([[[100.0], [200.0], [300.0]]])]
    assert ensembler.update(chunks[0]).tolist() == [[1.0]]
    w0, w1, w2 = 1.0, math.exp(-k), math.exp(-2 * k)
    assert ensembler.update(chunks[1]).item() == pytest.approx((w0 * 2.0 + w1 * 10.0) / (w0 + w1))
    # Step 3: oldest chunk says 3, the middle one 20, the newest 100.
    assert ensembler.update(chunks[2]).item() == pytest.approx((w0 * 3.0 + w1 * 20.0 + w2 * 100.0) / (w0 + w1 + w2))
    # A fourth chunk: the first one (length 3) no longer covers this step and is dropped.
    assert ensembler.update(torch.zeros(1, 3, 1)).item() == pytest.approx((w0 * 30.0 + w1 * 200.0) / (w0 + w1 + w2))
    ensembler.reset()
    assert ensembler.update(torch.full((1, 3, 1), 7.0)).item() == 7.0


def test_temporal_ensembler_is_batch_aware() -> None:
    ensembler = TemporalEnsembler(0.0)
    ensembler.update(torch.tensor([[[0.0], [4.0]], [[1.0], [2.0]]]))
    assert ensembler.update(torch.tensor([[[6.0], [0.0]], [[8.0], [0.0]]])).flatten().tolist() == [5.0, 5.0]
    with pytest.raises(ValueError, match="reset"):
        ensembler.update(torch.zeros(3, 2, 1))


def test_act_policy_temporal_ensemble_and_reset() -> None:
    policy = make_act(temporal_ensemble=True, n_action_steps=1, ensemble_coeff=0.0).eval()
    obs_a, obs_b = raw_batch(2, seed=1)["obs"], raw_batch(2, seed=2)["obs"]
    first = policy.predict_action(obs_a)
    assert first["action"].shape == (2, 1, 2) and first["action_pred"].shape == (2, 6, 2)
    assert torch.allclose(first["action"][:, 0], first["action_pred"][:, 1])
    second = policy.predict_action(obs_b)
    expected = (first["action_pred"][:, 2] + second["action_pred"][:, 1]) / 2
    assert torch.allclose(second["action"][:, 0], expected, atol=1e-4)
    policy.reset()
    assert torch.allclose(policy.predict_action(obs_b)["action"][:, 0], second["action_pred"][:, 1])


def test_act_overfits_a_fixed_batch() -> None:
    policy = make_act(kl_weight=1.0)
    batch = raw_batch(8, seed=3)
    batch["action_is_pad"][:] = False
    optimizer = torch.optim.Adam(policy.parameters(), lr=2e-3)
    losses = []
    for _ in range(200):
        loss = policy.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10
    policy.eval()
    predicted = policy.predict_action(batch["obs"])["action_pred"]
    assert (predicted - batch["action"]).abs().mean() < 0.05 * 500  # within 5% of the action range
