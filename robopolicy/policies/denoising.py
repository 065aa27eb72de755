"""What diffusion and flow policies share: encode observations once, then refine noise into a chunk."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.policies.base import Policy, PolicyConfig
from robopolicy.policies.encoders.obs_encoder import ObsEncoder
from robopolicy.policies.networks.backbone import BackboneConfig, make_backbone


class DenoisingPolicy(Policy):
    """Base of chunk generators: ObsEncoder + backbone; subclasses define the loss and `sample`."""

    takes_noise = True

    def __init__(self, config: PolicyConfig, shape_meta: Mapping[str, Any] | ShapeMeta, backbone: BackboneConfig):
        super().__init__(config, shape_meta)
        self.obs_encoder = ObsEncoder(self.shape_meta, config.encoder, config.n_obs_steps)
        self.backbone = make_backbone(backbone, self.action_dim, config.horizon, self.obs_encoder.feature_dims,
                                      self.obs_encoder.steps)

    def encode(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw obs -> encoder features {key: (B, T_k, F_k)}."""
        return self.obs_encoder(self.normalize_obs(obs))

    def training_pair(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(features, normalized action chunk (B, horizon, Da)) of a training batch."""
        action = self.normalize_action(batch["action"]).reshape(-1, self.config.horizon, self.action_dim)
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
               **sampling: Any) -> torch.Tensor:
        """Normalized chunk (B, horizon, Da) refined from `noise` (`generator` seeds any noise drawn on the way)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict_action(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
                       noise: torch.Tensor | None = None, **sampling: Any) -> dict[str, torch.Tensor]:
        """Raw-unit actions; features are computed once, not once per sampling step."""
        features = self.encode(obs)
        reference = next(iter(features.values()))
        start = self.initial_noise(reference.shape[0], reference, generator, noise)
        chunk = self.sample(features, start, generator=generator, **sampling)
        shape = (chunk.shape[0], self.config.horizon, *self.shape_meta.action_shape)
        return self.chunk_to_output(self.unnormalize_action(chunk.reshape(shape)))
