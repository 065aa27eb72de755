"""What diffusion and flow policies share: encode observations once, then refine noise into a chunk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.policies.base import Policy, PolicyConfig
from robopolicy.policies.encoders.obs_encoder import ObsEncoder
from robopolicy.policies.networks.backbone import BackboneConfig, make_backbone


def step_times(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """(steps, B) network time inputs, built once before a sampling loop so that the loop allocates none."""
    return torch.tensor(list(values), dtype=like.dtype, device=like.device)[:, None].expand(-1, like.shape[0])


@dataclass
class Prefix:
    """Chunk rows to keep while sampling (inpainting): normalized actions (B, horizon, Da), mask (B, horizon, 1)."""

    actions: torch.Tensor
    mask: torch.Tensor

    def apply(self, sample: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """`sample` with the masked rows replaced by `known` (a plain blend, so tracing keeps no branch)."""
        return sample + self.mask * (known - sample)


class DenoisingPolicy(Policy):
    """Base of chunk generators: ObsEncoder + backbone; subclasses define the loss and `sample`."""

    takes_noise = True

    def __init__(self, config: PolicyConfig, shape_meta: Mapping[str, Any] | ShapeMeta, backbone: BackboneConfig):
        super().__init__(config, shape_meta)
        self.obs_encoder = ObsEncoder(self.shape_meta, config.encoder, config.n_obs_steps)
        self.backbone = make_backbone(backbone, self.action_dim, config.horizon, self.obs_encoder.feature_dims,
                                      self.obs_encoder.steps)

    def encoder_module(self) -> nn.Module:
        return self.obs_encoder

    def encode(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw obs -> encoder features {key: (B, T_k, F_k)}."""
        return self.obs_encoder(self.normalize_obs(obs))

    def training_pair(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(features, normalized action chunk (B, horizon, Da)) of a training batch."""
        action = self.normalize_action(batch["action"], batch["obs"]).reshape(-1, self.config.horizon, self.action_dim)
        return self.encode(batch["obs"]), action

    def initial_noise(self, batch_size: int, reference: torch.Tensor, generator: torch.Generator | None,
                      noise: torch.Tensor | None) -> torch.Tensor:
        """(B, horizon, Da) standard normal noise: given, or drawn from `generator`."""
        shape = (batch_size, self.config.horizon, self.action_dim)
        if noise is not None:
            if tuple(noise.shape) != shape:
                raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
            return noise.to(reference)
        device = generator.device if generator is not None else reference.device
        return torch.randn(shape, generator=generator, dtype=reference.dtype, device=device).to(reference.device)

    def sample(self, features: dict[str, torch.Tensor], noise: torch.Tensor, generator: torch.Generator | None = None,
               prefix: Prefix | None = None, **sampling: Any) -> torch.Tensor:
        """Normalized chunk (B, horizon, Da) refined from `noise` (`generator` seeds any noise drawn on the way),
        with `prefix` rows held at their actions (noised to each step's level) when given."""
        raise NotImplementedError

    @torch.inference_mode()
    def predict_action(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
                       noise: torch.Tensor | None = None, prefix: torch.Tensor | None = None,
                       prefix_mask: torch.Tensor | None = None, **sampling: Any) -> dict[str, torch.Tensor]:
        """Raw-unit actions; features are computed once, not once per sampling step.

        `prefix` (B, horizon, Da) raw actions and `prefix_mask` (B, horizon) in {0, 1} fix chunk rows:
        the actions already committed to the robot, so that the new chunk continues them (real-time
        chunking by inpainting)."""
        features = self.encode(obs)
        reference = next(iter(features.values()))
        start = self.initial_noise(reference.shape[0], reference, generator, noise)
        if prefix is not None:
            if prefix_mask is None:
                raise ValueError("prefix needs prefix_mask (B, horizon): 1 for rows to keep, 0 for rows to sample")
            known = self.normalize_action(prefix.to(start), obs).reshape(start.shape)
            sampling["prefix"] = Prefix(known, prefix_mask.to(start).reshape(*start.shape[:2], 1))
        chunk = self.sample(features, start, generator=generator, **sampling)
        shape = (chunk.shape[0], self.config.horizon, *self.shape_meta.action_shape)
        return self.chunk_to_output(self.unnormalize_action(chunk.reshape(shape), obs))
