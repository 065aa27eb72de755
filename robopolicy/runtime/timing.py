"""Action timing: when each action of a predicted chunk executes, and which are too late to send.

A chunk predicted from observations captured at t_obs holds, at row action_start + j, the action
for t_obs + (j + n_latency_steps) * dt: the training windows shift actions n_latency_steps later
than observations (SequenceDataset), so deployment uses the same rule. An action is sent
`actuation_latency` before its execution time, and only if that send time is still at least
`margin` ahead of now; when every action of a chunk is late, the robot holds and the event counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robopolicy.robots.interface import TimedAction


@dataclass(frozen=True)
class TimingConfig:
    """The control period and the latencies that shift actions in time."""

    dt: float  # control period in seconds (1 / control_hz)
    action_start: int  # row of the chunk for the observation's own step (n_obs_steps - 1)
    n_latency_steps: int = 0  # the training-time shift of actions after observations
    actuation_latency: float = 0.0  # seconds from sending a command to its effect on the robot
    margin: float = 0.0  # an action whose send time is closer than this to now is dropped

    def __post_init__(self) -> None:
        if self.dt <= 0:
            raise ValueError(f"dt must be positive, got {self.dt}")
        if self.action_start < 0 or self.n_latency_steps < 0 or self.actuation_latency < 0 or self.margin < 0:
            raise ValueError("action_start, n_latency_steps, actuation_latency and margin must be >= 0")


@dataclass
class ActionPlan:
    """Actions (N, Da) and their execution times (N,), ascending."""

    times: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    def after(self, time: float) -> ActionPlan:
        """The actions executing strictly after `time`."""
        keep = self.times > time
        return ActionPlan(self.times[keep], self.values[keep])

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values (M, Da) linearly interpolated at `times`, mask (M,) of the times this plan covers)."""
        times = np.asarray(times, dtype=float)
        covered = (times >= self.times[0]) & (times <= self.times[-1]) if len(self) else np.zeros(len(times), bool)
        if not len(self):
            return np.zeros((len(times), 0)), covered
        values = np.stack([np.interp(times, self.times, self.values[:, d]) for d in range(self.values.shape[1])], 1)
        return values, covered


def chunk_plan(chunk: np.ndarray, t_obs: float, config: TimingConfig, n_steps: int | None = None) -> ActionPlan:
    """The chunk's actions from its current step on (at most n_steps of them) with execution times."""
    actions = np.asarray(chunk)[config.action_start :]
    if n_steps is not None:
        actions = actions[:n_steps]
    times = t_obs + (np.arange(len(actions)) + config.n_latency_steps) * config.dt
    return ActionPlan(times, actions)


def to_send(plan: ActionPlan, now: float, config: TimingConfig) -> tuple[list[TimedAction], int]:
    """(actions to send with their send times, number dropped as late) for a plan at time `now`."""
    send_times = plan.times - config.actuation_latency
    on_time = send_times >= now + config.margin
    actions = [TimedAction(float(t), v) for t, v in zip(send_times[on_time], plan.values[on_time], strict=True)]
    return actions, int((~on_time).sum())
