"""The contract every simulated task keeps, so one evaluator and one demo recorder serve them all.

A task env is a `gymnasium.Env` whose
- observations are dicts of numpy arrays in *store layout*, keyed as the demo store records
  them (and as a task's shape_meta names them, directly or through `source`): images
  (H, W, 3) uint8 upright, depth (H, W) float32 metres, point clouds (N, 3 | 6) float32,
  low-dim vectors float32;
- `info` carries `is_success` (bool: the task is solved at this step) and `score` (float in
  [0, 1]: the task's own metric, 1.0 when solved), from reset onwards;
- `render()` returns an (H, W, 3) uint8 frame for videos, and `metadata["render_fps"]` is the
  control rate in Hz;
- `max_episode_steps` is the evaluation horizon in env steps;
- `hold_action(obs, last)` is the action that keeps the robot where `obs` shows it, with the
  gripper as `last` (the previous action, or None) commanded it: what a robot does on hold.

A scripted expert (`Expert`) plays the teleoperator in simulation: it is built for one env
and may read privileged simulator state from it.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Obs = dict[str, np.ndarray]


class Expert(Protocol):
    """A scripted demonstrator: `reset` at each episode start, then one action per env step."""

    def reset(self, obs: Obs, info: dict[str, Any]) -> None:
        """Plan a new episode from its first observation."""

    def act(self, obs: Obs, info: dict[str, Any]) -> np.ndarray:
        """The action for this step, in the env's action space."""


def max_episode_steps(env: Any) -> int:
    """The env's evaluation horizon: its own attribute, else the registered time limit."""
    steps = getattr(env.unwrapped, "max_episode_steps", None) or getattr(env, "max_episode_steps", None)
    if steps is None and env.spec is not None:
        steps = env.spec.max_episode_steps
    if not steps:
        raise ValueError(f"{type(env.unwrapped).__name__} has no max_episode_steps; pass max_steps= to the evaluator")
    return int(steps)
