"""Success rate and speed of metaworld's scripted experts under DP3's protocol; prints one JSON object.

Success: the task's own flag is set at some step within the env's horizon (DP3's 200 steps), as
DP3's evaluator counts it; length: steps to the first success. Speed: env steps (with the
expert's action) per second on one thread, for low-dim and for each rendered obs_type.

Run: MUJOCO_GL=egl OMP_NUM_THREADS=1 .venv/bin/python -m bench.metaworld_experts [--tasks reach-v3 push-v3]
"""

import argparse
import json
import os
import platform
import time

import numpy as np

from robopolicy.envs.metaworld_tasks import (
    DIFFICULTY,
    DP3_EPISODE_STEPS,
    make_env,
    make_expert,
)

# Three or more tasks of each of DP3's difficulty groups.
DEFAULT_TASKS = {
    "easy": ["reach-v3", "button-press-v3", "drawer-open-v3", "door-open-v3"],
    "medium": ["basketball-v3", "hammer-v3", "sweep-into-v3", "peg-insert-side-v3"],
    "hard": ["pick-place-v3", "push-v3", "assembly-v3", "hand-insert-v3"],
    "very_hard": ["shelf-place-v3", "stick-pull-v3", "pick-place-wall-v3"],
}
SPEED_OBS_TYPES = ("image", "depth", "point_cloud")


def rollout(env, expert, seed: int, steps: int | None = None) -> tuple[int | None, int, float]:
    """One expert episode: (first success step or None, steps run, seconds in step + act).

    Stops at the first success unless `steps` asks for a fixed number of steps.
    """
    obs, info = env.reset(seed=seed)
    expert.reset(obs, info)
    first_success, elapsed = None, 0.0
    for step in range(1, (steps or env.max_episode_steps) + 1):
        start = time.perf_counter()
        obs, _, _, truncated, info = env.step(expert.act(obs, info))
        elapsed += time.perf_counter() - start
        if info["is_success"] and first_success is None:
            first_success = step
            if steps is None:
                break
        if truncated:
            break
    return first_success, step, elapsed


def bench_success(task: str, seeds: int, noise_std: float) -> dict:
    """Success rate, mean length and low-dim steps/s of the expert over seeds 0..seeds-1."""
    env = make_env(task, obs_type="lowdim")
    expert = make_expert(env, np.random.default_rng(0), noise_std=noise_std)
    results = [rollout(env, expert, seed) for seed in range(seeds)]
    env.close()
    lengths = [first for first, _, _ in results if first is not None]
    total_steps, total_time = sum(r[1] for r in results), sum(r[2] for r in results)
    return {"success_rate": len(lengths) / seeds,
            "mean_length": round(float(np.mean(lengths)), 1) if lengths else None,
            "failed_seeds": [seed for seed, r in enumerate(results) if r[0] is None],
            "lowdim_steps_per_s": round(total_steps / total_time, 1)}


def bench_speed(task: str, obs_type: str, steps: int) -> float:
    """Steps/s of a fixed-length expert episode with a rendered obs_type (after a warm-up reset)."""
    env = make_env(task, obs_type=obs_type)
    expert = make_expert(env, np.random.default_rng(0))
    env.reset(seed=0)  # first render and the numba FPS kernel's compile / cache load
    _, ran, elapsed = rollout(env, expert, seed=0, steps=steps)
    env.close()
    return round(ran / elapsed, 1)


def by_difficulty(success: dict) -> dict:
    """Mean success rate of the measured tasks of each difficulty group."""
    rates = {}
    for task in success.values():
        rates.setdefault(task["difficulty"], []).append(task["success_rate"])
    return {group: round(float(np.mean(values)), 3) for group, values in rates.items()}


def main() -> None:
    """Parse the task list, run every measurement and print the results as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", help="task names (default: a few of each difficulty group)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--noise-std", type=float, default=0.0)
    parser.add_argument("--speed-steps", type=int, default=60, help="steps per rendered-obs speed run")
    args = parser.parse_args()
    tasks = args.tasks or [t for group in DEFAULT_TASKS.values() for t in group]
    group_of = {t: group for group, members in DIFFICULTY.items() for t in members}
    success = {t: {"difficulty": group_of[t], **bench_success(t, args.seeds, args.noise_std)} for t in tasks}
    speed_tasks = [DEFAULT_TASKS[g][0] for g in ("easy", "hard")]
    speed = {t: {o: bench_speed(t, o, args.speed_steps) for o in SPEED_OBS_TYPES} for t in speed_tasks}
    result = {
        "machine": {"cpu_count": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                    "mujoco_gl": os.environ.get("MUJOCO_GL"), "python": platform.python_version()},
        "seeds": args.seeds, "noise_std": args.noise_std, "horizon": DP3_EPISODE_STEPS,
        "experts": success,
        "mean_success_by_difficulty": by_difficulty(success),
        "rendered_steps_per_s": speed,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
