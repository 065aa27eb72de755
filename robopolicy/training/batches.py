"""Which windows each optimizer step uses, split over ranks and gradient-accumulation micro-batches.

Step s of epoch e takes the global batch perm_e[(s mod S) * B : (s mod S + 1) * B] of a permutation
seeded by (seed, e); it is cut into world_size * grad_accum micro-batches, and rank r takes
micro-batches r * grad_accum ... r * grad_accum + grad_accum - 1. A run with 2 ranks and a
single process with grad_accum = 2 therefore see the same windows in the same micro-batches,
and a run resumed at step k sees exactly what an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class StepBatchSampler:
    """Yields, for steps start_step .. max_steps - 1, this rank's micro-batches of window indices."""

    def __init__(self, n_windows: int, global_batch: int, world_size: int, rank: int, grad_accum: int,
                 seed: int, max_steps: int, start_step: int = 0):
        if n_windows < global_batch:
            raise ValueError(f"{n_windows} training windows cannot fill one batch of {global_batch}; "
                             "lower training.batch_size or add episodes")
        self.n_windows, self.global_batch = n_windows, global_batch
        self.world_size, self.rank, self.grad_accum = world_size, rank, grad_accum
        self.seed, self.max_steps, self.start_step = seed, max_steps, start_step
        self.steps_per_epoch = n_windows // global_batch
        self.micro = global_batch // (world_size * grad_accum)
        self._permutation: tuple[int, np.ndarray] | None = None

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def global_batch_indices(self, step: int) -> np.ndarray:
        """(global_batch,) window indices of optimizer step `step`."""
        epoch = self.epoch_of(step)
        if self._permutation is None or self._permutation[0] != epoch:
            self._permutation = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n_windows))
        permutation = self._permutation[1]
        offset = (step % self.steps_per_epoch) * self.global_batch
        return permutation[offset : offset + self.global_batch]

    def micro_batch_index(self, accum_step: int) -> int:
        """Index of this rank's accum_step-th micro-batch within the global batch."""
        return self.rank * self.grad_accum + accum_step

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            indices = self.global_batch_indices(step)
            for accum_step in range(self.grad_accum):
                start = self.micro_batch_index(accum_step) * self.micro
                yield indices[start : start + self.micro].tolist()

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.grad_accum
