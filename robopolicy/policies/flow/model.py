"""Flow-matching policy (rectified flow) with fixed-step Euler and adaptive-step sampling.

Training: x_t = t * noise + (1 - t) * action with t ~ U[0, 1] (or a Beta law that favours the
noisy end); the backbone regresses the velocity v = noise - action. Sampling integrates
dx/dt = v from t = 1 (noise) to t = 0 (action) with Euler steps.

Adaptive steps (the AdaFlow idea): a small head also predicts, per sample, the variance of
the velocity target given (x_t, t, observation), trained by Gaussian negative log-likelihood
on the detached velocity error, so it never changes the velocity network. When the action
distribution is unimodal the velocity is determined by x_t and the predicted variance is
near zero: the straight path can be followed in one step. The rule at time t is

    step = clamp(adaptive_eta / predicted_std, adaptive_min_step, t)

so a confident sample jumps to t = 0 at once and an uncertain one (several action modes
still possible) advances by small steps, at most 1 / adaptive_min_step of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.policies.denoising import DenoisingPolicy, Prefix, step_times
from robopolicy.policies.flow.config import FlowConfig
from robopolicy.policies.networks.embeddings import SinusoidalEmbedding
from robopolicy.policies.registry import register_policy


class VarianceHead(nn.Module):
    """(x_t (B, H, Da), t (B,), flat obs features (B, D)) -> log variance of the velocity (B,)."""

    def __init__(self, chunk_dim: int, feature_dim: int, hidden_dim: int, time_embed_scale: float):
        super().__init__()
        self.time_embed_scale = time_embed_scale
        self.time = SinusoidalEmbedding(64)
        self.net = nn.Sequential(nn.Linear(chunk_dim + feature_dim + 64, hidden_dim), nn.Mish(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.Mish(), nn.Linear(hidden_dim, 1))

    def forward(self, sample: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([sample.flatten(1), features, self.time(t * self.time_embed_scale)], dim=-1)
        return self.net(inputs).squeeze(-1)


def step_levels(steps: int, like: torch.Tensor) -> tuple[list[float], torch.Tensor]:
    """Times 1, 1 - 1/steps, ..., 1/steps of equal steps from noise to action: as floats and as (steps, B)."""
    levels = [1.0 - i / steps for i in range(steps)]
    return levels, step_times(levels, like)


@register_policy("flow", FlowConfig)
class FlowPolicy(DenoisingPolicy):
    """Velocity field over action chunks; predict_action(obs, generator=None, noise=None, num_inference_steps=None)."""

    config: FlowConfig

    def __init__(self, config: FlowConfig, shape_meta: Mapping[str, Any] | ShapeMeta):
        super().__init__(config, shape_meta, config.backbone)
        self.variance_head = None
        if config.adaptive:
            self.variance_head = VarianceHead(config.horizon * self.action_dim, self.obs_encoder.output_dim,
                                              config.variance_hidden_dim, config.time_embed_scale)

    def export_sampling(self, sampler: str | None, num_inference_steps: int | None) -> dict[str, Any]:
        """The Euler step count, fixed in the artifact (an adaptive flow must be given one)."""
        if sampler is not None:
            raise ValueError(f"sampler= applies to diffusion policies only, not {type(self).__name__}")
        if self.variance_head is not None and num_inference_steps is None:
            raise ValueError("adaptive flow sampling picks its step count per observation, which a traced artifact "
                             "cannot: export with a fixed num_inference_steps=N")
        return {"num_inference_steps": num_inference_steps or self.config.num_inference_steps}

    def velocity(self, sample: torch.Tensor, t: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Backbone velocity at times t (B,) in [0, 1]."""
        return self.backbone(sample, t * self.config.time_embed_scale, features)

    def sample_times(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """Training times (B,) from the configured law."""
        if self.config.time_sampling == "uniform":
            return torch.rand(batch_size, device=device)
        law = torch.distributions.Beta(torch.tensor(self.config.beta_alpha), torch.tensor(self.config.beta_beta))
        return (self.config.time_scale * law.sample((batch_size,))).to(device)

    def compute_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Velocity MSE, plus the variance head's Gaussian NLL when adaptive."""
        features, action = self.training_pair(batch)
        noise = torch.randn_like(action)
        t = self.sample_times(action.shape[0], action.device)
        sample = t[:, None, None] * noise + (1.0 - t[:, None, None]) * action
        predicted = self.velocity(sample, t, features)
        loss = F.mse_loss(predicted, noise - action)
        if self.variance_head is not None:
            error = (predicted.detach() - (noise - action)).pow(2).mean(dim=(1, 2))
            flat = self.obs_encoder.flatten({k: v.detach() for k, v in features.items()})
            log_var = self.variance_head(sample, t, flat)
            loss = loss + 0.5 * (error * torch.exp(-log_var) + log_var).mean()
        return loss

    def sample(self, features: dict[str, torch.Tensor], noise: torch.Tensor, generator: torch.Generator | None = None,
               prefix: Prefix | None = None, num_inference_steps: int | None = None) -> torch.Tensor:
        """Euler from t = 1 to 0 in `num_inference_steps` equal steps, or adaptive steps when configured."""
        if self.variance_head is not None and num_inference_steps is None:
            if prefix is not None:
                raise ValueError("inpainting needs a fixed step count: pass num_inference_steps with an adaptive flow")
            return self.sample_adaptive(features, noise)[0]
        steps = num_inference_steps or self.config.num_inference_steps
        sample = noise
        for level, t in zip(*step_levels(steps, noise), strict=True):
            if prefix is not None:  # the known rows at this step's point of the noise-to-action path
                sample = prefix.apply(sample, level * noise + (1.0 - level) * prefix.actions)
            sample = sample - self.velocity(sample, t, features) / steps
        return sample if prefix is None else prefix.apply(sample, prefix.actions)

    def sample_adaptive(self, features: dict[str, torch.Tensor], noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(chunk, steps taken per sample (B,)) with the variance-driven step rule of the module docstring."""
        if self.variance_head is None:
            raise RuntimeError("adaptive sampling needs a policy built with adaptive=True")
        flat = self.obs_encoder.flatten(features)
        sample = noise
        t = torch.ones(noise.shape[0], device=noise.device, dtype=noise.dtype)
        taken = torch.zeros(noise.shape[0], dtype=torch.long, device=noise.device)
        while bool((t > 0).any()):
            std = torch.exp(0.5 * self.variance_head(sample, t, flat))
            step = torch.minimum((self.config.adaptive_eta / std).clamp(min=self.config.adaptive_min_step), t)
            sample = sample - step[:, None, None] * self.velocity(sample, t, features)
            taken += (t > 0).long()
            t = torch.where(t - step <= 1e-6, torch.zeros_like(t), t - step)
        return sample, taken
