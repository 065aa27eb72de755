"""Scripted robosuite experts: success rate over seeds, episode length, and env steps/s per obs_type.

Success: the task's own check holds at some step within the horizon (the episode stops there,
so `mean_steps` is the steps to first success over all episodes, failures counting the horizon).
`held_at_end` additionally steps HOLD_STEPS more after success and checks it still holds.
Steps/s: whole env steps (physics, observation, rendering) with the Lift expert acting.
Run: MUJOCO_GL=egl OMP_NUM_THREADS=1 .venv/bin/python -m bench.experts [--seeds 100] [--tasks TASK ...]
(the tasks default to every one with an expert).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np

from robopolicy.envs.robosuite_tasks import EXPERTS, OBS_TYPES, make_env, make_expert

HOLD_STEPS = 20
RATE_STEPS = 80


def run_episode(env, expert, seed: int) -> tuple[bool, bool, int]:
    """(solved, still solved HOLD_STEPS later, steps to first success or the horizon) for one seed."""
    obs, info = env.reset(seed=seed)
    expert.reset(obs, info)
    for step in range(1, env.max_episode_steps + 1):
        obs, _, _, _, info = env.step(expert.act(obs, info))
        if info["is_success"]:
            for _ in range(HOLD_STEPS):
                obs, _, _, _, info = env.step(expert.act(obs, info))
            return True, info["is_success"], step
    return False, False, env.max_episode_steps


def success_rate(task: str, controller: str, seeds: int) -> dict:
    """The expert's low-dim success over seeds 0..seeds-1 (one rng for its own noise)."""
    env = make_env(task, obs_type="lowdim", controller=controller)
    expert = make_expert(env, np.random.default_rng(0))
    start = time.perf_counter()
    results = [run_episode(env, expert, seed) for seed in range(seeds)]
    seconds = time.perf_counter() - start
    env.close()
    solved, held, steps = (np.array(column) for column in zip(*results))
    return {"success_rate": float(solved.mean()), "held_at_end": float(held.mean()),
            "mean_steps": round(float(steps.mean()), 1), "failed_seeds": np.flatnonzero(~solved).tolist(),
            "episodes_per_s": round(seeds / seconds, 2), "horizon": env.max_episode_steps}


def steps_per_second(obs_type: str) -> float:
    """Env steps per second on Lift with the expert acting, observation and rendering included."""
    env = make_env("Lift", obs_type=obs_type)
    expert = make_expert(env, np.random.default_rng(0))
    obs, info = env.reset(seed=0)
    expert.reset(obs, info)
    start = time.perf_counter()
    for _ in range(RATE_STEPS):
        obs, _, _, _, info = env.step(expert.act(obs, info))
    rate = RATE_STEPS / (time.perf_counter() - start)
    env.close()
    return round(rate, 1)


def main() -> None:
    """Measure every expert in both controller modes, then step rates; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--tasks", nargs="+", choices=list(EXPERTS), default=list(EXPERTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    experts = {f"{task}/{controller}": success_rate(task, controller, args.seeds)
               for task in args.tasks for controller in ("absolute", "delta")}
    rates = {obs_type: steps_per_second(obs_type) for obs_type in OBS_TYPES}
    print(json.dumps({"cpu_count": os.cpu_count(), "seeds": args.seeds, "experts": experts,
                      "lift_steps_per_s": rates}, indent=2))


if __name__ == "__main__":
    main()
