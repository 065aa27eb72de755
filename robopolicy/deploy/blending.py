"""Blending a new chunk into the actions still planned from earlier chunks.

Rules: `replace` (the new chunk wins from its first action on), `crossfade` (over the overlap the
weight of the new chunk rises linearly from 0 to 1), `ensemble` (ACT's temporal ensembling: each
time's action is the mean of every kept chunk's prediction for it, weighted exp(-coeff * i) with
i = 0 the oldest). Prefix inpainting is not a blend: the new chunk is sampled with the committed
actions fixed, so `replace` is the rule to use with it.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from robopolicy.deploy.timing import ActionPlan

RULES = ("replace", "crossfade", "ensemble")


class ChunkBlender:
    """Keeps the plan (and, for `ensemble`, the recent chunks) and folds each new chunk in."""

    def __init__(self, rule: str = "replace", ensemble_coeff: float = 0.01, max_chunks: int = 32):
        if rule not in RULES:
            raise ValueError(f"blending rule must be one of {RULES}, got {rule!r}")
        self.rule = rule
        self.coeff = ensemble_coeff
        self.plan: ActionPlan | None = None
        self.chunks: deque[ActionPlan] = deque(maxlen=max_chunks)

    def reset(self) -> None:
        self.plan = None
        self.chunks.clear()

    def update(self, new: ActionPlan, now: float) -> ActionPlan:
        """The plan after adding `new`: actions from now on, on the new chunk's times."""
        old = self.plan.after(now) if self.plan is not None else None
        if self.rule == "ensemble":
            self.chunks.append(new)
            blended = self._ensemble(new.times)
        elif self.rule == "crossfade" and old is not None and len(old):
            previous, covered = old.at(new.times)
            n = int(covered.sum())
            weight = np.ones(len(new))
            weight[covered] = np.arange(1, n + 1) / (n + 1)
            values = np.where(covered[:, None], (1 - weight[:, None]) * previous + weight[:, None] * new.values,
                              new.values)
            blended = ActionPlan(new.times, values)
        else:
            blended = new
        self.plan = blended.after(now)
        return self.plan

    def _ensemble(self, times: np.ndarray) -> ActionPlan:
        total = np.zeros((len(times), self.chunks[-1].values.shape[1]))
        weight_sum = np.zeros(len(times))
        for rank, chunk in enumerate(self.chunks):  # rank 0 is the oldest kept chunk
            values, covered = chunk.at(times)
            weight = np.exp(-self.coeff * rank) * covered
            total += weight[:, None] * values
            weight_sum += weight
        return ActionPlan(times, total / weight_sum[:, None])


def boundary_jump(old: ActionPlan | None, new: ActionPlan) -> np.ndarray | None:
    """|new - old| per action dim (Da,) at the new plan's first time, where the old plan covers it."""
    if old is None or not len(old) or not len(new):
        return None
    values, covered = old.at(new.times[:1])
    if not covered[0]:
        return None
    return np.abs(new.values[0] - values[0])
