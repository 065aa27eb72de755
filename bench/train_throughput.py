"""Training throughput on Push-T image: samples/s of whole optimizer steps, data loading included.

Our default DP-CNN (policy=diffusion_unet) and Diffusion Policy's published size
(policy=dp_pusht_image, 263M parameters), batch 64, 2 DataLoader workers, EMA on, as
`robopolicy train` runs them. Also the share of step time spent waiting for batches.
Diffusion Policy's own code does 5.2 samples/s with its preset on this machine (12.3 s per
step at batch 64); that figure is quoted, not re-measured here.
Run: .venv/bin/python -m bench.train_throughput [--steps 5]; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from robopolicy.training.config import RunConfig, compose_config
from robopolicy.training.trainer import Trainer

STORE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"
DP_REFERENCE_SAMPLES_PER_S = 5.2


def measure(policy: str, steps: int, warmup: int, batch: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = ["task=pusht_image", f"policy={policy}", f"task.dataset.path={STORE}", f"run_dir={run_dir}",
                     f"training.batch_size={batch}", f"training.num_workers={workers}",
                     f"training.max_steps={steps + warmup}", "logging.tensorboard=false"]
        trainer = Trainer(RunConfig.from_dict(compose_config(overrides)))
        sampler, batches = trainer._loader()
        for _ in range(warmup):
            trainer.train_step(sampler, batches)
        trainer.data_wait_s = 0.0
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(sampler, batches)
        elapsed = time.perf_counter() - start
        parameters = sum(p.numel() for p in trainer.policy.parameters())
        trainer.close()
    return {"parameters": parameters, "step_s": round(elapsed / steps, 3),
            "samples_per_s": round(steps * batch / elapsed, 2),
            "data_wait_share": round(trainer.data_wait_s / elapsed, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results = {name: measure(name, args.steps, args.warmup, args.batch, args.workers)
               for name in ("diffusion_unet", "dp_pusht_image")}
    report = {"torch_threads": torch.get_num_threads(), "batch": args.batch, "workers": args.workers,
              "steps": args.steps, "results": results,
              "dp_preset_vs_diffusion_policy_reference": round(
                  results["dp_pusht_image"]["samples_per_s"] / DP_REFERENCE_SAMPLES_PER_S, 2),
              "targets": {"data_wait_share_max": 0.10, "dp_preset_samples_per_s_min": DP_REFERENCE_SAMPLES_PER_S}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
