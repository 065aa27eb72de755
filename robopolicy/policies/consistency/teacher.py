"""A trained diffusion or flow policy's deterministic sampler, seen in flow coordinates.

Flow policies sample x_t = t * noise + (1 - t) * action from t = 1 to 0. A diffusion
policy's point x_k = sqrt(a_k) * action + sqrt(1 - a_k) * noise (a_k = alpha_bar at training
step k) is the same path scaled by sqrt(a_k) + sqrt(1 - a_k), at t = sqrt(1 - a_k) /
(sqrt(a_k) + sqrt(1 - a_k)). In these coordinates a DDIM step (eta = 0) and a flow Euler step
are the same move: keep the predicted clean chunk and noise, and mix them at the next time.
So one student parameterization serves both kinds of teacher.
"""

from __future__ import annotations

import numpy as np
import torch

from robopolicy.policies.denoising import DenoisingPolicy
from robopolicy.policies.diffusion.model import DiffusionPolicy
from robopolicy.policies.flow.model import FlowPolicy


class TeacherODE:
    """`steps` deterministic teacher steps: grid times t_0 > ... > t_N = 0 and `step` between neighbours."""

    def __init__(self, policy: DenoisingPolicy, steps: int):
        if isinstance(policy, FlowPolicy):
            times = np.linspace(1.0, 0.0, steps + 1)
            self.alpha_bar = None
        elif isinstance(policy, DiffusionPolicy):
            total = policy.config.noise.num_train_timesteps
            # "trailing" timesteps (from the noisiest step, total - 1), so the grid starts at t near 1
            timesteps = np.round(np.arange(total, 0, -total / steps)).astype(np.int64) - 1
            alpha_bar = policy.train_scheduler.alphas_cumprod.double().numpy()[timesteps]
            times = np.append(np.sqrt(1 - alpha_bar) / (np.sqrt(alpha_bar) + np.sqrt(1 - alpha_bar)), 0.0)
            self.alpha_bar = torch.tensor(alpha_bar, dtype=torch.float32)
            self.timesteps = torch.tensor(timesteps, dtype=torch.float32)
        else:
            raise TypeError(f"a teacher must be a diffusion or flow policy, not {type(policy).__name__}")
        self.policy = policy.eval().requires_grad_(False)
        self.times = torch.tensor(times, dtype=torch.float32)

    def to(self, device: torch.device) -> TeacherODE:
        self.policy.to(device)
        self.times = self.times.to(device)
        if self.alpha_bar is not None:
            self.alpha_bar, self.timesteps = self.alpha_bar.to(device), self.timesteps.to(device)
        return self

    @torch.no_grad()
    def step(self, sample: torch.Tensor, index: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Samples (B, H, Da) at grid times `index` (B,) -> the teacher's samples at index + 1."""
        t, t_next = self.times[index], self.times[index + 1]
        if self.alpha_bar is None:
            velocity = self.policy.velocity(sample, t, features)
            return sample - (t - t_next)[:, None, None] * velocity
        policy: DiffusionPolicy = self.policy
        signal, level = self.alpha_bar[index].sqrt()[:, None, None], (1 - self.alpha_bar[index]).sqrt()[:, None, None]
        noisy = sample * (signal + level)
        output = policy.backbone(noisy, self.timesteps[index], features)
        if policy.config.noise.prediction_type == "epsilon":
            clean, noise = (noisy - level * output) / signal, output
        else:
            clean, noise = output, (noisy - signal * output) / level
        if policy.config.noise.clip_sample:
            clean = clean.clamp(-1.0, 1.0)
        t_next = t_next[:, None, None]
        return t_next * noise + (1 - t_next) * clean
