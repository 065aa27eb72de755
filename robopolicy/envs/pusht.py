"""Push-T through gym-pusht, with the keys, units and scoring of Diffusion Policy's benchmark.

Observations (store layout, as in `pusht_cchi_v7_replay.zarr`): `state` (agent x, y, block x,
y, block angle in [0, 2 pi)), `keypoint` (9, 2) block keypoints, and with obs_type="image"
also `img` (96, 96, 3) uint8; all positions on the 0..512 board at 10 Hz. Action: the agent's
target position (2,). Scoring follows Diffusion Policy: reward = clip(coverage / 0.95, 0, 1),
the episode's score is its best step reward (the start state does not count), 300 steps, and a seed's start state is drawn with
numpy's legacy RandomState exactly as Diffusion Policy does, so seed 100000 is the same
test start as theirs.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from gymnasium import spaces

from robopolicy.envs.options import choose
from robopolicy.settings import CONFIG_DIR

CONTROL_HZ = 10.0
MAX_STEPS = 300
OBS_TYPES = ("keypoint", "image")
# The image task's observations and actions, as its shipped task config (pusht_image.yaml) has them.
PUSHT_IMAGE_SHAPE_META = yaml.safe_load((CONFIG_DIR / "task" / "pusht_image.yaml").read_text())["shape_meta"]
# The 9 keypoints of the published store in the block's frame (board units), recovered from
# its `keypoint` and `state` arrays: every frame matches these within 0.2 units (99.9th pct).
BLOCK_KEYPOINTS = np.array([
    [9.2698, 90.0410], [-60.9835, -1.1867], [60.9128, -1.3934], [-0.2705, 25.5436], [-14.0649, 122.8159],
    [39.0027, 32.8574], [-39.9664, 32.7297], [-16.8243, 62.8632], [23.5415, -1.7003],
], dtype=np.float64)


def initial_state(seed: int) -> np.ndarray:
    """Diffusion Policy's start state for a seed: agent x, y, block x, y, block angle."""
    rs = np.random.RandomState(seed=seed)
    return np.array([rs.randint(50, 450), rs.randint(50, 450), rs.randint(100, 400), rs.randint(100, 400),
                     rs.randn() * 2 * np.pi - np.pi])


def block_keypoints(block_pose: np.ndarray) -> np.ndarray:
    """(9, 2) keypoints of the block at pose (x, y, angle), on the board."""
    c, s = np.cos(block_pose[2]), np.sin(block_pose[2])
    rotation = np.array([[c, -s], [s, c]])
    return (BLOCK_KEYPOINTS @ rotation.T + block_pose[:2]).astype(np.float32)


class PushTTask(gym.Env):
    """gym-pusht's simulation behind the task-env contract of `robopolicy.envs.base`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(self, obs_type: str = "keypoint", max_steps: int = MAX_STEPS, render_size: int = 256):
        from gym_pusht.envs import PushTEnv

        choose("Push-T obs_type", obs_type, OBS_TYPES)
        self.obs_type, self.max_episode_steps = obs_type, int(max_steps)
        self.sim = PushTEnv(obs_type="pixels" if obs_type == "image" else "state", render_mode="rgb_array",
                            visualization_width=render_size, visualization_height=render_size)
        self.render_mode = "rgb_array"
        board = spaces.Box(0.0, 512.0, (2,), np.float32)
        obs = {"state": spaces.Box(-np.inf, np.inf, (5,), np.float32),
               "keypoint": spaces.Box(-np.inf, np.inf, (9, 2), np.float32)}
        if obs_type == "image":
            obs["img"] = spaces.Box(0, 255, (96, 96, 3), np.uint8)
        self.observation_space, self.action_space = spaces.Dict(obs), board
        self._steps = 0

    def _observe(self, sim_obs: Any, info: dict[str, Any]) -> dict[str, np.ndarray]:
        block = np.asarray(info["block_pose"], dtype=np.float64)
        state = np.array([*info["pos_agent"], block[0], block[1], block[2] % (2 * np.pi)], dtype=np.float32)
        obs = {"state": state, "keypoint": block_keypoints(block)}
        if self.obs_type == "image":
            obs["img"] = np.asarray(sim_obs, dtype=np.uint8)
        return obs

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        coverage = float(info.get("coverage", 0.0))
        return {"is_success": bool(info["is_success"]), "score": float(np.clip(coverage / 0.95, 0.0, 1.0)),
                "coverage": coverage}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start from Diffusion Policy's state for `seed`, or exactly at options["reset_to_state"] (a recorded
        agent x, y, block x, y, angle)."""
        super().reset(seed=seed)
        recorded = (options or {}).get("reset_to_state")
        start = initial_state(seed if seed is not None else int(self.np_random.integers(2**31)))
        sim_obs, info = self.sim.reset(seed=seed, options={"reset_to_state": start})
        if recorded is not None:
            sim_obs, info = self._restore(np.asarray(recorded, dtype=np.float64))
        self._steps = 0
        return self._observe(sim_obs, info), self._info(info)

    def _restore(self, state: np.ndarray) -> tuple[Any, dict[str, Any]]:
        """Put the simulator at `state` exactly, at rest. gym-pusht sets the block's position before its angle (the
        order Diffusion Policy's evaluation keeps, legacy_test=True, so seeded starts stay theirs); the angle turns
        the block about its centre of gravity and moves it (45 units for the median demo start), so a recorded
        state is set angle first in a fresh space, as Diffusion Policy's non-legacy reset does."""
        sim = self.sim
        sim._setup()  # a fresh space, so no contact cached from the placement before carries into the first step
        sim.agent.position = list(state[:2])
        sim.block.angle = float(state[4])
        sim.block.position = list(state[2:4])
        sim.space.step(sim.dt)
        return sim.get_obs(), {**sim._get_info(), "is_success": False}  # as gym-pusht's reset: the start never counts

    def step(self, action: np.ndarray):
        sim_obs, _, terminated, _, info = self.sim.step(np.asarray(action, dtype=np.float64))
        self._steps += 1
        out = self._info(info)
        return self._observe(sim_obs, info), out["score"], terminated, self._steps >= self.max_episode_steps, out

    def render(self) -> np.ndarray:
        return self.sim.render()

    def hold_action(self, obs: dict[str, np.ndarray], last: np.ndarray | None) -> np.ndarray:
        """The agent's observed position: a target where it already is."""
        return np.asarray(obs["state"][:2], dtype=np.float32)

    def close(self) -> None:
        self.sim.close()


def make_env(obs_type: str = "keypoint", max_steps: int = MAX_STEPS, render_size: int = 256) -> PushTTask:
    """A Push-T task env (keypoint or image observations)."""
    return PushTTask(obs_type, max_steps, render_size)


def instruction(**_: Any) -> str:
    """The task's instruction, as a language-conditioned policy is told it."""
    return "push the T-shaped block onto the target"


def make_expert(env: gym.Env, rng: np.random.Generator):
    """Push-T has no scripted expert: demos come from the human teleop store."""
    raise NotImplementedError(
        "Push-T has no scripted expert in robopolicy (no script or planner reached a reliable success rate); "
        "train on the human demos in pusht_cchi_v7_replay.zarr instead")
