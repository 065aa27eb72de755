"""Low-dim encoder: the vector itself, or a two-layer MLP."""

from __future__ import annotations

import torch
from torch import nn

from robopolicy.policies.encoders.config import LowDimEncoderConfig


class LowDimEncoder(nn.Module):
    """(N, *shape) -> (N, feature_dim); identity flattens, mlp maps through one hidden layer."""

    def __init__(self, in_dim: int, config: LowDimEncoderConfig):
        super().__init__()
        if config.kind == "identity":
            self.net: nn.Module = nn.Flatten()
            self.feature_dim = in_dim
        else:
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, config.hidden_dim), nn.Mish(),
                                     nn.Linear(config.hidden_dim, config.feature_dim))
            self.feature_dim = config.feature_dim

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.net(values)
