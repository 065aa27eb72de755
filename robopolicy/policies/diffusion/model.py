"""Diffusion policy: learn to denoise normalized action chunks; sample with DDPM, DDIM or DPM-Solver++."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.policies.denoising import DenoisingPolicy, Prefix
from robopolicy.policies.diffusion.config import (
    DiffusionConfig,
    DiffusionTransformerConfig,
)
from robopolicy.policies.registry import register_policy
from robopolicy.policies.schedulers import sampling_scheduler, training_scheduler


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

    def compute_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """MSE between the backbone's output and the noise (or the clean chunk) at a random step."""
        features, action = self.training_pair(batch)
        noise = torch.randn_like(action)
        steps = torch.randint(0, self.config.noise.num_train_timesteps, (action.shape[0],), device=action.device)
        noisy = self.train_scheduler.add_noise(action, noise, steps)
        predicted = self.backbone(noisy, steps.float(), features)
        target = noise if self.config.noise.prediction_type == "epsilon" else action
        return F.mse_loss(predicted, target)

    def sample(self, features: dict[str, torch.Tensor], noise: torch.Tensor, generator: torch.Generator | None = None,
               prefix: Prefix | None = None, sampler: str | None = None,
               num_inference_steps: int | None = None) -> torch.Tensor:
        """Run the reverse process from `noise` with the chosen sampler and step count."""
        scheduler = sampling_scheduler(self.train_scheduler, sampler or self.config.sampler,
                                       num_inference_steps or self.config.num_inference_steps)
        sample = noise
        batch = noise.shape[0]
        for step in scheduler.timesteps:
            if prefix is not None:
                sample = prefix.apply(sample, self.train_scheduler.add_noise(prefix.actions, noise, step.expand(batch)))
            output = self.backbone(sample, step.to(sample.device, torch.float32).expand(batch), features)
            sample = scheduler.step(output, step, sample, generator=generator).prev_sample
        return sample if prefix is None else prefix.apply(sample, prefix.actions)
