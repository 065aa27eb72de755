"""Policy size and inference latency at batch 1 on the CPU; prints one JSON object.

For each family with its default settings on the Push-T image task (96x96 image + agent
position): parameter count, the latency of one network forward (observation encoder + one
backbone pass: the floor for any sampler), and predict_action latency p50 / p95 over 50 calls
after warm-up for 1, 4, 10, 16 and 100 sampling steps where the family samples iteratively
(diffusion: DDIM, flow: Euler), each with its ratio to the forward pass.
Run: .venv/bin/python bench/policies.py [--calls 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from timing import percentiles_ms

from robopolicy.datasets.normalizer import Normalizer
from robopolicy.datasets.store import EpisodeStore
from robopolicy.envs.pusht import PUSHT_IMAGE_SHAPE_META
from robopolicy.policies.registry import make_policy

STEP_COUNTS = (1, 4, 10, 16, 100)
SAMPLING = {"diffusion_unet": "ddim", "diffusion_transformer": "ddim", "flow": "euler", "act": None}


def pusht_like_normalizer() -> Normalizer:
    """Normalizer fitted on random data in Push-T units (latency does not depend on the values)."""
    rng = np.random.default_rng(0)
    data = {"img": rng.integers(0, 255, (64, 96, 96, 3), dtype=np.uint8),
            "state": rng.uniform(0, 512, (64, 5)).astype(np.float32),
            "action": rng.uniform(0, 512, (64, 2)).astype(np.float32)}
    return Normalizer.fit(EpisodeStore.from_arrays(data, np.array([64])), PUSHT_IMAGE_SHAPE_META)


def bench_family(name: str, obs: dict, normalizer: Normalizer, calls: int) -> dict:
    torch.manual_seed(0)
    policy = make_policy(name, PUSHT_IMAGE_SHAPE_META)
    policy.set_normalizer(normalizer)
    policy.eval()
    result: dict = {"parameters": sum(p.numel() for p in policy.parameters())}
    with torch.inference_mode():
        if hasattr(policy, "backbone"):
            sample, t = torch.randn(1, policy.config.horizon, policy.action_dim), torch.ones(1)
            forward = percentiles_ms(lambda: policy.backbone(sample, t, policy.encode(obs)), calls, warmup=3)
        else:
            forward = percentiles_ms(lambda: policy.predict_action(obs), calls, warmup=3)
    result["forward"] = forward
    generator = torch.Generator()
    if SAMPLING[name] is None:
        result["predict"] = {"single_pass": forward}
        return result
    result["predict"] = {}
    for steps in STEP_COUNTS:
        kwargs = {"num_inference_steps": steps}
        if SAMPLING[name] == "ddim":
            kwargs["sampler"] = "ddim"
        latency = percentiles_ms(lambda: policy.predict_action(obs, generator=generator.manual_seed(0), **kwargs),
                                 calls if steps < 100 else max(10, calls // 5), warmup=3)
        latency["ratio_to_forward"] = round(latency["p50_ms"] / forward["p50_ms"], 2)
        result["predict"][f"{SAMPLING[name]}_{steps}"] = latency
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    normalizer = pusht_like_normalizer()
    obs = {"img": torch.rand(1, 2, 3, 96, 96), "agent_pos": torch.rand(1, 2, 2) * 512}
    report = {"threads": args.threads, "calls": args.calls, "batch": 1,
              "families": {name: bench_family(name, obs, normalizer, args.calls) for name in SAMPLING}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
