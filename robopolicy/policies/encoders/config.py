"""Encoder settings: one validated dataclass per input type, gathered in EncoderConfig."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from robopolicy.settings import build_settings

IMAGE_POOLS = ("spatial_softmax", "avg")
POINT_CLOUD_KINDS = ("dp3", "pointnet")
LOW_DIM_KINDS = ("identity", "mlp")
TEXT_KINDS = ("learned", "pretrained")


@dataclass
class ImageEncoderConfig:
    """ResNet-18 trunk with GroupNorm, pooled to keypoints or an average, projected to feature_dim."""

    base_width: int = 64  # channels of the first stage (64 is the standard ResNet-18)
    pool: str = "spatial_softmax"  # "spatial_softmax" (num_keypoints x/y pairs) or "avg" (global average)
    num_keypoints: int = 32
    feature_dim: int = 64  # output features per image and step
    crop_shape: tuple[int, int] | None = (84, 84)  # random crop when training, centre crop when evaluating
    share_weights: bool = False  # one trunk for every camera instead of one per camera
    pretrained_path: str | None = None  # torchvision-layout ResNet-18 weights on disk (never downloaded)

    def __post_init__(self) -> None:
        if self.pool not in IMAGE_POOLS:
            raise ValueError(f"image pool must be one of {IMAGE_POOLS}, got {self.pool!r}")
        if self.base_width < 1 or self.feature_dim < 1 or self.num_keypoints < 1:
            raise ValueError("image base_width, feature_dim and num_keypoints must be positive")
        if self.crop_shape is not None:
            self.crop_shape = tuple(int(v) for v in self.crop_shape)
            if len(self.crop_shape) != 2 or min(self.crop_shape) < 1:
                raise ValueError(f"image crop_shape must be [height, width], got {self.crop_shape}")


@dataclass
class PointCloudEncoderConfig:
    """Per-point MLP, max-pooled over points: DP3's encoder or a wider PointNet without T-nets."""

    kind: str = "dp3"
    feature_dim: int = 64
    use_rgb: bool = False  # use channels 3..5 of (N, 6) clouds as inputs too

    def __post_init__(self) -> None:
        if self.kind not in POINT_CLOUD_KINDS:
            raise ValueError(f"point_cloud kind must be one of {POINT_CLOUD_KINDS}, got {self.kind!r}")


@dataclass
class LowDimEncoderConfig:
    """Low-dim vectors passed through as they are, or through a small MLP."""

    kind: str = "identity"
    hidden_dim: int = 64
    feature_dim: int = 64

    def __post_init__(self) -> None:
        if self.kind not in LOW_DIM_KINDS:
            raise ValueError(f"low_dim kind must be one of {LOW_DIM_KINDS}, got {self.kind!r}")


@dataclass
class TextEncoderConfig:
    """The instruction's encoder (robopolicy.policies.encoders.text): byte tokens through a small transformer
    trained with the policy, or a frozen local transformers model with a trained projection."""

    kind: str = "learned"  # "learned" (no pretrained weights) or "pretrained" (needs pretrained_path)
    feature_dim: int = 64  # the task embedding's size, as it enters the policy's conditioning
    width: int = 64  # learned: byte embedding and transformer width
    layers: int = 2  # learned: transformer layers
    heads: int = 4  # learned: attention heads (must divide width)
    pretrained_path: str | None = None  # pretrained: a directory saved by transformers' save_pretrained

    def __post_init__(self) -> None:
        if self.kind not in TEXT_KINDS:
            raise ValueError(f"text kind must be one of {TEXT_KINDS}, got {self.kind!r}")
        if min(self.feature_dim, self.width, self.layers, self.heads) < 1 or self.width % self.heads:
            raise ValueError(f"text feature_dim, width, layers and heads must be positive and heads must divide "
                             f"width, got {self}")
        if (self.kind == "pretrained") != (self.pretrained_path is not None):
            raise ValueError("text kind=pretrained needs pretrained_path=DIR, and only it takes one")


@dataclass
class EncoderConfig:
    """Settings per obs type; every shape_meta key is encoded by the encoder of its type."""

    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    point_cloud: PointCloudEncoderConfig = field(default_factory=PointCloudEncoderConfig)
    low_dim: LowDimEncoderConfig = field(default_factory=LowDimEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EncoderConfig:
        """Build from nested plain dicts (as a YAML config holds them); unknown keys are errors."""
        parts = {"image": ImageEncoderConfig, "point_cloud": PointCloudEncoderConfig, "low_dim": LowDimEncoderConfig,
                 "text": TextEncoderConfig}
        unknown = set(values) - set(parts)
        if unknown:
            raise ValueError(f"unknown encoder settings {sorted(unknown)}; known: {sorted(parts)}")
        return cls(**{name: build_settings(part, values.get(name), f"encoder.{name}") for name, part in parts.items()})
