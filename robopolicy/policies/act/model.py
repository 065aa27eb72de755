"""ACTPolicy: Action Chunking with Transformers, a conditional VAE over action chunks.

Training: a VAE encoder reads [CLS, normalized action chunk] (padded steps masked out) and gives
the mean and log-variance of a style latent z; a sample of z becomes one token that, with the
observation tokens (one per obs key and step, from the ObsEncoder), passes through a transformer
encoder; `horizon` learned queries cross-attend to that memory in a transformer decoder and a head
maps them to normalized actions. Loss: masked L1 on normalized actions + kl_weight * KL(q(z) || N(0, I)).
Inference uses z = 0 (the prior mean), so predictions are deterministic.

Unlike the original ACT, the VAE encoder does not read the robot state, and images are one token per
camera and step (the ObsEncoder's pooled features) instead of one per feature-map cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.policies.act.config import ACTConfig
from robopolicy.policies.act.ensemble import TemporalEnsembler
from robopolicy.policies.base import Batch, Policy
from robopolicy.policies.encoders.obs_encoder import ObsEncoder
from robopolicy.policies.networks.tokens import ObsTokens
from robopolicy.policies.networks.transformer import (
    learned_tokens,
    make_decoder,
    make_encoder,
)
from robopolicy.policies.registry import register_policy


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) for (B, Z) inputs: summed over Z, averaged over B (scalar)."""
    return (-0.5 * (1.0 + logvar - mean.square() - logvar.exp())).sum(dim=-1).mean()


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor | None) -> torch.Tensor:
    """Mean |prediction - target| over the steps that are not padding; (B, H, Da), (B, H) bool -> scalar."""
    error = (prediction - target).abs()
    if is_pad is None:
        return error.mean()
    valid = (~is_pad).unsqueeze(-1).to(error.dtype)
    return (error * valid).sum() / (valid.sum() * error.shape[-1]).clamp_min(1.0)


class StyleEncoder(nn.Module):
    """Training-only VAE encoder: (B, H, Da) normalized chunk -> mean, logvar (B, latent_dim) each."""

    def __init__(self, action_dim: int, horizon: int, config: ACTConfig):
        super().__init__()
        self.cls = learned_tokens(1, config.d_model)
        self.action_embed = nn.Linear(action_dim, config.d_model)
        self.position = learned_tokens(1 + horizon, config.d_model)
        self.encoder = make_encoder(config.d_model, config.n_heads, config.n_vae_encoder_layers, config.dropout)
        self.to_latent = nn.Linear(config.d_model, 2 * config.latent_dim)

    def forward(self, action: torch.Tensor, is_pad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        batch = action.shape[0]
        tokens = torch.cat([self.cls.expand(batch, -1, -1), self.action_embed(action)], dim=1) + self.position
        padding = None
        if is_pad is not None:  # the CLS token is never masked, so every row keeps a visible key
            padding = torch.cat([torch.zeros_like(is_pad[:, :1]), is_pad], dim=1)
        summary = self.encoder(tokens, src_key_padding_mask=padding)[:, 0]
        mean, logvar = self.to_latent(summary).chunk(2, dim=-1)
        return mean, logvar


@register_policy("act", ACTConfig)
class ACTPolicy(Policy):
    """ACT over any shape_meta; see the module docstring for the model and the loss."""

    config: ACTConfig

    def __init__(self, config: ACTConfig, shape_meta: Mapping[str, Any] | ShapeMeta):
        super().__init__(config, shape_meta)
        d_model = config.d_model
        self.obs_encoder = ObsEncoder(self.shape_meta, config.encoder, config.n_obs_steps)
        self.style_encoder = StyleEncoder(self.action_dim, config.horizon, config)
        self.latent_embed = nn.Linear(config.latent_dim, d_model)
        self.latent_position = learned_tokens(1, d_model)
        self.obs_tokens = ObsTokens(self.obs_encoder.feature_dims, self.obs_encoder.steps, d_model)
        self.encoder = make_encoder(d_model, config.n_heads, config.n_encoder_layers, config.dropout)
        self.queries = learned_tokens(config.horizon, d_model)
        self.decoder = make_decoder(d_model, config.n_heads, config.n_decoder_layers, config.dropout)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, self.action_dim))
        self.ensembler = TemporalEnsembler(config.ensemble_coeff) if config.temporal_ensemble else None

    def encoder_module(self) -> nn.Module:
        return self.obs_encoder

    def artifact_meta(self) -> dict[str, Any]:
        """The runtime's ensemble blending applies the coefficient the policy would (when it ensembles)."""
        return {"temporal_ensemble_coeff": self.config.ensemble_coeff if self.config.temporal_ensemble else None}

    def prepare_export(self) -> None:
        self.ensembler = None

    def decode(self, obs: Mapping[str, torch.Tensor], latent: torch.Tensor) -> torch.Tensor:
        """Normalized obs {key: (B, To_k, ...)} and z (B, latent_dim) -> normalized chunk (B, horizon, Da)."""
        obs_tokens = self.obs_tokens(self.obs_encoder(obs))
        latent_token = (self.latent_embed(latent) + self.latent_position[0]).unsqueeze(1)
        memory = self.encoder(torch.cat([latent_token, obs_tokens], dim=1))
        queries = self.queries.expand(latent.shape[0], -1, -1)
        return self.head(self.decoder(queries, memory))

    def compute_loss(self, batch: Batch) -> torch.Tensor:
        """Masked L1 on the normalized chunk plus kl_weight * KL of the style latent (scalar)."""
        action = batch["action"]
        expected = (self.config.horizon, self.action_dim)
        if action.shape[1:] != expected:
            raise ValueError(f"batch['action'] must be (B, {expected[0]}, {expected[1]}), got {tuple(action.shape)}")
        is_pad = batch.get("action_is_pad")
        target = self.normalize_action(action, batch["obs"])
        mean, logvar = self.style_encoder(target, is_pad)
        latent = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        prediction = self.decode(self.normalize_obs(batch["obs"]), latent)
        return masked_l1(prediction, target, is_pad) + self.config.kl_weight * kl_to_standard_normal(mean, logvar)

    @torch.inference_mode()
    def predict_action(
        self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None, **sampling: Any
    ) -> dict[str, torch.Tensor]:
        """Raw obs {key: (B, To_k, ...)} -> raw actions; z = 0, so `generator` and `sampling` are unused.

        With temporal ensembling, "action" is (B, 1, Da), the ensembled action for the current step,
        and "action_pred" is this call's chunk (B, horizon, Da).
        """
        normalized = self.normalize_obs(obs)
        batch = next(iter(normalized.values())).shape[0]
        reference = self.latent_position
        latent = torch.zeros(batch, self.config.latent_dim, device=reference.device, dtype=reference.dtype)
        chunk = self.unnormalize_action(self.decode(normalized, latent), obs)
        if self.ensembler is None:
            return self.chunk_to_output(chunk)
        action = self.ensembler.update(chunk[:, self.config.action_start :])
        return {"action": action.unsqueeze(1), "action_pred": chunk}

    def reset(self) -> None:
        """Forget the chunks kept for temporal ensembling (call at the start of each episode)."""
        if self.ensembler is not None:
            self.ensembler.reset()
