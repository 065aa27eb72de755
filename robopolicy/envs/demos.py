"""Scripted demonstrations in simulation, recorded into an episode store (the teleop stand-in).

Each attempt resets the env with the next seed and lets the task's scripted expert act until
the task is solved (or the horizon); by default only successful episodes are kept. Every
episode is appended atomically with per-step timestamps and its seed (data key `seed`), so a
killed run loses at most the episode in flight and `resume=True` continues after the last
recorded seed. Every episode's task string (`episode_tasks`) is the env task's instruction, so a
store of several tasks' demos trains a language-conditioned policy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.datasets.store import EPISODE_TASKS_ATTR, EpisodeStore
from robopolicy.envs.base import max_episode_steps
from robopolicy.envs.registry import env_instruction, make_env, make_expert
from robopolicy.progress import progress

log = logging.getLogger(__name__)


def _open_output(out: Path, env_cfg: Mapping[str, Any], fps: float, resume: bool, overwrite: bool) -> EpisodeStore:
    if out.exists() and resume:
        store = EpisodeStore.open(out, mode="a")
        if store.attrs.get("env") != dict(env_cfg):
            raise ValueError(f"{out} was recorded with env {store.attrs.get('env')}, not {dict(env_cfg)}; "
                             "resume only with the same env settings, or write to a new path")
        return store
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass resume=true to add episodes to it or overwrite=true to replace it")
    return EpisodeStore.create(out, overwrite=overwrite, attrs={"fps": fps, "env": dict(env_cfg), "source": "scripted"})


def record_episode(env: Any, expert: Any, seed: int, max_steps: int) -> tuple[dict[str, np.ndarray], bool]:
    """One expert rollout: per-step observations and actions (the action taken after each obs)."""
    obs, info = env.reset(seed=seed)
    expert.reset(obs, info)
    steps: list[dict[str, np.ndarray]] = []
    success = False
    for _ in range(max_steps):
        action = np.asarray(expert.act(obs, info), dtype=np.float32)
        steps.append({**obs, "action": action})
        obs, _, terminated, truncated, info = env.step(action)
        success = bool(info["is_success"])
        if success or terminated or truncated:
            break
    data = {key: np.stack([s[key] for s in steps]) for key in steps[0]}
    data["seed"] = np.full(len(steps), seed, dtype=np.int64)
    return data, success


def generate_demos(env_cfg: Mapping[str, Any], out: str | Path, n_episodes: int, seed_start: int = 0,
                   keep_failed: bool = False, max_attempts: int | None = None, resume: bool = False,
                   overwrite: bool = False) -> dict[str, Any]:
    """Record n_episodes expert demos of the env into the store at `out`; returns a summary."""
    out = Path(out)
    instruction = env_instruction(env_cfg)
    env = make_env(env_cfg)
    fps = float(env.metadata.get("render_fps", 10))
    store = _open_output(out, env_cfg, fps, resume, overwrite)
    if store.n_episodes:
        seed_start = max(seed_start, int(store.read("seed", store.n_steps - 1)[0]) + 1)
    horizon = max_episode_steps(env)
    max_attempts = max_attempts or 3 * n_episodes
    attempts, successes, kept = 0, 0, store.n_episodes
    bar = progress(None, desc=f"demos {env_cfg.get('task', env_cfg['name'])}", total=n_episodes)
    bar.update(kept)
    try:
        while kept < n_episodes and attempts < max_attempts:
            seed = seed_start + attempts
            expert = make_expert(env_cfg, env, np.random.default_rng(seed))  # its noise follows the seed too
            data, success = record_episode(env, expert, seed, horizon)
            attempts += 1
            successes += success
            if success or keep_failed:
                times = np.arange(len(data["action"])) / fps
                store.append_episode(data, timestamps={key: times for key in data if key != "seed"})
                store.update_attrs({EPISODE_TASKS_ATTR: [instruction] * store.n_episodes})
                kept += 1
                bar.update(1)
            bar.set_postfix(success=f"{successes / attempts:.2f}")
    finally:
        bar.close()
        env.close()
    if kept < n_episodes:
        raise RuntimeError(f"only {kept} of {n_episodes} demos after {attempts} attempts "
                           f"(expert success {successes}/{attempts}); raise max_attempts or pass keep_failed=true")
    log.info("recorded %d demos (%d attempts) into %s", kept, attempts, out)
    return {"store": str(out), "episodes": store.n_episodes, "steps": store.n_steps, "attempts": attempts,
            "expert_success_rate": successes / attempts if attempts else None,
            "seeds_tried": [seed_start, seed_start + attempts - 1] if attempts else []}


ENV_SHORTCUTS = {
    "lift": {"name": "robosuite", "task": "Lift"},
    "conveyor": {"name": "robosuite", "task": "LiftConveyor"},
    "can": {"name": "robosuite", "task": "PickPlaceCan"},
    "square": {"name": "robosuite", "task": "NutAssemblySquare"},
    "metaworld": {"name": "metaworld"},
    "pusht": {"name": "pusht"},
}
OBS_SHORTCUTS = {"lowdim": "lowdim", "image": "image", "depth": "depth", "pointcloud": "point_cloud",
                 "point_cloud": "point_cloud", "keypoint": "keypoint"}


def demo_env_config(env: str, obs: str | None = None, task: str | None = None,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`env=lift obs=pointcloud` (CLI shorthand) -> the env section {name, task, obs_type, ...}."""
    if env not in ENV_SHORTCUTS:
        raise ValueError(f"unknown env {env!r}; choose one of {sorted(ENV_SHORTCUTS)}")
    config = dict(ENV_SHORTCUTS[env])
    if task is not None:
        config["task"] = task
    if obs is not None:
        if obs not in OBS_SHORTCUTS:
            raise ValueError(f"unknown obs {obs!r}; choose one of {sorted(OBS_SHORTCUTS)}")
        config["obs_type"] = OBS_SHORTCUTS[obs]
    return {**config, **dict(extra or {})}


def default_demo_path(env_cfg: Mapping[str, Any], env: str, obs: str | None) -> str:
    """Where the shipped task configs look for demos: runs/data/lift_lowdim.zarr, .../metaworld_push-v3_pointcloud.zarr."""
    obs = obs or "lowdim"
    if env_cfg["name"] == "metaworld":
        return f"runs/data/metaworld_{env_cfg.get('task', 'reach-v3')}_{obs}.zarr"
    return f"runs/data/{env}_{obs}.zarr"
