"""Diffusion policy: learn to denoise normalized action chunks; sample with DDPM, DDIM or DPM-Solver++."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.policies.denoising import DenoisingPolicy, Prefix, step_times
from robopolicy.policies.diffusion.config import (
    DiffusionConfig,
    DiffusionTransformerConfig,
)
from robopolicy.policies.registry import register_policy
from robopolicy.policies.schedulers import training_scheduler
from robopolicy.policies.solvers import SolverStep, plan_steps


@register_policy("diffusion_transformer", DiffusionTransformerConfig)
@register_policy("diffusion_unet", DiffusionConfig)
class DiffusionPolicy(DenoisingPolicy):
    """Conditional denoiser of action chunks (epsilon or sample prediction).

    predict_action(obs, generator=None, noise=None, sampler=None, num_inference_steps=None):
    `sampler` and `num_inference_steps` override the config's for one call.
    """

    config: DiffusionConfig

    def __init__(self, config: DiffusionConfig, shape_meta: Mapping[str, Any] | ShapeMeta):
        super().__init__(config, shape_meta, config.backbone)
        self.train_scheduler = training_scheduler(config.noise)
        self._plans: dict[tuple[str, int], list[SolverStep]] = {}

    def compute_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """MSE between the backbone's output and the noise (or the clean chunk) at a random step."""
        features, action = self.training_pair(batch)
        noise = torch.randn_like(action)
        steps = torch.randint(0, self.config.noise.num_train_timesteps, (action.shape[0],), device=action.device)
        noisy = self.train_scheduler.add_noise(action, noise, steps)
        predicted = self.backbone(noisy, steps.float(), features)
        target = noise if self.config.noise.prediction_type == "epsilon" else action
        return F.mse_loss(predicted, target)

    def export_sampling(self, sampler: str | None, num_inference_steps: int | None) -> dict[str, Any]:
        """A deterministic sampler (DDIM, DPM-Solver++) and its step count, fixed in the artifact."""
        sampler = sampler or self.config.sampler
        if sampler == "ddpm":
            raise ValueError("DDPM draws fresh noise at every step, which a traced artifact would freeze: "
                             "export with sampler=ddim or sampler=dpmsolver++ (num_inference_steps=N)")
        return {"sampler": sampler, "num_inference_steps": num_inference_steps or self.config.num_inference_steps}

    def solver_plan(self, sampler: str, num_inference_steps: int) -> list[SolverStep]:
        """The coefficient table of one sampler and step count (planned once, then cached)."""
        key = (sampler, num_inference_steps)
        if key not in self._plans:
            self._plans[key] = plan_steps(self.train_scheduler, sampler, num_inference_steps)
        return self._plans[key]

    def sample(self, features: dict[str, torch.Tensor], noise: torch.Tensor, generator: torch.Generator | None = None,
               prefix: Prefix | None = None, sampler: str | None = None,
               num_inference_steps: int | None = None) -> torch.Tensor:
        """Run the reverse process from `noise` with the chosen sampler and step count (robopolicy.policies.solvers)."""
        plan = self.solver_plan(sampler or self.config.sampler, num_inference_steps or self.config.num_inference_steps)
        sample, before = noise, noise
        for step, t in zip(plan, step_times([s.timestep for s in plan], noise), strict=True):
            if prefix is not None:  # the known rows noised to this step's level
                sample = prefix.apply(sample, step.signal * prefix.actions + step.level * noise)
            output = self.backbone(sample, t, features)
            clean = step.x0_sample * sample + step.x0_output * output
            if step.clip:
                clean = clean.clamp(-1.0, 1.0)
            update = step.keep * sample + step.x0 * clean
            if step.x0_previous:
                update = update + step.x0_previous * before
            if step.eps:
                update = update + step.eps * (step.eps_sample * sample + step.eps_output * output)
            if step.fresh_noise:
                device = generator.device if generator is not None else sample.device
                fresh = torch.randn(sample.shape, generator=generator, dtype=sample.dtype, device=device)
                update = update + step.fresh_noise * fresh.to(sample.device)
            sample, before = update, clean
        return sample if prefix is None else prefix.apply(sample, prefix.actions)
