"""Observation features as transformer tokens: one token per (key, step), projected to d_model."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class ObsTokens(nn.Module):
    """{key: (B, T_k, F_k)} -> (B, sum_k T_k, d_model) with a learned embedding per token position."""

    def __init__(self, feature_dims: Mapping[str, int], steps: Mapping[str, int], d_model: int):
        super().__init__()
        self.keys = list(feature_dims)
        self.project = nn.ModuleDict({k: nn.Linear(feature_dims[k], d_model) for k in self.keys})
        self.num_tokens = sum(steps[k] for k in self.keys)
        self.position = nn.Parameter(torch.zeros(1, self.num_tokens, d_model))
        nn.init.normal_(self.position, std=0.02)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tokens = torch.cat([self.project[k](features[k]) for k in self.keys], dim=1)
        return tokens + self.position
