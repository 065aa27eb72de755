"""The README's main job: scripted demos -> training -> simulation evaluation, on data it makes itself.

It records scripted robosuite Lift demos (low-dim observations, absolute end-effector actions)
into a new episode store, validates it, trains a small diffusion policy on the CPU for a
fixed number of steps (capped by a time budget), evaluates it on held-out seeds in parallel
envs, and reports the success rate with the paths of the checkpoint, videos and plot.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
LIFT_LOWDIM = {"name": "robosuite", "task": "Lift", "obs_type": "lowdim", "controller": "absolute"}
# A U-Net sized for a 2-core CPU: ~14 optimizer steps/s at batch 64 (the default one is ~5x slower).
SMALL_POLICY = ["policy.settings.backbone.unet.down_dims=[64,128,256]"]


@dataclass
class QuickstartConfig:
    """The main job's sizes: measured to finish in about 10 minutes on 2 cores and lift the cube."""

    n_demos: int = 100
    train_steps: int = 6000
    train_minutes: float = 10.0  # cap on training time; the lr schedule still spans train_steps
    eval_episodes: int = 24
    n_envs: int = 2


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
    demos = generate_demos(LIFT_LOWDIM, out_dir / "lift_lowdim.zarr", settings.n_demos, overwrite=True)
    store = EpisodeStore.open(demos["store"])
    errors = [f for f in validate(store) if f.level == "error"]
    if errors:
        raise RuntimeError("the recorded store failed validation:\n" + "\n".join(map(str, errors)))
    run_dir = out_dir / "train"
    metrics = train(["task=lift_lowdim", f"task.dataset.path={store.path}", f"run_dir={run_dir}", *SMALL_POLICY,
                     f"training.max_steps={settings.train_steps}", f"training.time_budget_min={settings.train_minutes}",
                     "training.batch_size=64", "training.num_workers=0", "training.log_every=500",
                     "training.val_every=1000", f"training.checkpoint_every={settings.train_steps}"])
    checkpoint = run_dir / "checkpoints" / "last"
    result = evaluate_checkpoint(checkpoint, [f"n_episodes={settings.eval_episodes}", f"n_envs={settings.n_envs}",
                                              "n_videos=4", f"out={out_dir / 'eval'}"])
    return {
        "demos": {**demos, "store_summary": describe(store)},
        "training": {"run_dir": str(run_dir), "checkpoint": str(checkpoint), "final_metrics": metrics},
        "success_rate": result["success_rate"],
        "success_rate_ci95": result["success_rate_ci95"],
        "eval_seeds": result["seeds"],
        "eval_json": result["eval_json"],
        "plot": result["plot"],
        "videos": result["videos"],
    }
