"""Real-time speed of every sampler and head at batch 1 on the CPU; prints one JSON object, writes a PNG table.

Rows: DDPM-100, DDIM-16, DDIM-10, DPM-Solver++-10 (diffusion U-Net), flow-10, flow-1, adaptive flow,
consistency-1, consistency-2, ACT. Tasks: Push-T keypoint with trained checkpoints (--keypoint
family=CHECKPOINT for diffusion, flow, flow_adaptive, consistency, act) and Push-T image with the
same architectures (--image family=CHECKPOINT, else untrained: latency does not depend on the
weights, except the adaptive flow's step count, reported as `steps`).

Per row: predict_action p50 / p95 (eager, inference mode), the same through a TorchScript and an
ONNX Runtime artifact with the whole sampling loop inside (and its largest difference from eager,
normalized units), the ratio of each p50 to one network forward (encoder + one backbone pass), and,
with --eval-episodes N, the Push-T score of the checkpoint with that row's sampler on N seeds
(Diffusion Policy protocol: seeds from 100000, 300 steps, best coverage / 0.95). Evaluations are
kept in --eval-dir/<task>/<row>/eval.json and reused, so an interrupted run loses nothing.
Latencies of all rows are measured in one process, one row after another, on the same machine.

Run: .venv/bin/python -m bench.speed --keypoint diffusion=CKPT flow=CKPT ... [--threads 1] [--calls 50]
     [--eval-episodes 50] [--out docs/results/speed]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from bench.timing import percentiles_ms
from robopolicy.datasets.normalizer import Normalizer
from robopolicy.datasets.store import EpisodeStore
from robopolicy.deploy.export import (
    ChunkProgram,
    check_parity,
    example_inputs,
    input_specs,
    write_program,
)
from robopolicy.envs.pusht import PUSHT_IMAGE_SHAPE_META
from robopolicy.policies.base import Policy
from robopolicy.policies.checkpoint import load_policy
from robopolicy.policies.presets import merged_settings
from robopolicy.policies.registry import make_policy
from robopolicy.runtime.artifact import ARTIFACT_VERSION, MODEL_FILES, load_artifact
from robopolicy.settings import CONFIG_DIR

log = logging.getLogger("bench.speed")
FAMILIES = ("diffusion", "flow", "flow_adaptive", "consistency", "act")


@dataclass(frozen=True)
class Row:
    """One table row: the checkpoint family it needs and the sampling arguments of predict_action."""

    name: str
    family: str
    sampling: dict[str, Any] = field(default_factory=dict)
    no_artifact: str | None = None  # why the row cannot be exported, when it cannot


ROWS = (
    Row("DDPM-100", "diffusion", {"sampler": "ddpm", "num_inference_steps": 100},
        "DDPM draws fresh noise at every step"),
    Row("DDIM-16", "diffusion", {"sampler": "ddim", "num_inference_steps": 16}),
    Row("DDIM-10", "diffusion", {"sampler": "ddim", "num_inference_steps": 10}),
    Row("DPM-Solver++-10", "diffusion", {"sampler": "dpmsolver++", "num_inference_steps": 10}),
    Row("flow-10", "flow", {"num_inference_steps": 10}),
    Row("flow-1", "flow", {"num_inference_steps": 1}),
    Row("adaptive flow", "flow_adaptive", {}, "the step count depends on the observation"),
    Row("consistency-1", "consistency", {"num_inference_steps": 1}),
    Row("consistency-2", "consistency", {"num_inference_steps": 2}),
    Row("ACT", "act"),
)
# Untrained stand-ins for the image task: the shipped policy configs (consistency: the flow network).
IMAGE_PRESETS = {"diffusion": ("diffusion_unet", "diffusion_unet", {}), "flow": ("flow", "flow", {}),
                 "flow_adaptive": ("flow", "flow", {"adaptive": True}),
                 "consistency": ("flow", "consistency", {}), "act": ("act", "act", {})}


def pusht_like_normalizer(shape_meta: Mapping[str, Any]) -> Normalizer:
    """Normalizer fitted on random data in Push-T units (latency does not depend on the values)."""
    rng = np.random.default_rng(0)
    data = {"img": rng.integers(0, 255, (64, 96, 96, 3), dtype=np.uint8),
            "state": rng.uniform(0, 512, (64, 5)).astype(np.float32),
            "action": rng.uniform(0, 512, (64, 2)).astype(np.float32)}
    return Normalizer.fit(EpisodeStore.from_arrays(data, np.array([64])), shape_meta)


def untrained_image_policy(family: str) -> Policy:
    preset, name, overrides = IMAGE_PRESETS[family]
    policy_config = yaml.safe_load((CONFIG_DIR / "policy" / f"{preset}.yaml").read_text())
    encoder = yaml.safe_load((CONFIG_DIR / "encoder" / "default.yaml").read_text())
    settings = merged_settings(policy_config, encoder)
    torch.manual_seed(0)
    policy = make_policy(name, PUSHT_IMAGE_SHAPE_META, {**settings, **overrides})
    policy.set_normalizer(pusht_like_normalizer(PUSHT_IMAGE_SHAPE_META))
    return policy.eval()


def example_obs(policy: Policy) -> dict[str, torch.Tensor]:
    """One batch-1 observation window in the policy's layout (random, in Push-T ranges)."""
    specs = input_specs(policy.shape_meta, policy.config.n_obs_steps, policy.action_dim, policy.config.horizon, False)
    tensors = example_inputs(specs, 1, seed=0)
    return {spec["name"]: x if spec["type"] == "rgb" else 256 + 100 * x for spec, x in zip(specs, tensors, strict=True)}


def forward_ms(policy: Policy, obs: dict[str, torch.Tensor], calls: int) -> dict[str, float]:
    """One network forward: encoder + one backbone pass (ACT: its single decoding pass)."""
    with torch.inference_mode():
        if not hasattr(policy, "backbone"):
            return percentiles_ms(lambda: policy.predict_action(obs), calls, warmup=3)
        sample, t = torch.randn(1, policy.config.horizon, policy.action_dim), torch.ones(1)
        return percentiles_ms(lambda: policy.backbone(sample, t, policy.encode(obs)), calls, warmup=3)


def artifact_ms(policy: Policy, sampling: Mapping[str, Any], fmt: str, calls: int) -> dict[str, float]:
    """Latency of the traced program (whole loop inside) as the runtime runs it, and its difference from eager."""
    program = ChunkProgram(policy, list(policy.shape_meta.obs), sampling).eval()
    specs = input_specs(policy.shape_meta, policy.config.n_obs_steps, policy.action_dim, policy.config.horizon,
                        policy.takes_noise)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        inputs = example_inputs(specs, 1, seed=0)
        write_program(program, inputs, [s["name"] for s in specs], fmt, path / MODEL_FILES[fmt])
        meta = {"artifact_version": ARTIFACT_VERSION, "format": fmt, "file": MODEL_FILES[fmt], "inputs": specs,
                "horizon": policy.config.horizon, "output": {"shape": [policy.config.horizon, policy.action_dim]}}
        (path / "meta.json").write_text(json.dumps(meta))
        difference = check_parity(program, path)
        artifact = load_artifact(path, trusted=True)  # written just now by this process
        feed = {s["name"]: x.numpy() for s, x in zip(specs, example_inputs(specs, 1, seed=1), strict=True)}
        latency = percentiles_ms(lambda: artifact.run(feed), calls, warmup=3)
    return {**latency, "max_difference_from_eager": float(f"{difference:.2e}")}


def eager_ms(policy: Policy, obs: dict[str, torch.Tensor], sampling: Mapping[str, Any], calls: int) -> dict[str, Any]:
    generator = torch.Generator()
    steps = int(sampling.get("num_inference_steps", 1))
    result = percentiles_ms(lambda: policy.predict_action(obs, generator=generator.manual_seed(0), **sampling),
                            calls if steps < 50 else max(5, calls // 5), warmup=2)
    if getattr(policy, "variance_head", None) is not None and not sampling:
        with torch.inference_mode():
            features = policy.encode(obs)
            noise = torch.randn(16, policy.config.horizon, policy.action_dim, generator=generator.manual_seed(0))
            _, taken = policy.sample_adaptive({k: v.expand(16, *v.shape[1:]) for k, v in features.items()}, noise)
        result["steps"] = round(float(taken.float().mean()), 2)
    return result


def evaluate_row(checkpoint: Path, row: Row, episodes: int, out: Path) -> dict[str, Any]:
    """The row's Push-T score on `episodes` seeds, computed once and kept in out/eval.json."""
    report = out / "eval.json"
    if not report.is_file():
        from robopolicy.envs.evaluate import evaluate_checkpoint

        options = [f"{k}={v}" for k, v in row.sampling.items()]
        evaluate_checkpoint(checkpoint, [f"n_episodes={episodes}", "n_envs=2", "n_videos=0", f"out={out}", *options])
    summary = json.loads(report.read_text())
    return {"mean_score": round(summary["mean_score"], 3), "score_ci95": [round(x, 3) for x in summary["mean_score_ci95"]],
            "success_rate": summary["success_rate"], "episodes": summary["n_episodes"], "eval_json": str(report)}


def bench_task(task: str, checkpoints: Mapping[str, str], args: argparse.Namespace) -> dict[str, Any]:
    policies: dict[str, Policy] = {}
    for family in FAMILIES:
        if family in checkpoints:
            policies[family] = load_policy(checkpoints[family])
        elif task == "pusht_image":
            policies[family] = untrained_image_policy(family)
    rows, forward = {}, {}
    for row in ROWS:
        if row.family not in policies:
            continue
        policy = policies[row.family]
        obs = example_obs(policy)
        if row.family not in forward:
            forward[row.family] = forward_ms(policy, obs, args.calls)
        log.info("%s %s", task, row.name)
        result: dict[str, Any] = {"family": row.family, "sampling": row.sampling,
                                  "trained": row.family in checkpoints,
                                  "parameters": sum(p.numel() for p in policy.parameters()),
                                  "eager": eager_ms(policy, obs, row.sampling, args.calls)}
        for fmt in ("torchscript", "onnx"):
            result[fmt] = {"not_exportable": row.no_artifact} if row.no_artifact else artifact_ms(
                policy, row.sampling, fmt, args.calls)
        for mode in ("eager", "torchscript", "onnx"):
            if "p50_ms" in result[mode]:
                result[mode]["ratio_to_forward"] = round(result[mode]["p50_ms"] / forward[row.family]["p50_ms"], 2)
        rows[row.name] = result
    return {"forward": forward, "checkpoints": dict(checkpoints), "rows": rows}


def add_scores(task: str, results: dict[str, Any], args: argparse.Namespace) -> None:
    """Push-T scores of the trained rows, after every latency is measured (evaluations load the machine)."""
    for row in ROWS:
        checkpoint = results["checkpoints"].get(row.family)
        if checkpoint is not None and row.name in results["rows"]:
            slug = row.name.lower().replace(" ", "_").replace("+", "p")
            results["rows"][row.name]["score"] = evaluate_row(Path(checkpoint), row, args.eval_episodes,
                                                              Path(args.eval_dir) / task / slug)


def best_p50(row: Mapping[str, Any]) -> float:
    return min(row[mode]["p50_ms"] for mode in ("eager", "torchscript", "onnx") if "p50_ms" in row[mode])


def targets(results: Mapping[str, Any]) -> dict[str, Any]:
    """Issue 9's targets for the one-step rows: best p50 / one forward (<= 1.2), DDPM-100 eager p50 / best p50
    (>= 20), score / the teacher's score at its default sampler (>= 0.95; teacher: DDIM-10 for the consistency
    student of the diffusion checkpoint, flow-10 for flow-1)."""
    rows, forward = results["rows"], results["forward"]
    checks = {}
    for name, teacher in (("consistency-1", "DDIM-10"), ("flow-1", "flow-10")):
        if name not in rows or "DDPM-100" not in rows:
            continue
        row = rows[name]
        check = {"best_p50_ms": best_p50(row),
                 "ratio_to_forward": round(best_p50(row) / forward[row["family"]]["p50_ms"], 2),
                 "speedup_over_ddpm100_eager": round(rows["DDPM-100"]["eager"]["p50_ms"] / best_p50(row), 1)}
        if "score" in row and "score" in rows.get(teacher, {}):
            check["score_over_teacher"] = round(row["score"]["mean_score"] / rows[teacher]["score"]["mean_score"], 3)
            check["teacher"] = teacher
        checks[name] = check
    return checks


def plot_table(report: dict[str, Any], path: Path) -> None:
    """The JSON as one PNG table per task: p50 / p95 ms per runtime, ratio to one forward, score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["tasks"])
    figure, axes = plt.subplots(len(tasks), 1, figsize=(15, 0.42 * 12 * len(tasks) + 0.5))
    for ax, task in zip(np.atleast_1d(axes), tasks, strict=True):
        ax.axis("off")
        header = ["row", "eager p50/p95 ms", "TorchScript p50/p95 ms", "ONNX RT p50/p95 ms", "best / forward",
                  "Push-T score (CI95)"]
        cells = []
        for name, row in report["tasks"][task]["rows"].items():
            cell = [name]
            best = []
            for mode in ("eager", "torchscript", "onnx"):
                entry = row[mode]
                if "p50_ms" in entry:
                    cell.append(f"{entry['p50_ms']:.1f} / {entry['p95_ms']:.1f}")
                    best.append(entry["ratio_to_forward"])
                else:
                    cell.append("n/a")
            cell.append(f"{min(best):.2f}x")
            score = row.get("score")
            cell.append(f"{score['mean_score']:.3f} ({score['score_ci95'][0]:.2f}-{score['score_ci95'][1]:.2f})"
                        if score else ("untrained" if not row["trained"] else "-"))
            cells.append(cell)
        table = ax.table(cellText=cells, colLabels=header, loc="center", cellLoc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        table.scale(1, 1.4)
        forward = {k: v["p50_ms"] for k, v in report["tasks"][task]["forward"].items()}
        ax.set_title(f"{task}: batch 1, {report['threads']} thread(s); one forward p50 ms {forward}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def parse_checkpoints(items: list[str]) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in items)
    unknown = sorted(set(pairs) - set(FAMILIES))
    if unknown:
        raise SystemExit(f"unknown families {unknown}; known: {list(FAMILIES)}")
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keypoint", nargs="*", default=[], help="family=CHECKPOINT for Push-T keypoint")
    parser.add_argument("--image", nargs="*", default=[], help="family=CHECKPOINT for Push-T image (else untrained)")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=0)
    parser.add_argument("--eval-dir", default="runs/speed_eval")
    parser.add_argument("--out", default=None, help="write <out>.json and <out>.png")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"threads": args.threads, "calls": args.calls, "batch": 1, "tasks": {}}
    keypoint = parse_checkpoints(args.keypoint)
    if keypoint:
        report["tasks"]["pusht_keypoint"] = bench_task("pusht_keypoint", keypoint, args)
    report["tasks"]["pusht_image"] = bench_task("pusht_image", parse_checkpoints(args.image), args)
    for task, results in report["tasks"].items():
        if args.eval_episodes:
            add_scores(task, results, args)
        results["targets"] = targets(results)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.json").write_text(text)
        plot_table(report, Path(f"{args.out}.png"))


if __name__ == "__main__":
    main()
