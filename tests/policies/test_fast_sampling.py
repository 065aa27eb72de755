"""The fast sampling path gives the plain path's actions for the same noise.

Plain path: diffusers' scheduler `step` loop (diffusion) or the textbook Euler loop (flow), with
the observation encoded again at every step. Fast path: the policies' own `sample`, features
computed once, coefficients planned once (robopolicy.policies.solvers).

The diffusers schedulers are built here from diffusers' own classes and the policy's noise settings,
not through robopolicy.policies.schedulers, so a wrong beta schedule, spacing, solver order or clip in
robopolicy's scheduler construction shows up as a mismatch.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from robopolicy.datasets.normalizer import Normalizer
from robopolicy.policies.denoising import Prefix
from robopolicy.policies.flow.model import FlowPolicy
from robopolicy.policies.registry import make_policy
from tests.policies.test_policies import ENCODER, SHAPE_METAS, TINY_UNET, build, synthetic_store


@pytest.fixture(scope="module")
def store():
    return synthetic_store()


def diffusers_scheduler(noise, sampler, steps):
    """diffusers' sampler for the policy's noise settings (NoiseScheduleConfig), timesteps set.

    DDPM and DDIM: their own clip_sample (DDIM with its defaults set_alpha_to_one=True, "leading" spacing, eta 0,
    as Diffusion Policy configures it). DPM-Solver++ (2M, "trailing" spacing) has no clip_sample; the one deviation
    from its defaults is that clip is asked of it as diffusers' dynamic thresholding with sample_max_value=1, whose
    threshold is clamped to exactly 1, i.e. the clean estimate clipped to [-1, 1] (see solvers._dpm_solver_steps).
    """
    common = {"num_train_timesteps": noise.num_train_timesteps, "beta_schedule": noise.beta_schedule,
              "prediction_type": noise.prediction_type}
    if sampler == "ddpm":
        scheduler = DDPMScheduler(**common, clip_sample=noise.clip_sample)
    elif sampler == "ddim":
        scheduler = DDIMScheduler(**common, clip_sample=noise.clip_sample)
    else:
        scheduler = DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                                timestep_spacing="trailing", thresholding=noise.clip_sample,
                                                sample_max_value=1.0)
    scheduler.set_timesteps(steps)
    return scheduler


def plain_diffusion(policy, obs, noise, sampler, steps, generator, prefix=None):
    """Normalized chunk from diffusers' own step loop."""
    scheduler = diffusers_scheduler(policy.config.noise, sampler, steps)
    forward = diffusers_scheduler(policy.config.noise, "ddpm", policy.config.noise.num_train_timesteps)
    sample, batch = noise, noise.shape[0]
    for step in scheduler.timesteps:
        if prefix is not None:
            known = forward.add_noise(prefix.actions, noise, step.expand(batch))
            sample = prefix.apply(sample, known)
        output = policy.backbone(sample, step.float().expand(batch), policy.encode(obs))
        sample = scheduler.step(output, step, sample, generator=generator).prev_sample
    return sample if prefix is None else prefix.apply(sample, prefix.actions)


def plain_euler(policy, obs, noise, steps):
    sample = noise
    for i in range(steps):
        t = torch.full((noise.shape[0],), 1.0 - i / steps)
        sample = sample - policy.velocity(sample, t, policy.encode(obs)) / steps
    return sample


def fast(policy, obs, noise, seed=None, **sampling):
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    chunk = policy.predict_action(obs, noise=noise, generator=generator, **sampling)["action_pred"]
    return policy.normalize_action(chunk)


CASES = [("ddpm", 100, "epsilon", True), ("ddpm", 10, "sample", True), ("ddim", 1, "epsilon", True),
         ("ddim", 10, "epsilon", True), ("ddim", 16, "sample", False), ("dpmsolver++", 10, "epsilon", True),
         ("dpmsolver++", 20, "epsilon", False), ("dpmsolver++", 4, "sample", True)]


@pytest.mark.parametrize(("sampler", "steps", "prediction", "clip"), CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_diffusion_fast_path_matches_diffusers_step_loop(store, sampler, steps, prediction, clip):
    policy, batch = build("diffusion_unet", "low_dim", store, noise={"prediction_type": prediction,
                                                                     "clip_sample": clip})

    policy.eval()
    noise = torch.randn(5, 16, 2, generator=torch.Generator().manual_seed(0))
    got = fast(policy, batch["obs"], noise, seed=3, sampler=sampler, num_inference_steps=steps)
    with torch.no_grad():
        expected = plain_diffusion(policy, batch["obs"], noise, sampler, steps, torch.Generator().manual_seed(3))
    # measured: at most 7e-7 beyond 1e-5 relative (float32 sums in another order), 4.4e-6 relative on the
    # unclipped DPM-Solver++ chunk that grows to 6e3
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)
    assert expected.abs().max() > 0.1  # a real chunk, not zeros


def test_diffusion_fast_path_holds_a_prefix_like_diffusers(store):
    policy, batch = build("diffusion_unet", "low_dim", store)
    policy.eval()
    noise = torch.randn(5, 16, 2, generator=torch.Generator().manual_seed(0))
    known = torch.randn(5, 16, 2, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    mask = torch.zeros(5, 16)
    mask[:, :4] = 1
    raw_prefix = policy.unnormalize_action(known)
    got = fast(policy, batch["obs"], noise, prefix=raw_prefix, prefix_mask=mask, num_inference_steps=8)
    with torch.no_grad():
        expected = plain_diffusion(policy, batch["obs"], noise, "ddim", 8, None,
                                   Prefix(policy.normalize_action(raw_prefix), mask[..., None]))
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_flow_fast_path_matches_the_plain_euler_loop(store, steps):
    policy, batch = build("flow", "rgb", store)
    policy.eval()
    noise = torch.randn(5, 16, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = plain_euler(policy, batch["obs"], noise, steps)
    torch.testing.assert_close(fast(policy, batch["obs"], noise, num_inference_steps=steps), expected,
                               atol=1e-5, rtol=1e-5)


def plain_consistency(policy, obs, noise, steps):
    """Chained consistency steps: estimate the end, go back to the next level with the initial noise."""
    sample = noise
    for i in range(steps):
        level = 1.0 - i / steps
        estimate = sample - level * policy.velocity(sample, torch.full((noise.shape[0],), level), policy.encode(obs))
        following = 1.0 - (i + 1) / steps
        sample = following * noise + (1 - following) * estimate
    return estimate


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_consistency_fast_path_matches_the_plain_chain(store, steps):
    policy = make_policy("consistency", SHAPE_METAS["low_dim"], {"backbone": TINY_UNET, "encoder": ENCODER})
    policy.set_normalizer(Normalizer.fit(store, SHAPE_METAS["low_dim"]))
    policy.eval()
    _, batch = build("flow", "low_dim", store)
    noise = torch.randn(5, 16, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = plain_consistency(policy, batch["obs"], noise, steps)
    got = fast(policy, batch["obs"], noise, num_inference_steps=steps)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if steps == 1:  # one consistency step is one Euler step of the same network
        with torch.no_grad():
            euler = FlowPolicy.sample(policy, policy.encode(batch["obs"]), noise, num_inference_steps=1)
        torch.testing.assert_close(euler, expected, atol=1e-6, rtol=1e-6)


def test_predict_action_runs_in_inference_mode(store):
    policy, batch = build("flow", "low_dim", store)
    policy.eval()
    assert policy.predict_action(batch["obs"])["action_pred"].is_inference()
