"""ObsEncoder: one encoder per shape_meta key (or one shared image trunk), features per step."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.policies.encoders.config import EncoderConfig
from robopolicy.policies.encoders.image import ImageEncoder
from robopolicy.policies.encoders.lowdim import LowDimEncoder
from robopolicy.policies.encoders.pointcloud import PointCloudEncoder
from robopolicy.policies.encoders.text import make_text_encoder


class ObsEncoder(nn.Module):
    """Normalized obs {key: (B, T_k, ...)} -> {key: (B, T_k, F_k)}; `flatten` gives one (B, D) vector.

    rgb keys take (C, H, W) float images, depth keys (H, W) frames (encoded as one-channel
    images), point_cloud keys (P, 3|6) clouds, low_dim keys vectors of their shape, and text keys
    (L,) byte tokens of the instruction (one step), whose embedding so enters every family's
    conditioning as any other key's features do.
    """

    def __init__(self, shape_meta: ShapeMeta, config: EncoderConfig, n_obs_steps: int):
        super().__init__()
        self.steps = {key: spec.horizon or n_obs_steps for key, spec in shape_meta.obs.items()}
        self.encoders = nn.ModuleDict()
        self.feature_dims: dict[str, int] = {}
        shared_image: ImageEncoder | None = None
        for key, spec in shape_meta.obs.items():
            if spec.type in ("rgb", "depth"):
                channels, size = (spec.shape[0], spec.shape[1:]) if spec.type == "rgb" else (1, spec.shape)
                if config.image.share_weights and spec.type == "rgb":
                    shared_image = shared_image or ImageEncoder(channels, size, config.image)
                    encoder: nn.Module = shared_image
                else:
                    encoder = ImageEncoder(channels, size, config.image)
                self.feature_dims[key] = config.image.feature_dim
            elif spec.type == "text":
                encoder = make_text_encoder(spec.shape[0], config.text)
                self.feature_dims[key] = config.text.feature_dim
            elif spec.type == "point_cloud":
                encoder = PointCloudEncoder(spec.shape[-1], config.point_cloud)
                self.feature_dims[key] = config.point_cloud.feature_dim
            else:
                encoder = LowDimEncoder(math.prod(spec.shape), config.low_dim)
                self.feature_dims[key] = encoder.feature_dim
            self.encoders[key] = encoder
        self.types = {key: spec.type for key, spec in shape_meta.obs.items()}

    @property
    def output_dim(self) -> int:
        """Length of the flattened feature vector over all keys and steps."""
        return sum(self.steps[k] * self.feature_dims[k] for k in self.encoders)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = {}
        for key, encoder in self.encoders.items():
            values = obs[key]
            batch, steps = values.shape[:2]
            if steps != self.steps[key]:
                raise ValueError(f"obs[{key!r}] has {steps} steps, the encoder expects {self.steps[key]}")
            flat = values.reshape(batch * steps, *values.shape[2:])
            if self.types[key] == "depth":
                flat = flat.unsqueeze(1)
            features[key] = encoder(flat).reshape(batch, steps, -1)
        return features

    def flatten(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """{key: (B, T_k, F_k)} -> (B, output_dim), keys in shape_meta order."""
        return torch.cat([features[k].flatten(1) for k in self.encoders], dim=-1)
