"""Training step time on Push-T keypoints, the CPU's convolution path against the matrix-product one, side by side.

A whole optimizer step as `robopolicy train` runs it (batch from the in-memory store, forward, backward, clip,
AdamW, EMA) for the default U-Net (128/256/512) and Diffusion Policy's low-dim size (`policy=dp_pusht_lowdim`,
256/512/1024), at 1 and 2 torch threads, with `gemm_conv.Conv1d` on (the default) and off (oneDNN's convolution,
which is what nn.Conv1d runs). With --reference DIR (a checkout of real-stanford/diffusion_policy) the same
step of its own ConditionalUnet1D at its low-dim size (forward, backward, AdamW) is timed in the same run.
Measurements alternate between the variants so machine noise falls on all of them alike.
With --pointcloud it times instead the point-cloud encoders' forward and backward on --batch samples x 2
observation steps x 512 points (the point-cloud rows train at --batch 64), their training path (`MaxOfLinear`)
against the plain Linear-then-amax.
Run: .venv/bin/python -m bench.train_step [--steps 6] [--batch 256] [--reference DIR] [--pointcloud]; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from robopolicy.policies.encoders.config import PointCloudEncoderConfig
from robopolicy.policies.encoders.pointcloud import PointCloudEncoder
from robopolicy.policies.networks.gemm_conv import Conv1d
from robopolicy.training.config import RunConfig, compose_config
from robopolicy.training.trainer import Trainer

STORE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"
POLICIES = ("diffusion_unet", "dp_pusht_lowdim")


def trainer_step(policy: str, batch: int, run_dir: str) -> tuple[Callable[[bool], None], Trainer]:
    """One training step of `policy` with the matmul convolution on or off."""
    overrides = ["task=pusht_keypoint", f"policy={policy}", f"task.dataset.path={STORE}", f"run_dir={run_dir}",
                 f"training.batch_size={batch}", "training.num_workers=0", "training.max_steps=1000000",
                 "logging.tensorboard=false"]
    trainer = Trainer(RunConfig.from_dict(compose_config(overrides)))
    sampler, batches = trainer._loader()
    layers = [m for m in trainer.policy.modules() if isinstance(m, Conv1d) and m.as_matmul]

    def step(as_matmul: bool) -> None:
        for layer in layers:
            layer.as_matmul = as_matmul
        trainer.train_step(sampler, batches)

    return step, trainer


def reference_step(root: Path, batch: int) -> Callable[[], None]:
    """Diffusion Policy's ConditionalUnet1D at its Push-T low-dim size: forward, backward, AdamW."""
    sys.path.insert(0, str(root))
    from diffusion_policy.model.diffusion.conditional_unet1d import ConditionalUnet1D

    net = ConditionalUnet1D(input_dim=2, global_cond_dim=20 * 2, diffusion_step_embed_dim=256,
                            down_dims=[256, 512, 1024], kernel_size=5, n_groups=8, cond_predict_scale=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.95, 0.999), eps=1e-8, weight_decay=1e-6)

    def step() -> None:
        sample, cond = torch.randn(batch, 16, 2), torch.randn(batch, 40)
        timesteps = torch.randint(0, 100, (batch,))
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(sample, timesteps, global_cond=cond), torch.randn(batch, 16, 2))
        loss.backward()
        optimizer.step()

    return step


def encoder_steps(kind: str, batch: int) -> dict[str, Callable[[], None]]:
    """Forward and backward of a point-cloud encoder on (batch, 2, 512, 6) clouds, xyz read: training path, plain."""
    encoder = PointCloudEncoder(6, PointCloudEncoderConfig(kind=kind, feature_dim=64, use_rgb=False))
    clouds = torch.randn(batch, 2, 512, 6)

    def backward(features: Callable[[], torch.Tensor]) -> None:
        encoder.zero_grad(set_to_none=True)
        features().square().sum().backward()

    return {"plain_amax": lambda: backward(lambda: encoder.head(encoder.points(clouds[..., :3]).amax(dim=-2))),
            "max_of_linear": lambda: backward(lambda: encoder(clouds))}


def time_alternating(variants: dict[str, Callable[[], None]], steps: int) -> dict[str, float]:
    """Seconds per step of each variant, measured one step of each in turn after two warm-up rounds."""
    for _ in range(2):
        for run in variants.values():
            run()
    spent = dict.fromkeys(variants, 0.0)
    for _ in range(steps):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            spent[name] += time.perf_counter() - start
    return {name: round(total / steps, 3) for name, total in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--reference", type=Path, default=None, help="a diffusion_policy checkout (optional)")
    parser.add_argument("--pointcloud", action="store_true", help="time the point-cloud encoders instead")
    args = parser.parse_args()
    results: dict = {"batch": args.batch, "steps": args.steps, "cpu": torch.backends.cpu.get_cpu_capability(),
                     "seconds_per_step": {}}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for kind in ("dp3", "pointnet") if args.pointcloud else ():
            timing = time_alternating(encoder_steps(kind, args.batch), args.steps)
            timing["speedup"] = round(timing["plain_amax"] / timing["max_of_linear"], 2)
            results["seconds_per_step"][f"{kind}@{threads}_threads"] = timing
        for policy in () if args.pointcloud else POLICIES:
            with tempfile.TemporaryDirectory() as run_dir:
                step, trainer = trainer_step(policy, args.batch, run_dir)
                variants = {"convolution": lambda: step(False), "matmul": lambda: step(True)}
                if args.reference and policy == "dp_pusht_lowdim":
                    variants["diffusion_policy_reference"] = reference_step(args.reference, args.batch)
                timing = time_alternating(variants, args.steps)
                trainer.close()
            timing["speedup_matmul_over_convolution"] = round(timing["convolution"] / timing["matmul"], 2)
            if "diffusion_policy_reference" in timing:
                timing["speedup_matmul_over_reference"] = round(timing["diffusion_policy_reference"] / timing["matmul"],
                                                                2)
            results["seconds_per_step"][f"{policy}@{threads}_threads"] = timing
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
