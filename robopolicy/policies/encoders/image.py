"""Image encoder: ResNet-18 with GroupNorm (EMA-safe, batch-independent), keypoint or average pooling.

Layer names follow torchvision's ResNet-18 so that its ImageNet weights, saved on disk by the
user, load into the convolutions; BatchNorm statistics are dropped and its affine
parameters seed the GroupNorm ones.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robopolicy.policies.encoders.config import ImageEncoderConfig

log = logging.getLogger(__name__)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with groups of 16 channels (at least one group)."""
    return nn.GroupNorm(max(1, channels // 16), channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = group_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = group_norm(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), group_norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18Trunk(nn.Module):
    """ResNet-18 without its classifier: (N, C, H, W) -> (N, 8 * base_width, H / 32, W / 32)."""

    def __init__(self, in_channels: int = 3, base_width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False)
        self.bn1 = group_norm(base_width)
        widths = [base_width * 2**i for i in range(4)]
        stages, channels = [], base_width
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(channels, width, stride), BasicBlock(width, width, 1)))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_torchvision_weights(self, path: str | Path) -> None:
        """Load a torchvision ResNet-18 state dict (.safetensors, or .pt/.pth read with weights_only)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights not found at {path}; robopolicy never downloads them")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if "conv1.weight" not in usable:
            raise ValueError(f"{path} holds no ResNet-18 convolution weights matching base_width / in_channels")
        self.load_state_dict(usable, strict=False)
        log.info("loaded %d of %d tensors from %s", len(usable), len(own), path)


class SpatialSoftmax(nn.Module):
    """(N, C, H, W) -> (N, 2K): expected x, y in [-1, 1] of K learned keypoint heat maps."""

    def __init__(self, in_channels: int, num_keypoints: int):
        super().__init__()
        self.keypoints = nn.Conv2d(in_channels, num_keypoints, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        heat = self.keypoints(features)
        n, k, h, w = heat.shape
        weights = torch.softmax(heat.reshape(n, k, h * w), dim=-1).reshape(n, k, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=heat.device, dtype=heat.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=heat.device, dtype=heat.dtype)
        x = (weights.sum(dim=2) * xs).sum(dim=-1)
        y = (weights.sum(dim=3) * ys).sum(dim=-1)
        return torch.stack([x, y], dim=-1).reshape(n, 2 * k)


def crop(images: torch.Tensor, size: tuple[int, int], random: bool) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, h, w): a random window per image when `random`, else the centre."""
    n, c, h, w = images.shape
    ch, cw = size
    if (ch, cw) == (h, w):
        return images
    if ch > h or cw > w:
        raise ValueError(f"crop {size} is larger than the images ({h}, {w})")
    if not random:
        top, left = (h - ch) // 2, (w - cw) // 2
        return images[:, :, top : top + ch, left : left + cw]
    top = torch.randint(0, h - ch + 1, (n, 1), device=images.device)
    left = torch.randint(0, w - cw + 1, (n, 1), device=images.device)
    rows = (top + torch.arange(ch, device=images.device))[:, None, :, None]
    cols = (left + torch.arange(cw, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return images[batch, channel, rows, cols]


def trunk_output_size(size: int) -> int:
    """Side of the trunk's feature map for an input side: five stride-2 stages, each rounding up."""
    for _ in range(5):
        size = (size - 1) // 2 + 1
    return size


class ImageEncoder(nn.Module):
    """(N, C, H, W) float images -> (N, feature_dim): crop, ResNet-18 trunk, pooling, projection."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], config: ImageEncoderConfig):
        super().__init__()
        self.config = config
        size = config.crop_shape or image_size
        if config.crop_shape is not None and (size[0] > image_size[0] or size[1] > image_size[1]):
            raise ValueError(f"crop_shape {list(size)} is larger than the images {list(image_size)}")
        if config.pool == "spatial_softmax" and min(trunk_output_size(s) for s in size) < 2:
            raise ValueError(f"{list(size)} images give a 1x1 feature map, on which spatial softmax sees nothing; "
                             "use images (or crops) of at least 33 pixels, or pool='avg'")
        self.trunk = ResNet18Trunk(in_channels, config.base_width)
        if config.pretrained_path:
            self.trunk.load_torchvision_weights(config.pretrained_path)
        channels = self.trunk.out_channels
        if config.pool == "spatial_softmax":
            self.pool = SpatialSoftmax(channels, config.num_keypoints)
            pooled = 2 * config.num_keypoints
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            pooled = channels
        self.project = nn.Linear(pooled, config.feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.config.crop_shape is not None:
            images = crop(images, self.config.crop_shape, random=self.training)
        return self.project(self.pool(self.trunk(images)))
