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


class MaxOfLinear(torch.autograd.Function):
    """max over points of a per-point Linear, whose backward touches only each channel's winning point.

    The gradient of a max reaches one point per channel, so the last layer's weight and input gradients are a
    gather and a scatter of C rows instead of two (points x C x K) matrix products; the values and gradients are
    the plain Linear-then-max's (up to summation order). It is the last layer of the per-point MLP, whose backward
    was most of a point-cloud training step on the CPU (bench.train_step --pointcloud).
    """

    @staticmethod
    def forward(ctx, points: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        values, index = nn.functional.linear(points, weight, bias).max(dim=-2)
        ctx.save_for_backward(points, weight, index)
        return values

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        points, weight, index = ctx.saved_tensors  # (..., P, K), (C, K), (..., C)
        n_points, width = points.shape[-2:]
        flat_points = points.reshape(-1, n_points, width)
        rows = index.reshape(flat_points.shape[0], -1, 1).expand(-1, -1, width)  # (N, C, K)
        flat_grad = grad.reshape(flat_points.shape[0], -1)  # (N, C)
        grad_points = grad_weight = grad_bias = None  # each in its input's dtype (autocast may mix them)
        if ctx.needs_input_grad[0]:
            spread = (flat_grad.unsqueeze(-1) * weight).to(points.dtype)
            grad_points = torch.zeros_like(flat_points).scatter_add_(1, rows, spread).reshape(points.shape)
        if ctx.needs_input_grad[1]:
            winners = flat_points.gather(1, rows).to(grad.dtype)
            grad_weight = torch.einsum("nc,nck->ck", flat_grad, winners).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = flat_grad.sum(0).to(weight.dtype)
        return grad_points, grad_weight, grad_bias


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
        clouds = clouds[..., : self.in_channels]
        if not torch.is_grad_enabled():  # inference and export: plain operators, the same values
            return self.head(self.points(clouds).amax(dim=-2))
        last = self.points[-1]
        return self.head(MaxOfLinear.apply(self.points[:-1](clouds), last.weight, last.bias))
