"""The evaluator's view of a task env: observation history in, action chunks out, one episode at a time.

`MultiStepWrapper` keeps the last `history` observations (the first one repeated at reset,
as the training windows pad), executes a chunk of actions per call, stops at the horizon or
(by default) at the first success, records per-step rewards, and can record an mp4 of the
episode. After an episode ends, further steps do nothing, so vectorized envs that finish
early cost nothing while the others run on. The end of an episode is reported in
`info["done"]`, never as termination, so vector envs with autoreset disabled may keep
stepping every env of a wave until the last one is done.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from robopolicy.envs.base import max_episode_steps
from robopolicy.envs.registry import make_env
from robopolicy.envs.video import write_mp4


def _stacked_space(space: spaces.Box, history: int) -> spaces.Box:
    low = np.broadcast_to(space.low, space.shape)
    high = np.broadcast_to(space.high, space.shape)
    return spaces.Box(np.stack([low] * history), np.stack([high] * history), (history, *space.shape), space.dtype)


class MultiStepWrapper(gym.Wrapper):
    """Steps a task env by action chunks and returns stacked observation histories.

    Set the attributes `video_path` (an mp4 path or None) and `idle` (True: the next episode
    is a placeholder that starts finished) before `reset`; vector envs set them per env with
    `set_attr`. `step` returns reward = the chunk's summed reward and info with `rewards`
    (per executed step), `is_success` (ever solved), `score` (best score so far) and `length`.
    """

    def __init__(self, env: gym.Env, history: int, max_steps: int | None = None, stop_on_success: bool = True):
        super().__init__(env)
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.history = history
        self.max_steps = max_steps or max_episode_steps(env)
        self.stop_on_success = stop_on_success
        self.observation_space = spaces.Dict(
            {k: _stacked_space(s, history) for k, s in env.observation_space.spaces.items()})
        self.video_path: str | None = None
        self.idle = False
        self.done, self.success, self.score, self.length = True, False, 0.0, 0
        self._frames: list[np.ndarray] = []
        self._obs: deque = deque(maxlen=history)

    def _stacked(self) -> dict[str, np.ndarray]:
        return {k: np.stack([o[k] for o in self._obs]) for k in self._obs[0]}

    def _summary(self) -> dict[str, Any]:
        return {"done": self.done, "is_success": self.success, "score": self.score, "length": self.length}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, _ = self.env.reset(seed=seed, options=options)
        self._obs.clear()
        self._obs.extend([obs] * self.history)
        self.success, self.score, self.length = False, 0.0, 0
        self.done = self.idle
        self._frames = [self.env.render()] if self.video_path and not self.idle else []
        return self._stacked(), {**self._summary(), "rewards": np.zeros(0, np.float32)}

    def step(self, actions: np.ndarray):
        rewards = []
        for action in np.asarray(actions):
            if self.done:
                break
            obs, reward, terminated, truncated, info = self.env.step(action)
            self._obs.append(obs)
            rewards.append(float(reward))
            self.length += 1
            self.success |= bool(info["is_success"])
            self.score = max(self.score, float(info["score"]))
            if self._frames:
                self._frames.append(self.env.render())
            self.done = (terminated or truncated or self.length >= self.max_steps
                         or (self.stop_on_success and self.success))
        if self.done and self._frames:
            write_mp4(self._frames, Path(self.video_path), self.env.metadata.get("render_fps", 10))
            self._frames = []
        chunk = np.full(len(actions), np.nan, np.float32)
        chunk[: len(rewards)] = rewards
        return self._stacked(), float(sum(rewards)), False, False, {**self._summary(), "rewards": chunk}


def make_rollout_env(env_cfg: dict[str, Any], history: int, stop_on_success: bool = True) -> MultiStepWrapper:
    """A task env (from its config section) behind a MultiStepWrapper; picklable for subprocess vector envs."""
    return MultiStepWrapper(make_env(env_cfg), history, stop_on_success=stop_on_success)
