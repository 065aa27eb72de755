"""Wall time of repeated calls: the one timing loop behind export's format choice and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def call_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> np.ndarray:
    """Seconds taken by each of `repeats` calls of fn(), after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return times
