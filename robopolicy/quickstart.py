"""The README's main job: scripted demos -> training -> simulation evaluation, on data it makes itself.

It records scripted robosuite Lift demos (low-dim observations, absolute end-effector actions)
into a new episode store, validates it, trains a small diffusion policy on the CPU for a
fixed number of steps (on one thread, so that another busy process on the machine slows it
without starving it), evaluates it on held-out seeds in parallel envs, and reports the success
rate with the paths of the checkpoint, videos and plot and the wall time of each phase. A time
cap (off by default) that ends training early marks the result as undertrained.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
LIFT_LOWDIM = {"name": "robosuite", "task": "Lift", "obs_type": "lowdim", "controller": "absolute"}
# A U-Net sized for a 2-core CPU: ~14 optimizer steps/s at batch 64 (the default one is ~5x slower).
SMALL_POLICY = ["policy.settings.backbone.unet.down_dims=[64,128,256]"]


@dataclass
class QuickstartConfig:
    """The main job's sizes: measured to finish in about 10 minutes on 2 idle cores and lift the cube."""

    n_demos: int = 100
    train_steps: int = 6000
    train_minutes: float = 0.0  # cap on training time (0: none); a capped run is reported as undertrained
    eval_episodes: int = 24
    n_envs: int = 2
    train_threads: int = 1  # torch threads for training; one thread loses little on 2 cores and keeps its speed
    # when another process computes beside it


def run_quickstart(out_dir: Path, settings: QuickstartConfig | None = None) -> dict[str, Any]:
    """Demos, training and evaluation under out_dir (replacing an earlier quickstart's); returns a summary."""
    from robopolicy.datasets.inspect import describe, validate
    from robopolicy.datasets.store import EpisodeStore
    from robopolicy.envs.demos import generate_demos
    from robopolicy.envs.evaluate import evaluate_checkpoint
    from robopolicy.training.run import train

    settings = settings or QuickstartConfig()
    out_dir = Path(out_dir)
    for owned in ("train", "eval"):  # a rerun starts over; the demo store is overwritten below
        shutil.rmtree(out_dir / owned, ignore_errors=True)
    wall: dict[str, float] = {}
    started = time.monotonic()
    demos = generate_demos(LIFT_LOWDIM, out_dir / "lift_lowdim.zarr", settings.n_demos, overwrite=True)
    store = EpisodeStore.open(demos["store"])
    errors = [f for f in validate(store) if f.level == "error"]
    if errors:
        raise RuntimeError("the recorded store failed validation:\n" + "\n".join(map(str, errors)))
    wall["demos_s"], started = time.monotonic() - started, time.monotonic()
    run_dir = out_dir / "train"
    metrics = train(["task=lift_lowdim", f"task.dataset.path={store.path}", f"run_dir={run_dir}", *SMALL_POLICY,
                     f"training.max_steps={settings.train_steps}", f"training.time_budget_min={settings.train_minutes}",
                     f"training.threads={settings.train_threads}", "training.batch_size=64", "training.num_workers=0",
                     "training.log_every=500", "training.val_every=1000",
                     f"training.checkpoint_every={settings.train_steps}"])
    wall["train_s"], started = time.monotonic() - started, time.monotonic()
    checkpoint = run_dir / "checkpoints" / "last"
    result = evaluate_checkpoint(checkpoint, [f"n_episodes={settings.eval_episodes}", f"n_envs={settings.n_envs}",
                                              "n_videos=4", f"out={out_dir / 'eval'}"])
    wall["eval_s"] = time.monotonic() - started
    return {
        "demos": {**demos, "store_summary": describe(store)},
        "training": {"run_dir": str(run_dir), "checkpoint": str(checkpoint), "steps": metrics["step"],
                     "planned_steps": metrics["max_steps"], "final_metrics": metrics},
        "undertrained": metrics["step"] < metrics["max_steps"],
        "wall_s": {k.removesuffix("_s"): round(v, 1) for k, v in wall.items()},
        "success_rate": result["success_rate"],
        "success_rate_ci95": result["success_rate_ci95"],
        "eval_seeds": result["seeds"],
        "eval_json": result["eval_json"],
        "plot": result["plot"],
        "videos": result["videos"],
    }
