"""The Policy contract, checked for every family x every encoder type with tiny networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from robopolicy.datasets.normalizer import Normalizer
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.policies.ema import EMA
from robopolicy.policies.encoders.config import (
    ImageEncoderConfig,
    PointCloudEncoderConfig,
)
from robopolicy.policies.encoders.image import ImageEncoder
from robopolicy.policies.encoders.pointcloud import PointCloudEncoder
from robopolicy.policies.registry import make_config, make_policy, policy_names

ENCODER = {"image": {"base_width": 8, "feature_dim": 16, "num_keypoints": 8, "crop_shape": [56, 56]},
           "point_cloud": {"feature_dim": 16, "use_rgb": True},
           "low_dim": {"kind": "mlp", "hidden_dim": 16, "feature_dim": 16}}
TINY_UNET = {"unet": {"down_dims": [16, 32, 64], "step_embed_dim": 16}}
TINY = {
    "diffusion_unet": {"backbone": TINY_UNET},
    "diffusion_transformer": {"backbone": {"kind": "transformer",
                                           "transformer": {"d_model": 32, "n_heads": 2, "n_layers": 2}}},
    "flow": {"backbone": TINY_UNET},
    "act": {"d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "n_vae_encoder_layers": 1,
            "latent_dim": 8},
}
SHAPE_METAS = {
    "low_dim": {"obs": {"agent_pos": {"shape": [2]}, "keypoint": {"shape": [9, 2]}}, "action": {"shape": [2]}},
    "rgb": {"obs": {"img": {"shape": [3, 64, 64], "type": "rgb"}, "agent_pos": {"shape": [2]}}, "action": {"shape": [2]}},
    "point_cloud": {"obs": {"cloud": {"shape": [64, 6], "type": "point_cloud"}, "agent_pos": {"shape": [2]}},
                    "action": {"shape": [2]}},
    "depth": {"obs": {"depth": {"shape": [64, 64], "type": "depth"}, "agent_pos": {"shape": [2]}},
              "action": {"shape": [2]}},
    "text": {"obs": {"instruction": {"shape": [32], "type": "text"}, "agent_pos": {"shape": [2]}},
             "action": {"shape": [2]}},
}
TASKS = ["open the drawer", "close the drawer", "press the button"]
SAMPLING_FAMILIES = ["diffusion_unet", "diffusion_transformer", "flow"]


def synthetic_store(seed: int = 0) -> EpisodeStore:
    """Three episodes with every obs type; actions on a raw 100..300 scale."""
    rng = np.random.default_rng(seed)
    n = 90
    data = {
        "agent_pos": rng.uniform(0, 512, (n, 2)).astype(np.float32),
        "keypoint": rng.uniform(0, 512, (n, 9, 2)).astype(np.float32),
        "img": rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8),
        "cloud": rng.uniform(-1, 1, (n, 64, 6)).astype(np.float32),
        "depth": rng.uniform(0.5, 2.0, (n, 64, 64)).astype(np.float32),
        "action": rng.uniform(100, 300, (n, 2)).astype(np.float32),
    }
    store = EpisodeStore.from_arrays(data, np.array([30, 60, 90]))
    store.update_attrs({"episode_tasks": TASKS})
    return store


@pytest.fixture(scope="module")
def store() -> EpisodeStore:
    return synthetic_store()


def build(family: str, meta_name: str, store: EpisodeStore, **overrides):
    meta = SHAPE_METAS[meta_name]
    torch.manual_seed(0)
    policy = make_policy(family, meta, {**TINY[family], "encoder": ENCODER, **overrides})
    policy.set_normalizer(Normalizer.fit(store, meta))
    batch = SequenceDataset(store, meta, horizon=16, n_obs_steps=2, n_action_steps=8)[np.arange(0, 60, 12)]
    return policy, batch


@pytest.mark.parametrize("family", ["diffusion_unet", "flow", "act"])
def test_the_dataset_reads_the_window_each_policy_declares(family, store):
    config = make_config(family, {**TINY[family], "horizon": 8, "n_obs_steps": 3, "n_action_steps": 4})
    windows = SequenceDataset.for_window(store, SHAPE_METAS["low_dim"], config.window, n_latency_steps=1)
    batch = windows[np.arange(4)]
    assert batch["action"].shape == (4, 8, 2) and batch["obs"]["keypoint"].shape == (4, 3, 9, 2)
    assert windows.action_offsets.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]  # one latency step after the observations
    assert windows.obs_readers["agent_pos"].offsets.tolist() == [0, 1, 2]  # "now" is window step n_obs_steps - 1
    with pytest.raises(ValueError, match=r"need 1 <= n_obs_steps \(9\) <= horizon \(8\)"):
        SequenceDataset(store, SHAPE_METAS["low_dim"], horizon=8, n_obs_steps=9, n_action_steps=4)


def test_every_family_is_registered():
    assert policy_names() == ["act", "consistency", "diffusion_transformer", "diffusion_unet", "flow"]


@pytest.mark.parametrize("meta_name", list(SHAPE_METAS))
@pytest.mark.parametrize("family", list(TINY))
def test_family_and_encoder_build_train_and_predict(family, meta_name, store):
    policy, batch = build(family, meta_name, store)
    loss = policy.compute_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    encoder_grads = [p.grad for p in policy.obs_encoder.parameters() if p.requires_grad]
    assert encoder_grads and all(g is not None for g in encoder_grads), "the encoder must be trained through the loss"
    policy.eval()
    out = policy.predict_action(batch["obs"], generator=torch.Generator().manual_seed(1))
    assert out["action"].shape == (5, 8, 2) and out["action_pred"].shape == (5, 16, 2)
    torch.testing.assert_close(out["action"], out["action_pred"][:, 1:9])  # starts at the current step (To - 1)
    # raw units: the chunk lives on the 100..300 action scale, its normalized form near [-1, 1]
    assert 50.0 < float(out["action_pred"].abs().mean()) and float(policy.normalize_action(out["action_pred"]).abs().mean()) < 5.0


@pytest.mark.parametrize("family", SAMPLING_FAMILIES)
def test_same_seed_same_actions(family, store):
    policy, batch = build(family, "low_dim", store)
    policy.eval()
    first, again, other = (policy.predict_action(batch["obs"], generator=torch.Generator().manual_seed(s))["action_pred"]
                           for s in (7, 7, 8))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)
    noise = torch.randn(5, 16, 2, generator=torch.Generator().manual_seed(3))
    given = policy.predict_action(batch["obs"], noise=noise)["action_pred"]
    torch.testing.assert_close(given, policy.predict_action(batch["obs"], noise=noise)["action_pred"], rtol=0, atol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
@pytest.mark.parametrize("steps", [1, 4, 10, 100])
def test_diffusion_samplers_and_step_counts(sampler, steps, store):
    policy, batch = build("diffusion_unet", "low_dim", store)
    policy.eval()
    calls = []
    policy.backbone.register_forward_hook(lambda *args: calls.append(1))
    out = policy.predict_action(batch["obs"], sampler=sampler, num_inference_steps=steps)
    assert len(calls) == steps, "one backbone pass per sampling step, the encoder once"
    assert torch.isfinite(out["action_pred"]).all()


@pytest.mark.parametrize("steps", [1, 10])
def test_flow_euler_step_counts(steps, store):
    policy, batch = build("flow", "rgb", store)
    policy.eval()
    calls = []
    policy.backbone.register_forward_hook(lambda *args: calls.append(1))
    encoder_calls = []
    policy.obs_encoder.register_forward_hook(lambda *args: encoder_calls.append(1))
    out = policy.predict_action(batch["obs"], num_inference_steps=steps)
    assert (len(calls), len(encoder_calls)) == (steps, 1)
    assert out["action_pred"].shape == (5, 16, 2)


@pytest.mark.parametrize("family", list(TINY))
def test_state_dict_round_trip_through_safetensors(family, store, tmp_path):
    policy, batch = build(family, "rgb", store)
    policy.eval()
    save_file(policy.state_dict(), tmp_path / "model.safetensors")
    fresh, _ = build(family, "rgb", synthetic_store(seed=5))
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    fresh.eval()
    expected = policy.predict_action(batch["obs"], generator=torch.Generator().manual_seed(2))
    got = fresh.predict_action(batch["obs"], generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(got["action_pred"], expected["action_pred"], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["dp3", "pointnet"])
def test_point_cloud_encoder_is_permutation_invariant(kind):
    torch.manual_seed(0)
    encoder = PointCloudEncoder(6, PointCloudEncoderConfig(kind=kind, feature_dim=16, use_rgb=True))
    clouds = torch.randn(4, 128, 6)
    shuffled = clouds[:, torch.randperm(128)]
    torch.testing.assert_close(encoder(shuffled), encoder(clouds), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(encoder(clouds[:, :64]), encoder(clouds))  # yet it sees the points
    no_rgb = PointCloudEncoder(6, PointCloudEncoderConfig(kind=kind, feature_dim=16, use_rgb=False))
    recoloured = clouds.clone()
    recoloured[..., 3:] = 0.0
    torch.testing.assert_close(no_rgb(recoloured), no_rgb(clouds))


@pytest.mark.parametrize("kind", ["dp3", "pointnet"])
def test_point_cloud_encoder_gradients_equal_linear_then_max(kind):
    """The training path (max of the last Linear with a gather/scatter backward) against the plain operators."""
    torch.manual_seed(0)
    encoder = PointCloudEncoder(6, PointCloudEncoderConfig(kind=kind, feature_dim=16, use_rgb=True)).double()
    clouds = torch.randn(3, 2, 64, 6, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 2, 16, dtype=torch.float64)

    def gradients(encode) -> list[torch.Tensor]:
        encoder.zero_grad()
        clouds.grad = None
        (encode() * weights).sum().backward()
        return [clouds.grad.clone(), *(p.grad.clone() for p in encoder.parameters())]

    fused = gradients(lambda: encoder(clouds))
    plain = gradients(lambda: encoder.head(encoder.points(clouds).amax(dim=-2)))
    for got, expected in zip(fused, plain):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert fused[0].abs().sum() > 0 and fused[-1].abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(encoder(clouds), encoder.head(encoder.points(clouds).amax(dim=-2)))


def test_image_encoder_crops_randomly_only_when_training():
    torch.manual_seed(0)
    encoder = ImageEncoder(3, (64, 64), ImageEncoderConfig(base_width=8, feature_dim=16, num_keypoints=4,
                                                            crop_shape=(56, 56)))
    images = torch.rand(6, 3, 64, 64)
    encoder.eval()
    torch.testing.assert_close(encoder(images), encoder(images))
    encoder.train()
    assert not torch.allclose(encoder(images), encoder(images))
    assert encoder(images).shape == (6, 16)


def test_shared_image_trunk_across_cameras():
    meta = {"obs": {"left": {"shape": [3, 64, 64], "type": "rgb"}, "right": {"shape": [3, 64, 64], "type": "rgb"}},
            "action": {"shape": [2]}}
    shared = make_policy("flow", meta, {"backbone": TINY_UNET, "encoder": {"image": {**ENCODER["image"], "share_weights": True}}})
    separate = make_policy("flow", meta, {"backbone": TINY_UNET, "encoder": {"image": ENCODER["image"]}})
    assert shared.obs_encoder.encoders["left"] is shared.obs_encoder.encoders["right"]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    trunk = count(separate.obs_encoder.encoders["left"])
    assert count(separate.obs_encoder) - count(shared.obs_encoder) == trunk


def test_registry_suggests_names_and_checks_settings():
    with pytest.raises(KeyError, match="did you mean 'diffusion_unet'"):
        make_policy("difusion_unet", SHAPE_METAS["low_dim"])
    with pytest.raises(ValueError, match=r"unknown flow settings \['horizn'\]"):
        make_config("flow", {"horizn": 16})
    with pytest.raises(ValueError, match="horizon 10 must be divisible by 4"):
        make_config("diffusion_unet", {"horizon": 10})
    with pytest.raises(ValueError, match="n_action_steps"):
        make_config("act", {"horizon": 8, "n_obs_steps": 2, "n_action_steps": 8})
    with pytest.raises(ValueError, match=r"unknown encoder.image settings \['widht'\]"):
        make_config("flow", {"encoder": {"image": {"widht": 3}}})
    with pytest.raises(ValueError, match=r"unknown backbone.unet settings \['down_dim'\]"):
        make_config("diffusion_unet", {"backbone": {"unet": {"down_dim": [8]}}})
    with pytest.raises(TypeError, match="needs a ACTConfig"):
        make_policy("act", SHAPE_METAS["low_dim"], make_config("flow"))


def test_predict_needs_a_normalizer_and_every_obs_key(store):
    policy = make_policy("flow", SHAPE_METAS["low_dim"], {"backbone": TINY_UNET})
    obs = {"agent_pos": torch.zeros(1, 2, 2), "keypoint": torch.zeros(1, 2, 9, 2)}
    with pytest.raises(RuntimeError, match="set_normalizer"):
        policy.predict_action(obs)
    policy.set_normalizer(Normalizer.fit(store, SHAPE_METAS["low_dim"]))
    with pytest.raises(KeyError, match="obs lacks keys \\['keypoint'\\]"):
        policy.predict_action({"agent_pos": obs["agent_pos"]})


def test_ema_power_law_warmup():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = EMA(model, power=0.75, max_value=0.9999)
    assert ema.decay(1) == 0.0
    assert ema.decay(2) == pytest.approx(1 - 2 ** -0.75)
    assert ema.decay(10**9) == 0.9999
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay 0: copies
    torch.testing.assert_close(ema.averaged.weight, torch.ones(1, 2))
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # step 2: decay 1 - 2^-0.75
    expected = 1.0 * ema.decay(2) + 3.0 * (1 - ema.decay(2))
    torch.testing.assert_close(ema.averaged.weight, torch.full((1, 2), expected))


def test_image_sizes_that_would_blind_the_encoder_are_refused():
    config = ImageEncoderConfig(crop_shape=(28, 28))
    with pytest.raises(ValueError, match="1x1 feature map"):
        ImageEncoder(3, (32, 32), config)
    with pytest.raises(ValueError, match="larger than the images"):
        ImageEncoder(3, (24, 24), config)
    pooled = ImageEncoder(3, (32, 32), ImageEncoderConfig(crop_shape=(28, 28), pool="avg", base_width=8, feature_dim=5))
    assert pooled(torch.rand(2, 3, 32, 32)).shape == (2, 5)
