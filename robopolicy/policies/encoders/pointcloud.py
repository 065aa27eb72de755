"""Point-cloud encoders: (N, P, 3|6) -> (N, feature_dim), invariant to the order of the points."""

from __future__ import annotations

import torch
from torch import nn

from robopolicy.policies.encoders.config import PointCloudEncoderConfig


def point_mlp(widths: list[int], norm: bool) -> nn.Sequential:
    """Shared per-point MLP (Linear over the last axis), LayerNorm before each ReLU when `norm`."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(widths) - 2:
            layers += [nn.LayerNorm(fan_out), nn.ReLU()] if norm else [nn.ReLU()]
    return nn.Sequential(*layers)


class PointCloudEncoder(nn.Module):
    """Per-point MLP, max over points, projection.

    dp3: 3->64->128->256 with LayerNorm, max-pool, Linear to feature_dim, LayerNorm (DP3's design).
    pointnet: 3->64->128->512 without norms, max-pool, then a 512->256->feature_dim MLP head.
    """

    def __init__(self, point_channels: int, config: PointCloudEncoderConfig):
        super().__init__()
        self.in_channels = point_channels if config.use_rgb else 3
        if config.use_rgb and point_channels < 6:
            raise ValueError(f"use_rgb needs (N, 6) clouds, shape_meta gives {point_channels} channels")
        if config.kind == "dp3":
            self.points = point_mlp([self.in_channels, 64, 128, 256], norm=True)
            self.head = nn.Sequential(nn.Linear(256, config.feature_dim), nn.LayerNorm(config.feature_dim))
        else:
            self.points = point_mlp([self.in_channels, 64, 128, 512], norm=False)
            self.head = nn.Sequential(nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, config.feature_dim))

    def forward(self, clouds: torch.Tensor) -> torch.Tensor:
        return self.head(self.points(clouds[..., : self.in_channels]).amax(dim=-2))
