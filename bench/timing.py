"""Latency percentiles shared by the benchmarks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from robopolicy.latency import call_seconds


def percentiles_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> dict[str, float]:
    """p50 / p95 wall time of fn() in milliseconds over `repeats` calls after `warmup` untimed ones."""
    times = 1e3 * call_seconds(fn, repeats, warmup)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p95_ms": round(float(np.percentile(times, 95)), 3)}
