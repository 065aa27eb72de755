"""Conv1d that trains faster on a CPU: the same layer as nn.Conv1d, computed as one matrix product.

The U-Net convolves short chunks (16, 8 and 4 steps) over wide channels; on a CPU most of its training step
went to oneDNN's convolution backward. Unfolding the input (im2col) turns forward, weight gradient and input
gradient into three plain matrix products, 1.5x faster per training step (bench/train_step.py). Parameters,
outputs and gradients are nn.Conv1d's up to float rounding (tests/policies/test_gemm_conv.py); only training on
the CPU takes this path (not under autocast), so evaluation, export and artifacts run the standard convolution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _Conv1dAsMatmul(torch.autograd.Function):
    """Stride-1, same-length Conv1d as im2col + matmul, with its backward written out the same way."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pad: int) -> torch.Tensor:
        batch, in_channels, length = x.shape
        out_channels, _, kernel = weight.shape
        if kernel == 1:
            columns = x.transpose(1, 2).reshape(batch * length, in_channels)
        else:  # (B, Ci, L + 2 pad) -> windows (B, Ci, L, K) -> rows (B * L, Ci * K)
            columns = F.pad(x, (pad, pad)).unfold(2, kernel, 1).permute(0, 2, 1, 3).reshape(batch * length, -1)
        flat_weight = weight.reshape(out_channels, -1).t()
        out = columns @ flat_weight if bias is None else torch.addmm(bias, columns, flat_weight)
        ctx.save_for_backward(columns, weight)
        ctx.sizes, ctx.pad, ctx.has_bias = (batch, in_channels, length, out_channels, kernel), pad, bias is not None
        return out.reshape(batch, length, out_channels).transpose(1, 2).contiguous()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, None]:
        columns, weight = ctx.saved_tensors
        batch, in_channels, length, out_channels, kernel = ctx.sizes
        rows = grad_out.transpose(1, 2).reshape(batch * length, out_channels)
        grad_weight = (rows.t() @ columns).reshape(weight.shape)
        grad_bias = rows.sum(0) if ctx.has_bias else None
        grad_columns = rows @ weight.reshape(out_channels, -1)
        if kernel == 1:
            grad_x = grad_columns.reshape(batch, length, in_channels).transpose(1, 2).contiguous()
        else:  # col2im: each window's gradient added back where the window read
            windows = grad_columns.reshape(batch, length, in_channels * kernel).transpose(1, 2)
            padded = F.fold(windows, output_size=(1, length + 2 * ctx.pad), kernel_size=(1, kernel))
            grad_x = padded[:, :, 0, ctx.pad: ctx.pad + length].contiguous()
        return grad_x, grad_weight, grad_bias, None


class Conv1d(nn.Conv1d):
    """nn.Conv1d (same parameters and state dict) whose CPU training pass is a matrix product when the layer keeps
    the length (stride 1, padding (kernel - 1) / 2, no dilation or groups)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        (kernel,), padding = self.kernel_size, self.padding
        self.as_matmul = (self.stride == (1,) and self.dilation == (1,) and self.groups == 1
                          and self.padding_mode == "zeros" and isinstance(padding, tuple)
                          and 2 * padding[0] == kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.as_matmul and self.training and x.device.type == "cpu" and x.dim() == 3 and torch.is_grad_enabled()
                and not torch.is_autocast_enabled("cpu")):
            return _Conv1dAsMatmul.apply(x, self.weight, self.bias, self.padding[0])
        return super().forward(x)
