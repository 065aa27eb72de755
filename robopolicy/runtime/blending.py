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

from robopolicy.runtime.timing import ActionPlan

RULES = ("replace", "crossfade", "ensemble")


class ChunkBlender:
    """Keeps the plan sent last (and, for `ensemble`, the recent chunks) and blends each new chunk into it.

    `blend` proposes; `commit` records what was actually sent, so a chunk that arrives too late to
    send anything leaves no trace.
    """

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

    def blend(self, new: ActionPlan, start: float) -> ActionPlan:
        """The plan from `start` on (the earliest time an action can still be sent for) if `new` is adopted."""
        new = new.after(start - 1e-9)
        old = self.plan.after(start - 1e-9) if self.plan is not None else None
        if self.rule == "ensemble":
            return self._ensemble([*self.chunks, new], new.times)
        if self.rule == "crossfade" and old is not None and len(old) and len(new):
            previous, covered = old.at(new.times)
            n = int(covered.sum())
            weight = np.ones(len(new))
            weight[covered] = np.arange(1, n + 1) / (n + 1)
            values = np.where(covered[:, None], (1 - weight[:, None]) * previous + weight[:, None] * new.values,
                              new.values)
            return ActionPlan(new.times, values)
        return new

    def commit(self, new: ActionPlan, plan: ActionPlan) -> None:
        """Record that `plan` (blended from chunk `new`) went to the robot."""
        self.plan = plan
        if self.rule == "ensemble":
            self.chunks.append(new)

    def _ensemble(self, chunks: list[ActionPlan], times: np.ndarray) -> ActionPlan:
        total = np.zeros((len(times), chunks[-1].values.shape[1]))
        weight_sum = np.zeros(len(times))
        for rank, chunk in enumerate(chunks):  # rank 0 is the oldest kept chunk
            values, covered = chunk.at(times)
            weight = np.exp(-self.coeff * rank) * covered
            total += weight[:, None] * values
            weight_sum += weight
        return ActionPlan(times, total / weight_sum[:, None])


def boundary_jump(old: ActionPlan | None, new: ActionPlan, rows: int = 4) -> np.ndarray | None:
    """Largest step |a[i+1] - a[i]| per action dim (Da,) across a switch of plans: from the old plan's last
    action before the new plan starts through the new plan's first `rows` actions (None without both)."""
    if old is None or not len(new):
        return None
    before = old.times < new.times[0]
    if not before.any():
        return None
    sequence = np.concatenate([old.values[before][-1:], new.values[:rows]])
    return np.abs(np.diff(sequence, axis=0)).max(axis=0)
