"""Temporal ensembling (ACT): the action for a step is a weighted mean of every chunk that predicted it."""

from __future__ import annotations

import math
from collections import deque

import torch


class TemporalEnsembler:
    """Keeps the chunks of earlier calls (one call per control step) and ensembles the current step.

    Each update takes the chunk predicted at this step, `(B, L, Da)` with index 0 the current
    step. The chunk stored k calls ago predicts the current step at its index k, so at most L
    chunks are kept. Weights are exp(-coeff * i) with i = 0 the oldest prediction (ACT's
    convention: a positive coeff favours older predictions and so smooths), normalized to sum 1.
    """

    def __init__(self, coeff: float):
        self.coeff = coeff
        self.chunks: deque[torch.Tensor] = deque()

    def reset(self) -> None:
        """Forget every stored chunk (call at the start of an episode)."""
        self.chunks.clear()

    def update(self, chunk: torch.Tensor) -> torch.Tensor:
        """Store `chunk` (B, L, Da) and return the ensembled action for the current step (B, Da)."""
        if self.chunks and self.chunks[-1].shape != chunk.shape:
            raise ValueError(f"chunk shape changed from {tuple(self.chunks[-1].shape)} to {tuple(chunk.shape)}; "
                             "call reset() when the batch or the chunk length changes")
        self.chunks.append(chunk)
        while len(self.chunks) > chunk.shape[1]:
            self.chunks.popleft()
        count = len(self.chunks)
        # rank 0 is the oldest chunk, predicted count - 1 calls ago: its entry for now is at that index.
        predictions = torch.stack([stored[:, count - 1 - rank] for rank, stored in enumerate(self.chunks)])
        weights = self.weights(count).to(predictions)
        return torch.einsum("n,nbd->bd", weights, predictions)

    def weights(self, count: int) -> torch.Tensor:
        """(count,) normalized weights, index 0 the oldest prediction."""
        raw = torch.tensor([math.exp(-self.coeff * i) for i in range(count)], dtype=torch.float64)
        return raw / raw.sum()
