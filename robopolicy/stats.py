"""Confidence intervals of success rates and mean scores, shared by evaluation, deployment and the driver node."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959964


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a success rate: sane at 0/n and n/n, unlike the normal one."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: np.ndarray, low: float = 0.0, high: float = 1.0, z: float = Z95) -> tuple[float, float]:
    """Normal-approximation 95% interval of a mean, clipped to the values' range [low, high].

    One value says nothing about the spread: its interval is the whole range. Scores that are all 0 or 1
    (robosuite's success) are a success rate: Wilson's interval, which 50 of 50 does not shrink to a point.
    """
    if len(values) < 2:
        return low, high
    if (low, high) == (0.0, 1.0) and np.isin(values, (0.0, 1.0)).all():
        return wilson_interval(int(values.sum()), len(values), z)
    half = z * float(values.std(ddof=1)) / math.sqrt(len(values))
    return max(low, float(values.mean()) - half), min(high, float(values.mean()) + half)
