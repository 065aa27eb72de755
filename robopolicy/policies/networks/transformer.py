"""Denoising action transformer: a noisy action chunk, a time step and observation features in,
one value per action step out (noise, a clean sample or a velocity, as the policy trains it).

The idea follows Diffusion Policy's transformer backbone: every action step is a token; the time
step and the observations are conditioning tokens, read either through cross-attention (a decoder
over the action tokens) or in context (prepended to the action tokens in one encoder). It shares
the signature of the 1-D U-Net, so the diffusion and flow policies can swap backbones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from robopolicy.policies.networks.embeddings import SinusoidalEmbedding
from robopolicy.policies.networks.tokens import ObsTokens

CONDITIONINGS = ("cross_attention", "in_context")


@dataclass
class TransformerConfig:
    """Size and conditioning of the ActionTransformer."""

    d_model: int = 256  # width of every token
    n_heads: int = 4  # attention heads per layer; must divide d_model
    n_layers: int = 8  # decoder layers (cross_attention) or encoder layers (in_context)
    dropout: float = 0.1  # dropout on token embeddings, attention weights and feed-forward outputs
    conditioning: str = "cross_attention"  # time/obs tokens as decoder memory, or "in_context": prepended to actions
    causal: bool = True  # an action token never attends to later action tokens (time/obs tokens stay visible)

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"transformer conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}")
        if min(self.d_model, self.n_heads, self.n_layers) < 1:
            raise ValueError("transformer d_model, n_heads and n_layers must be positive")
        if self.d_model % self.n_heads:
            raise ValueError(f"transformer d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"transformer dropout must be in [0, 1), got {self.dropout}")


def make_encoder(d_model: int, n_heads: int, n_layers: int, dropout: float,
                 final_norm: bool = True) -> nn.TransformerEncoder:
    """Pre-norm self-attention stack over (B, N, d_model) tokens (feed-forward width 4 * d_model)."""
    layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    norm = nn.LayerNorm(d_model) if final_norm else None
    return nn.TransformerEncoder(layer, n_layers, norm=norm, enable_nested_tensor=False)


def make_decoder(d_model: int, n_heads: int, n_layers: int, dropout: float) -> nn.TransformerDecoder:
    """Pre-norm decoder stack: (B, N, d_model) queries attend to themselves and to a memory.

    No final norm: callers end with their own LayerNorm + Linear head.
    """
    layer = nn.TransformerDecoderLayer(d_model, n_heads, 4 * d_model, dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerDecoder(layer, n_layers)


def causal_mask(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(size, size) bool attention mask, True where query i would see a later key j > i (blocked)."""
    return torch.ones(size, size, dtype=torch.bool, device=device).triu(diagonal=1)


def learned_tokens(n_tokens: int, d_model: int) -> nn.Parameter:
    """(1, n_tokens, d_model) learned embedding (positions, queries, a CLS token), initialised small."""
    return nn.Parameter(torch.randn(1, n_tokens, d_model) * 0.02)


class ActionTransformer(nn.Module):
    """(B, horizon, Da) noisy chunk, (B,) time step, {key: (B, T_k, F_k)} features -> (B, horizon, Da)."""

    def __init__(self, action_dim: int, horizon: int, feature_dims: Mapping[str, int], steps: Mapping[str, int],
                 config: TransformerConfig):
        super().__init__()
        d_model = config.d_model
        self.config = config
        self.action_dim = action_dim
        self.horizon = horizon
        self.action_embed = nn.Linear(action_dim, d_model)
        self.action_position = learned_tokens(horizon, d_model)
        self.time_embed = nn.Sequential(SinusoidalEmbedding(d_model), nn.Linear(d_model, 4 * d_model), nn.Mish(),
                                        nn.Linear(4 * d_model, d_model))
        self.obs_tokens = ObsTokens(feature_dims, steps, d_model)
        self.token_dropout = nn.Dropout(config.dropout)
        if config.conditioning == "cross_attention":
            self.blocks: nn.Module = make_decoder(d_model, config.n_heads, config.n_layers, config.dropout)
        else:
            self.blocks = make_encoder(d_model, config.n_heads, config.n_layers, config.dropout, final_norm=False)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, action_dim))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """sample (B, horizon, Da); timestep (B,) float (a 0-d tensor is broadcast); features {key: (B, T_k, F_k)}."""
        batch = sample.shape[0]
        if sample.shape[1:] != (self.horizon, self.action_dim):
            raise ValueError(f"sample must be (B, {self.horizon}, {self.action_dim}), got {tuple(sample.shape)}")
        timestep = timestep.expand(batch) if timestep.dim() == 0 else timestep
        if timestep.shape != (batch,):
            raise ValueError(f"timestep must be (B,) = ({batch},), got {tuple(timestep.shape)}")
        actions = self.token_dropout(self.action_embed(sample) + self.action_position)
        context = self.token_dropout(torch.cat([self.time_embed(timestep)[:, None], self.obs_tokens(features)], dim=1))
        if self.config.conditioning == "cross_attention":
            mask = causal_mask(self.horizon, sample.device) if self.config.causal else None
            out = self.blocks(actions, context, tgt_mask=mask)
        else:
            mask = self._in_context_mask(context.shape[1], sample.device) if self.config.causal else None
            out = self.blocks(torch.cat([context, actions], dim=1), mask=mask)[:, context.shape[1]:]
        return self.head(out)

    def _in_context_mask(self, n_context: int, device: torch.device) -> torch.Tensor:
        """(C + H, C + H) bool mask for [context, actions]: actions see the context and earlier actions.

        Context tokens see only the context; if they saw actions, a later action could reach an
        earlier one through them in the next layer.
        """
        size = n_context + self.horizon
        mask = torch.zeros(size, size, dtype=torch.bool, device=device)
        mask[:n_context, n_context:] = True
        mask[n_context:, n_context:] = causal_mask(self.horizon, device)
        return mask
