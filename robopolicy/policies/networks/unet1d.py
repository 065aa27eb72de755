"""Conditional 1-D U-Net over action chunks (the Diffusion Policy CNN backbone).

Residual blocks of Conv1d + GroupNorm + Mish, each modulated by FiLM (per-channel scale and
bias) from one conditioning vector: the step / time embedding concatenated with the
flattened observation features. Shared by the diffusion and flow families. The length-keeping
convolutions train as matrix products on a CPU (`gemm_conv.Conv1d`, the same layer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from robopolicy.policies.networks.embeddings import SinusoidalEmbedding
from robopolicy.policies.networks.gemm_conv import Conv1d


@dataclass
class UNetConfig:
    """Sizes of the U-Net; horizon must be divisible by 2 ** (len(down_dims) - 1)."""

    down_dims: tuple[int, ...] = (128, 256, 512)  # channels per resolution level
    kernel_size: int = 5
    n_groups: int = 8  # GroupNorm groups in every block
    step_embed_dim: int = 128  # width of the step / time embedding

    def __post_init__(self) -> None:
        self.down_dims = tuple(int(d) for d in self.down_dims)
        if not self.down_dims or any(d % self.n_groups for d in self.down_dims):
            raise ValueError(f"down_dims {self.down_dims} must be non-empty and divisible by n_groups={self.n_groups}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the chunk length, got {self.kernel_size}")

    def check_horizon(self, horizon: int) -> None:
        """Each level but the last halves the chunk, so the horizon must divide evenly."""
        factor = 2 ** (len(self.down_dims) - 1)
        if horizon % factor:
            raise ValueError(f"horizon {horizon} must be divisible by {factor} for a U-Net with {len(self.down_dims)} levels")


class ConvBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish, length preserved."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int):
        super().__init__(
            Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; the first one's output is scaled and shifted per channel by the condition."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.block1 = ConvBlock(in_channels, out_channels, kernel_size, n_groups)
        self.block2 = ConvBlock(out_channels, out_channels, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_channels))
        self.residual = Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        out = self.block1(x) * scale + bias
        return self.block2(out) + self.residual(x)


class UNet1D(nn.Module):
    """(B, horizon, Da) sample, (B,) step or time, {key: (B, T_k, F_k)} features -> (B, horizon, Da)."""

    def __init__(self, action_dim: int, horizon: int, feature_dims: Mapping[str, int], steps: Mapping[str, int],
                 config: UNetConfig):
        super().__init__()
        config.check_horizon(horizon)
        self.keys = list(feature_dims)
        embed = config.step_embed_dim
        self.step_encoder = nn.Sequential(
            SinusoidalEmbedding(embed), nn.Linear(embed, 4 * embed), nn.Mish(), nn.Linear(4 * embed, embed)
        )
        cond_dim = embed + sum(feature_dims[k] * steps[k] for k in self.keys)
        dims = [action_dim, *config.down_dims]
        block = partial(FiLMResidualBlock, cond_dim=cond_dim, kernel_size=config.kernel_size, n_groups=config.n_groups)
        self.down = nn.ModuleList()
        for level, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = level == len(dims) - 2
            resample = nn.Identity() if last else nn.Conv1d(fan_out, fan_out, 3, 2, 1)
            self.down.append(nn.ModuleList([block(fan_in, fan_out), block(fan_out, fan_out), resample]))
        self.mid = nn.ModuleList([block(dims[-1], dims[-1]), block(dims[-1], dims[-1])])
        self.up = nn.ModuleList()
        for level, (fan_out, fan_in) in enumerate(reversed(list(zip(dims[1:-1], dims[2:])))):
            self.up.append(nn.ModuleList([block(2 * fan_in, fan_out), block(fan_out, fan_out),
                                          nn.ConvTranspose1d(fan_out, fan_out, 4, 2, 1)]))
        self.final = nn.Sequential(ConvBlock(dims[1], dims[1], config.kernel_size, config.n_groups),
                                   Conv1d(dims[1], action_dim, 1))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        cond = torch.cat([self.step_encoder(timestep), *(features[k].flatten(1) for k in self.keys)], dim=-1)
        x = sample.transpose(1, 2)
        skips = []
        for first, second, downsample in self.down:
            x = second(first(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for mid in self.mid:
            x = mid(x, cond)
        for first, second, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(second(first(x, cond), cond))
        return self.final(x).transpose(1, 2)
