"""Push-T through gym-pusht, recorded with the same keys and units as Diffusion Policy's store.

Keys: `img` (96, 96, 3) uint8, `state` (agent x, y, block x, y, block angle), `action`
(agent target x, y), all on the 0..512 board scale, at the env's 10 Hz.
"""

from __future__ import annotations

import logging
import numpy as np

from robopolicy.datasets.store import EpisodeStore
from robopolicy.progress import progress

log = logging.getLogger(__name__)
CONTROL_HZ = 10.0
# The image task's observations and actions, as keyed in the recorded and the published store.
PUSHT_IMAGE_SHAPE_META = {
    "obs": {
        "img": {"shape": [3, 96, 96], "type": "rgb"},
        "agent_pos": {"shape": [2], "type": "low_dim", "source": "state", "dims": [0, 2]},
    },
    "action": {"shape": [2]},
}


def make_pusht_env(obs_type: str = "pixels_agent_pos"):
    """A gym-pusht environment rendering 96x96 frames."""
    import gym_pusht  # noqa: F401  (registers the env id)
    import gymnasium as gym

    return gym.make("gym_pusht/PushT-v0", obs_type=obs_type, render_mode="rgb_array")


def _state(info: dict) -> np.ndarray:
    """(5,) agent x, y, block x, y, block angle, as in the published Push-T store."""
    return np.concatenate([info["pos_agent"], info["block_pose"]]).astype(np.float32)


def wandering_pusher(obs: dict[str, np.ndarray], rng: np.random.Generator, state: dict) -> np.ndarray:
    """A scripted stand-in for a teleoperator: circles near the block with smooth noise."""
    block = obs["block"]
    state["angle"] = state.get("angle", rng.uniform(0, 2 * np.pi)) + rng.normal(0.0, 0.3)
    target = block + 40.0 * np.array([np.cos(state["angle"]), np.sin(state["angle"])])
    smoothed = 0.7 * state.get("target", target) + 0.3 * target
    state["target"] = smoothed
    return np.clip(smoothed, 0.0, 512.0).astype(np.float32)


def record_scripted_episodes(store: EpisodeStore, n_episodes: int, steps: int, seed: int = 0) -> None:
    """Roll out the scripted pusher in gym-pusht and append each episode with timestamps."""
    env = make_pusht_env()
    rng = np.random.default_rng(seed)
    for episode in progress(range(n_episodes), "record Push-T", total=n_episodes):
        obs, info = env.reset(seed=seed + episode)
        frames, states, actions, memory = [], [], [], {}
        for _ in range(steps):
            state = _state(info)
            action = wandering_pusher({"block": state[2:4]}, rng, memory)
            frames.append(obs["pixels"])
            states.append(state)
            actions.append(action)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        times = np.arange(len(actions)) / CONTROL_HZ
        data = {"img": np.stack(frames), "state": np.stack(states), "action": np.stack(actions)}
        store.append_episode(data, timestamps={"img": times})
    env.close()
    log.info("recorded %d Push-T episodes into %s", n_episodes, store.path)
