"""ACTConfig: the shared horizons and encoder plus ACT's transformer, CVAE and ensembling settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from robopolicy.policies.base import PolicyConfig


@dataclass
class ACTConfig(PolicyConfig):
    """ACT settings; `horizon` is ACT's chunk size."""

    d_model: int = 256  # token width of every ACT transformer
    n_heads: int = 8  # attention heads per layer; must divide d_model
    n_encoder_layers: int = 4  # self-attention layers over [latent token, obs tokens]
    n_decoder_layers: int = 4  # layers of the chunk decoder (the original ACT configures 7; ours is kept small)
    n_vae_encoder_layers: int = 4  # layers of the training-only encoder over [CLS, action chunk]
    latent_dim: int = 32  # size of the style latent z
    kl_weight: float = 10.0  # weight of KL(q(z | chunk) || N(0, I)) against the L1 action loss
    dropout: float = 0.1  # dropout inside all transformer layers
    temporal_ensemble: bool = False  # act on the mean of all stored chunks' predictions for the current step
    ensemble_coeff: float = 0.01  # ensembling weight exp(-coeff * i), i = 0 the oldest prediction

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = (self.d_model, self.n_heads, self.n_encoder_layers, self.n_decoder_layers,
                 self.n_vae_encoder_layers, self.latent_dim)
        if min(sizes) < 1:
            raise ValueError("ACT d_model, n_heads, layer counts and latent_dim must be positive")
        if self.d_model % self.n_heads:
            raise ValueError(f"ACT d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.kl_weight < 0:
            raise ValueError(f"ACT kl_weight must be >= 0, got {self.kl_weight}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ACT dropout must be in [0, 1), got {self.dropout}")
        if not math.isfinite(self.ensemble_coeff):
            raise ValueError(f"ACT ensemble_coeff must be finite, got {self.ensemble_coeff}")
        if self.temporal_ensemble and self.n_action_steps != 1:
            raise ValueError(
                "temporal_ensemble needs n_action_steps == 1 (the policy is queried every step), "
                f"got {self.n_action_steps}"
            )
