"""MultiStepWrapper: observation padding, action chunks, early stops and recording are exact."""

from __future__ import annotations

import av
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from robopolicy.envs.multistep import MultiStepWrapper


class CountingEnv(gym.Env):
    """obs = (step count, last action); solved at step `solve_at`; frames encode the step."""

    metadata = {"render_fps": 10}
    max_episode_steps = 20

    def __init__(self, solve_at: int = 1000):
        self.observation_space = spaces.Dict({"count": spaces.Box(-np.inf, np.inf, (2,), np.float32)})
        self.action_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.solve_at, self.actions = solve_at, []

    def _obs(self, last: float) -> dict[str, np.ndarray]:
        return {"count": np.array([self.t, last], np.float32)}

    def reset(self, *, seed=None, options=None):
        self.t, self.actions = 0, []
        return self._obs(-1.0), {"is_success": False, "score": 0.0}

    def step(self, action):
        self.t += 1
        self.actions.append(float(action[0]))
        solved = self.t >= self.solve_at
        return self._obs(float(action[0])), 0.5, False, False, {"is_success": solved, "score": min(1.0, self.t / 10)}

    def render(self):
        return np.full((16, 16, 3), 10 * self.t, np.uint8)


def test_reset_pads_history_with_the_first_observation():
    env = MultiStepWrapper(CountingEnv(), history=3)
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs["count"], [[0, -1]] * 3)
    assert env.observation_space["count"].shape == (3, 2) and env.observation_space.contains(obs)
    assert info["length"] == 0 and not info["is_success"] and info["score"] == 0.0 and not info["done"]


def test_a_chunk_executes_every_action_in_order_and_returns_the_latest_history():
    inner = CountingEnv()
    env = MultiStepWrapper(inner, history=2)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(np.array([[1.0], [2.0], [3.0]]))
    assert inner.actions == [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(obs["count"], [[2, 2.0], [3, 3.0]])
    assert reward == 1.5 and info["rewards"].tolist() == [0.5, 0.5, 0.5] and info["length"] == 3
    assert not info["done"] and not terminated and not truncated
    obs, *_ = env.step(np.array([[4.0]]))
    np.testing.assert_array_equal(obs["count"], [[3, 3.0], [4, 4.0]])


def test_success_stops_mid_chunk_and_later_steps_do_nothing():
    inner = CountingEnv(solve_at=5)
    env = MultiStepWrapper(inner, history=2)
    env.reset()
    env.step(np.ones((4, 1)))
    obs, reward, terminated, _, info = env.step(np.full((4, 1), 7.0))
    assert info["done"] and inner.t == 5 and info["is_success"] and info["length"] == 5
    assert not terminated  # episode ends are reported in info, so vector envs may keep stepping
    assert reward == 0.5 and info["rewards"][0] == 0.5 and np.isnan(info["rewards"][1:]).all()
    again, reward, _, _, info = env.step(np.full((4, 1), 9.0))
    assert inner.t == 5 and info["done"] and reward == 0.0 and np.isnan(info["rewards"]).all()
    np.testing.assert_array_equal(again["count"], obs["count"])


def test_the_horizon_ends_the_episode_and_the_score_is_the_best_seen():
    inner = CountingEnv()
    env = MultiStepWrapper(inner, history=1, max_steps=7, stop_on_success=False)
    env.reset()
    info = {"done": False}
    while not info["done"]:
        _, _, _, _, info = env.step(np.zeros((3, 1)))
    assert inner.t == 7 and info["length"] == 7 and info["score"] == pytest.approx(0.7)


def test_idle_episodes_start_finished():
    inner = CountingEnv()
    env = MultiStepWrapper(inner, history=1)
    env.idle = True
    _, info = env.reset()
    assert info["done"]
    _, _, _, _, info = env.step(np.zeros((3, 1)))
    assert info["done"] and inner.t == 0


def test_a_recorded_episode_is_a_playable_mp4_with_every_frame(tmp_path):
    env = MultiStepWrapper(CountingEnv(solve_at=6), history=1)
    env.video_path = str(tmp_path / "episode.mp4")
    env.reset()
    env.step(np.zeros((4, 1)))
    assert not (tmp_path / "episode.mp4").exists()
    env.step(np.zeros((4, 1)))
    with av.open(str(tmp_path / "episode.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 7  # the reset frame and one per executed step
    assert [int(round(f.mean() / 10)) for f in frames] == list(range(7))
