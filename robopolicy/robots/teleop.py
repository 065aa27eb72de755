"""Teleoperation sources for `robopolicy record`: a person (keyboard, SpaceMouse) or a scripted stand-in.

Each drives an absolute pose target, xyz + rot6d (the rotation held at the episode's start) plus
the gripper (-1 open .. 1 closed), from the pose the arm reports when the episode begins. A
source also says when its episode is over and whether to keep, discard or redo it.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TextIO

import numpy as np

from robopolicy.registry import Registry

VERDICTS = ("keep", "discard", "redo")
OPEN, CLOSED = -1.0, 1.0


class Teleop(Protocol):
    def begin(self, pose: np.ndarray) -> None:
        """Start an episode from the arm's pose (xyz + rot6d)."""

    def step(self, dt: float) -> np.ndarray:
        """The action for the next control period: target xyz + rot6d + gripper."""

    def finished(self) -> bool:
        """Whether the operator has ended the episode."""

    def verdict(self) -> str:
        """keep, discard or redo, once finished (may wait for the operator)."""


class _Target:
    """The commanded pose and gripper every source moves."""

    def begin(self, pose: np.ndarray) -> None:
        self.position = np.asarray(pose[:3], dtype=np.float64).copy()
        self.rotation = np.asarray(pose[3:9], dtype=np.float64).copy()
        self.gripper = OPEN

    def action(self) -> np.ndarray:
        return np.concatenate([self.position, self.rotation, [self.gripper]]).astype(np.float32)


class ScriptedTeleop(_Target):
    """A stand-in operator: moves through offsets (dx, dy, dz, gripper) from the start pose, one leg per
    `leg_seconds`, then ends the episode and keeps it."""

    def __init__(self, legs: Sequence[Sequence[float]] = ((0, 0, -0.04, OPEN), (0, 0, -0.04, CLOSED),
                                                           (0, 0, 0.04, CLOSED)), leg_seconds: float = 1.0):
        self.legs = np.asarray(legs, dtype=np.float64)
        self.leg_seconds = leg_seconds

    def begin(self, pose: np.ndarray) -> None:
        super().begin(pose)
        self.start, self.elapsed = self.position.copy(), 0.0

    def step(self, dt: float) -> np.ndarray:
        self.elapsed += dt
        leg = min(int(self.elapsed / self.leg_seconds), len(self.legs) - 1)
        before = self.start + (self.legs[leg - 1, :3] if leg else 0.0)
        share = min(1.0, self.elapsed / self.leg_seconds - leg)
        self.position = before + share * (self.start + self.legs[leg, :3] - before)
        self.gripper = float(self.legs[leg, 3])
        return self.action()

    def finished(self) -> bool:
        return self.elapsed >= self.leg_seconds * len(self.legs)

    def verdict(self) -> str:
        return "keep"


KEYS = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0)}
KEYBOARD_HELP = ("w/s: x+/-  a/d: y+/-  r/f: z+/-  space: gripper  enter: end the episode, "
                 "then k keep / x discard / o redo")


class KeyboardTeleop(_Target):
    """Keys from a terminal (or any stream): each press moves the target `step_m`; see KEYBOARD_HELP."""

    def __init__(self, stream: TextIO | None = None, step_m: float = 0.01):
        self.stream = stream or sys.stdin
        self.step_m = step_m
        self._ended = False
        self._restore: Callable[[], None] | None = None

    def begin(self, pose: np.ndarray) -> None:
        super().begin(pose)
        self._ended = False
        if self._restore is None and self.stream.isatty():  # single keys, no Enter needed
            import termios
            import tty

            fd = self.stream.fileno()
            saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
            self._restore = lambda: termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    def _keys(self, wait: float = 0.0) -> str:
        """Characters typed since the last call (waits up to `wait` s for the first)."""
        fd = self.stream.fileno()
        typed = ""
        while select.select([fd], [], [], wait)[0]:
            char = os.read(fd, 1).decode(errors="ignore")
            if not char:
                break
            typed, wait = typed + char, 0.0
        return typed

    def step(self, dt: float) -> np.ndarray:
        for key in self._keys():
            if key in KEYS:
                axis, sign = KEYS[key]
                self.position[axis] += sign * self.step_m
            elif key == " ":
                self.gripper = CLOSED if self.gripper == OPEN else OPEN
            elif key in "\r\n":
                self._ended = True
        return self.action()

    def finished(self) -> bool:
        return self._ended

    def verdict(self) -> str:
        choices = {"k": "keep", "x": "discard", "o": "redo"}
        while True:
            for key in self._keys(wait=0.5):
                if key in choices:
                    return choices[key]

    def close(self) -> None:
        if self._restore is not None:
            self._restore()
            self._restore = None


class SpaceMouseTeleop(_Target):
    """A 3Dconnexion SpaceMouse through pyspacemouse (hidapi): its translation axes move the target at
    up to `speed` m/s, the left button toggles the gripper, the right one ends the episode (kept)."""

    def __init__(self, read: Callable[[], Any] | None = None, speed: float = 0.1, deadband: float = 0.05):
        if read is None:
            try:
                import pyspacemouse
            except ImportError as error:
                raise ImportError("teleop=spacemouse needs pyspacemouse (pip install pyspacemouse; it uses "
                                  "hidapi and the device's udev permissions)") from error
            if not pyspacemouse.open():
                raise RuntimeError("no SpaceMouse found: plug it in and check its udev permissions")
            read = pyspacemouse.read
        self.read, self.speed, self.deadband = read, speed, deadband
        self._buttons = (0, 0)
        self._ended = False

    def begin(self, pose: np.ndarray) -> None:
        super().begin(pose)
        self._ended = False

    def step(self, dt: float) -> np.ndarray:
        state = self.read()
        axes = np.array([state.x, state.y, state.z], dtype=np.float64)
        axes[np.abs(axes) < self.deadband] = 0.0
        self.position += axes * self.speed * dt
        buttons = tuple(state.buttons[:2])
        if buttons[0] and not self._buttons[0]:
            self.gripper = CLOSED if self.gripper == OPEN else OPEN
        self._ended = self._ended or bool(buttons[1] and not self._buttons[1])
        self._buttons = buttons
        return self.action()

    def finished(self) -> bool:
        return self._ended

    def verdict(self) -> str:
        return "keep"


TELEOPS = Registry("teleop device", {"scripted": f"{__name__}:ScriptedTeleop", "keyboard": f"{__name__}:KeyboardTeleop",
                                     "spacemouse": f"{__name__}:SpaceMouseTeleop"})


def make_teleop(name: str, options: dict[str, Any]) -> Teleop:
    """teleop=scripted | keyboard | spacemouse, with its options."""
    return TELEOPS.load(name)(**options)
