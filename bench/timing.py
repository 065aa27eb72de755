"""Latency percentiles shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def percentiles_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> dict[str, float]:
    """p50 / p95 wall time of fn() in milliseconds over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p95_ms": round(float(np.percentile(times, 95)), 3)}
