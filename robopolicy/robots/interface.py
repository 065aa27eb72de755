"""The RobotInterface every runtime component is written against, and the timestamped values it exchanges.

Times are seconds on the robot computer's monotonic clock (`RobotInterface.now()`). A reading is
stamped with the time it was received; the runtime subtracts that sensor's configured latency to
get its capture time. An action carries the time at which the robot must apply the command: the
runtime has already moved it earlier by the actuation latency, so that it takes effect on time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Reading:
    """One sensor message: its obs values by store key (e.g. {"robot0_eef_pos": (3,)}) and receive time."""

    sensor: str
    received: float
    values: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class TimedAction:
    """One action (Da,) in raw units and the time the robot must apply it."""

    time: float
    value: np.ndarray


class RobotInterface(Protocol):
    """What the runtime needs from a robot, simulated or real."""

    def now(self) -> float:
        """Current time on the clock readings and actions use."""

    def poll(self) -> Sequence[Reading]:
        """Readings received since the last poll, oldest first."""

    def send(self, actions: Sequence[TimedAction]) -> None:
        """Replace the robot's queue of future actions with `actions` (times ascending)."""

    def hold(self) -> None:
        """Stop moving and keep the current pose (queued actions are discarded)."""

    def stop(self) -> None:
        """Emergency stop: halt now; the robot ignores actions until it is reset by its operator."""
