"""Safety between the policy and the robot: limits on what is sent, a watchdog, an emergency stop.

`SafetyConfig` drops non-finite actions, keeps every action within the training data's range
(widened by `range_margin`), clamps it into a box (workspace for end-effector positions, joint
limits for joint targets: any slice of the action), then limits the speed and acceleration of
the clamped dims from one action to the next, starting from the last action sent. The watchdog
says when the robot must hold: observations older than `max_obs_age`, a sensor whose latest
reading is not finite, or `max_missed` inference deadlines in a row. `EmergencyStop` can be triggered from any thread; the runtime stops the robot.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from robopolicy.runtime.timing import ActionPlan
from robopolicy.settings import build_settings


@dataclass(frozen=True)
class Box:
    """Bounds [low, high] for action dims [start, stop)."""

    start: int
    stop: int
    low: Sequence[float]
    high: Sequence[float]

    def __post_init__(self) -> None:
        if len(self.low) != self.stop - self.start or len(self.high) != self.stop - self.start:
            raise ValueError(f"box low/high need {self.stop - self.start} values for dims [{self.start}, {self.stop})")
        if any(lo > hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError(f"box low {list(self.low)} exceeds high {list(self.high)}")


@dataclass(frozen=True)
class SafetyConfig:
    """Per-dim bounds and rate limits on a Box's dims (units per second and per second squared)."""

    boxes: tuple[Box, ...] = ()
    max_velocity: float | None = None  # per dim, on the dims of the first box
    max_acceleration: float | None = None
    max_obs_age: float = 0.5  # seconds: older observations make the robot hold
    max_missed: int = 2  # consecutive inference deadline misses that make the robot hold
    range_margin: float | None = 0.5  # actions stay in the training range widened by this share of it (null: off)

    def __post_init__(self) -> None:  # boxes may come from YAML / CLI as mappings
        object.__setattr__(self, "boxes", tuple(build_settings(Box, b, "safety.boxes[]") if isinstance(b, Mapping)
                                                else b for b in self.boxes))
        if self.range_margin is not None and self.range_margin < 0:
            raise ValueError(f"safety.range_margin must be >= 0 (or null to turn the training-range bound off), "
                             f"got {self.range_margin}")
        if not self.boxes and (self.max_velocity is not None or self.max_acceleration is not None):
            raise ValueError("max_velocity and max_acceleration apply to the dims of the first box: give boxes too "
                             "(e.g. safety.boxes=[{start: 0, stop: 3, low: [...], high: [...]}])")

    def training_bounds(self, action_range: Mapping[str, Sequence[float]] | None) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) per action dim: the training data's range (an artifact's meta["action_range"]) widened by
        range_margin of its span on each side; None when either is absent."""
        if action_range is None or self.range_margin is None:
            return None
        low, high = (np.asarray(action_range[k], dtype=float) for k in ("low", "high"))
        margin = self.range_margin * (high - low)
        return low - margin, high + margin

    def clamp(self, plan: ActionPlan, last: tuple[float, np.ndarray] | None,
              last_velocity: np.ndarray | None = None,
              bounds: tuple[np.ndarray, np.ndarray] | None = None) -> ActionPlan:
        """The plan's finite actions (a row with NaN or inf is dropped), inside `bounds` (see training_bounds) and
        the boxes, and within the rate limits from `last` (time, action) moving at `last_velocity` (full action
        vectors; None: from rest). Never returns a non-finite value."""
        finite = np.isfinite(plan.values).all(axis=1)
        times, values = plan.times[finite], np.array(plan.values[finite], dtype=float, copy=True)
        if bounds is not None:
            values = np.clip(values, *bounds)
        for box in self.boxes:
            values[:, box.start : box.stop] = np.clip(values[:, box.start : box.stop], box.low, box.high)
        if self.boxes and (self.max_velocity is not None or self.max_acceleration is not None) and last is not None:
            values = self._rate_limit(times, values, last, last_velocity)
        return ActionPlan(times, values)

    def _rate_limit(self, times: np.ndarray, values: np.ndarray, last: tuple[float, np.ndarray],
                    last_velocity: np.ndarray | None) -> np.ndarray:
        box = self.boxes[0]
        dims = slice(box.start, box.stop)
        previous_time, previous = last[0], np.asarray(last[1], dtype=float)[dims]
        velocity = np.zeros_like(previous) if last_velocity is None else np.asarray(last_velocity, dtype=float)[dims]
        for i, time in enumerate(times):
            step = max(time - previous_time, 1e-6)
            wanted = (values[i, dims] - previous) / step
            if self.max_acceleration is not None:
                wanted = np.clip(wanted, velocity - self.max_acceleration * step, velocity + self.max_acceleration * step)
            if self.max_velocity is not None:
                wanted = np.clip(wanted, -self.max_velocity, self.max_velocity)
            values[i, dims] = previous + wanted * step
            previous, previous_time, velocity = values[i, dims], time, wanted
        return values


@dataclass
class Watchdog:
    """Decides when the robot must hold; counts the holds by reason."""

    limits: SafetyConfig
    missed_in_a_row: int = 0
    holds: dict[str, int] = field(default_factory=dict)
    reason: str | None = None  # the latest verdict of reason_to_hold

    def deadline(self, missed: bool) -> None:
        """Record whether the latest inference met its deadline."""
        self.missed_in_a_row = self.missed_in_a_row + 1 if missed else 0

    def observations_fresh(self, now: float, newest_capture: float | None) -> bool:
        """Whether observations exist and are younger than max_obs_age (nothing is counted)."""
        return newest_capture is not None and now - newest_capture <= self.limits.max_obs_age

    def reason_to_hold(self, now: float, newest_capture: float | None, non_finite: bool = False) -> str | None:
        """'no_observation', 'stale_observation', 'non_finite_observation' (a sensor's latest reading holds NaN or
        inf: `non_finite`), 'missed_deadlines' or None."""
        if newest_capture is None:
            reason = "no_observation"
        elif now - newest_capture > self.limits.max_obs_age:
            reason = "stale_observation"
        elif non_finite:
            reason = "non_finite_observation"
        elif self.missed_in_a_row >= self.limits.max_missed:
            reason = "missed_deadlines"
        else:
            reason = None
        if reason is not None:
            self.count(reason)
        self.reason = reason
        return reason

    def count(self, reason: str) -> None:
        """Count one hold for `reason`."""
        self.holds[reason] = self.holds.get(reason, 0) + 1


class EmergencyStop:
    """A latch any thread may trigger; once triggered the runtime stops the robot and sends nothing more,
    until an operator clears it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def trigger(self, reason: str = "emergency stop") -> None:
        self.reason = reason
        self._event.set()

    @property
    def triggered(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        """An operator's reset: the robot may be driven again."""
        self.reason = ""
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking at once if triggered; returns whether it is triggered."""
        return self._event.wait(timeout)
