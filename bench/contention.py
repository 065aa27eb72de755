"""The quickstart's training beside another busy process: samples/s at 1 and 2 torch threads, alone and with one
CPU-bound torch process (2 threads, matrix products) running on the same machine, side by side in one run.

Why: on 2 cores, two processes that each spin 2 threads starve each other (~10x slower), so the quickstart trains
on one thread. The training is the quickstart's (small U-Net, batch 64, no DataLoader workers) on Push-T
keypoints, a low-dim task of Lift's size. Run: .venv/bin/python -m bench.contention [--steps 60]; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from robopolicy.quickstart import SMALL_POLICY
from robopolicy.training.config import RunConfig, compose_config
from robopolicy.training.trainer import Trainer

STORE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"
BUSY = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\n"
        "while True:\n    a = torch.tanh(a @ a / 512.0)\n")


def samples_per_s(threads: int, steps: int, warmup: int = 5) -> float:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = ["task=pusht_keypoint", f"task.dataset.path={STORE}", f"run_dir={run_dir}", *SMALL_POLICY,
                     "training.batch_size=64", "training.num_workers=0", f"training.max_steps={steps + warmup}",
                     "logging.tensorboard=false"]
        trainer = Trainer(RunConfig.from_dict(compose_config(overrides)))
        sampler, batches = trainer._loader()
        for _ in range(warmup):
            trainer.train_step(sampler, batches)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(sampler, batches)
        elapsed = time.perf_counter() - start
        trainer.close()
    return round(steps * 64 / elapsed, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    results = {"idle": {}, "busy": {}}
    for threads in (1, 2):
        results["idle"][f"threads_{threads}"] = samples_per_s(threads, args.steps)
    busy = subprocess.Popen([sys.executable, "-c", BUSY], env={**os.environ, "OMP_NUM_THREADS": "2"})
    try:
        time.sleep(2.0)
        for threads in (1, 2):
            results["busy"][f"threads_{threads}"] = samples_per_s(threads, args.steps)
    finally:
        busy.kill()
        busy.wait()
    ratios = {f"{load}_1_vs_2_threads": round(r["threads_1"] / r["threads_2"], 2) for load, r in results.items()}
    ratios |= {f"threads_{t}_busy_vs_idle": round(results["busy"][f"threads_{t}"] / results["idle"][f"threads_{t}"], 2)
               for t in (1, 2)}
    print(json.dumps({"cpus": os.cpu_count(), "steps": args.steps, "samples_per_s": results, "ratios": ratios},
                     indent=2))


if __name__ == "__main__":
    main()
