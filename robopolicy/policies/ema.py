"""Exponential moving average of a model's weights, with Diffusion Policy's power-law warm-up.

decay(step) = clamp(1 - (1 + step / inv_gamma) ** -power, min_value, max_value), counted from
`update_after_step`: early updates follow the model closely, later ones average over long spans.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps `averaged`, a frozen copy of the model updated by `update(model)` after each step."""

    def __init__(self, model: nn.Module, update_after_step: int = 0, inv_gamma: float = 1.0, power: float = 0.75,
                 min_value: float = 0.0, max_value: float = 0.9999):
        self.averaged = copy.deepcopy(model).eval().requires_grad_(False)
        self.update_after_step = update_after_step
        self.inv_gamma, self.power = inv_gamma, power
        self.min_value, self.max_value = min_value, max_value
        self.step = 0

    def decay(self, step: int) -> float:
        """The averaging weight of the old value at optimizer step `step` (0 before warm-up)."""
        step = step - self.update_after_step - 1
        if step <= 0:
            return 0.0
        value = 1.0 - (1.0 + step / self.inv_gamma) ** -self.power
        return max(self.min_value, min(value, self.max_value))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the model's current weights in; buffers (e.g. normalizer stats) are copied."""
        self.step += 1
        decay = self.decay(self.step)
        for averaged, current in zip(self.averaged.parameters(), model.parameters()):
            if current.requires_grad:
                averaged.mul_(decay).add_(current.detach(), alpha=1.0 - decay)
            else:
                averaged.copy_(current)
        for averaged, current in zip(self.averaged.buffers(), model.buffers()):
            averaged.copy_(current)

    def state_dict(self) -> dict[str, int]:
        """The step counter (the averaged weights are saved as a model of their own)."""
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])
