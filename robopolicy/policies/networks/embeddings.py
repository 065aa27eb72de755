"""Sinusoidal embedding of a scalar per sample (a diffusion step or a flow time)."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    """(B,) float -> (B, dim) sin/cos features at geometric frequencies (periods up to 10,000)."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        half = dim // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1))
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        angles = values.float()[:, None] * self.frequencies[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)
