"""Checks and spaces shared by the task envs' constructors, with errors that name the fix."""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np
from gymnasium import spaces


def choose(what: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Return value if allowed, else raise a ValueError naming the closest choices and all of them."""
    if value in allowed:
        return value
    close = difflib.get_close_matches(str(value), allowed, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    listed = ", ".join(map(repr, allowed))
    raise ValueError(f"unknown {what} {value!r}{hint} (choose one of {len(allowed)}: {listed})")


def positive_int(name: str, value: Any) -> int:
    """Return value as an int if it is a positive integer, else raise a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: got {value!r}, expected a positive integer")
    return int(value)


def box(shape: tuple[int, ...], low: float = -np.inf, high: float = np.inf, dtype: type = np.float32) -> spaces.Box:
    """A Box of one dtype and shape with scalar bounds."""
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
