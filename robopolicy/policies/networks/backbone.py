"""The denoising backbone a diffusion or flow policy uses: the 1-D U-Net or the action transformer.

Both map (sample (B, horizon, Da), step or time (B,), features {key: (B, T_k, F_k)}) to (B, horizon, Da).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from robopolicy.policies.networks.transformer import (
    ActionTransformer,
    TransformerConfig,
)
from robopolicy.policies.networks.unet1d import UNet1D, UNetConfig
from robopolicy.settings import build_settings

BACKBONES = ("unet", "transformer")


@dataclass
class BackboneConfig:
    """Which backbone, and the settings of each."""

    kind: str = "unet"
    unet: UNetConfig = field(default_factory=UNetConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    def __post_init__(self) -> None:
        if self.kind not in BACKBONES:
            raise ValueError(f"backbone kind must be one of {BACKBONES}, got {self.kind!r}")
        if isinstance(self.unet, Mapping):
            self.unet = build_settings(UNetConfig, self.unet, "backbone.unet")
        if isinstance(self.transformer, Mapping):
            self.transformer = build_settings(TransformerConfig, self.transformer, "backbone.transformer")


def backbone_config(value: BackboneConfig | Mapping[str, Any], horizon: int) -> BackboneConfig:
    """The backbone settings of a policy config, checked against its horizon."""
    config = value if isinstance(value, BackboneConfig) else build_settings(BackboneConfig, value, "backbone")
    if config.kind == "unet":
        config.unet.check_horizon(horizon)
    return config


def make_backbone(config: BackboneConfig, action_dim: int, horizon: int, feature_dims: Mapping[str, int],
                  steps: Mapping[str, int]) -> nn.Module:
    """Build the configured backbone for these action and feature sizes."""
    if config.kind == "unet":
        return UNet1D(action_dim, horizon, feature_dims, steps, config.unet)
    return ActionTransformer(action_dim, horizon, dict(feature_dims), dict(steps), config.transformer)
