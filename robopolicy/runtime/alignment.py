"""Observation alignment: per-key ring buffers of (capture time, value), sampled at the policy's step times.

Capture time = receive time - the sensor's configured latency. The window for a reference time
t_ref holds, per key, the values at t_ref + k * dt for the key's step offsets k (from the artifact's
meta, e.g. [-1, 0]): the nearest frame for images, depth and point clouds, linear interpolation for
low-dim values and slerp for quaternions (xyzw). Times before the oldest sample take the oldest
(as the simulator pads at reset); times after the newest take the newest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from robopolicy.robots.interface import Reading

INTERPOLATIONS = ("nearest", "linear", "slerp")
DEFAULT_INTERPOLATION = {"low_dim": "linear"}  # every other obs type: nearest


def slerp(q0: np.ndarray, q1: np.ndarray, weight: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions (sign-aligned, so the short way round)."""
    q0, q1 = q0 / np.linalg.norm(q0), q1 / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear is exact to float precision and avoids dividing by sin(0)
        q = q0 + weight * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1.0 - weight) * theta) * q0 + np.sin(weight * theta) * q1) / np.sin(theta)


def _part(dims: tuple[int, int] | None, value: np.ndarray) -> np.ndarray:
    return value if dims is None else value[..., dims[0] : dims[1]]


class TimedBuffer:
    """The last `capacity` (time, value) samples of one store key, kept in time order."""

    def __init__(self, capacity: int):
        self.times: deque[float] = deque(maxlen=capacity)
        self.values: deque[np.ndarray] = deque(maxlen=capacity)

    def add(self, time: float, value: np.ndarray) -> None:
        if self.times and time <= self.times[-1]:
            return  # a late or repeated message: the buffer already covers that time
        self.times.append(time)
        self.values.append(np.asarray(value))

    @property
    def newest(self) -> float | None:
        return self.times[-1] if self.times else None

    def at(self, time: float, interpolation: str = "linear", dims: tuple[int, int] | None = None) -> np.ndarray:
        """The value (its last-axis slice `dims`, if given) at `time`, clamped to the covered range."""
        if not self.times:
            raise LookupError("no sample yet")
        times = np.fromiter(self.times, float, len(self.times))
        right = int(np.searchsorted(times, time))
        if right == 0:
            return _part(dims, self.values[0])
        if right == len(times):
            return _part(dims, self.values[-1])
        left = right - 1
        weight = (time - times[left]) / (times[right] - times[left])
        if interpolation == "nearest":
            return _part(dims, self.values[left if weight < 0.5 else right])
        before, after = _part(dims, self.values[left]), _part(dims, self.values[right])
        if interpolation == "linear":
            return (1.0 - weight) * before + weight * after
        return slerp(before, after, weight)


@dataclass(frozen=True)
class KeySpec:
    """One policy input fed from the robot: its store key (and slice of it), step offsets and interpolation."""

    name: str
    source: str
    step_offsets: tuple[int, ...]
    interpolation: str
    dims: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation of {self.name!r} must be one of {INTERPOLATIONS}, "
                             f"got {self.interpolation!r}")


class ObservationAligner:
    """Buffers readings per store key and builds the policy's obs window for a reference time."""

    def __init__(self, keys: Sequence[KeySpec], dt: float, sensor_latency: Mapping[str, float],
                 capacity: int = 1024):
        self.keys = list(keys)
        self.dt = dt
        self.sensor_latency = dict(sensor_latency)
        self.buffers: dict[str, TimedBuffer] = {}
        for key in self.keys:
            self.buffers.setdefault(key.source, TimedBuffer(capacity))
        self.non_finite: dict[str, int] = {}  # readings refused for NaN or inf, by store key
        self.unusable: set[str] = set()  # store keys whose latest reading was refused

    def add(self, reading: Reading) -> None:
        """File a reading's values under their store keys at its capture time; a value with NaN or inf is refused,
        counted, and marks its key unusable until a finite one comes."""
        captured = reading.received - self.sensor_latency.get(reading.sensor, 0.0)
        for source, value in reading.values.items():
            if source not in self.buffers:
                continue
            value = np.asarray(value)
            if not np.isfinite(value).all():
                self.non_finite[source] = self.non_finite.get(source, 0) + 1
                self.unusable.add(source)
                continue
            self.unusable.discard(source)
            self.buffers[source].add(captured, value)

    def reference_time(self) -> float | None:
        """The latest time every key has been captured at (no key extrapolated), or None before that."""
        newest = [buffer.newest for buffer in self.buffers.values()]
        if any(t is None for t in newest):
            return None
        return min(newest)

    def stalest(self) -> tuple[str, float] | None:
        """(store key, capture time) of the key whose newest sample is oldest."""
        newest = [(source, b.newest) for source, b in self.buffers.items() if b.newest is not None]
        return min(newest, key=lambda item: item[1]) if newest else None

    def window(self, t_ref: float) -> dict[str, np.ndarray]:
        """{input name: (T_k, ...) float32} at t_ref + k * dt for each key's step offsets k."""
        window = {}
        for key in self.keys:
            buffer = self.buffers[key.source]
            window[key.name] = np.stack([buffer.at(t_ref + k * self.dt, key.interpolation, key.dims)
                                         for k in key.step_offsets]).astype(np.float32)
        return window
