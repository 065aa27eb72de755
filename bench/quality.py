"""Policy quality on this CPU: each row trains a recipe within a wall-clock budget and scores its checkpoints
by the anchor paper's protocol, beside the anchor's published numbers.

    .venv/bin/python -m bench.quality train ROW [--tag T] [--budget-min M] [--threads 2] [OVERRIDE ...]
    .venv/bin/python -m bench.quality eval ROW [--tag T]
    .venv/bin/python -m bench.quality report

`train` runs `robopolicy train` into runs/quality/ROW[-T] and keeps every checkpoint; run again, it resumes
with what is left of the budget (the minutes spent are kept in budget.json there). `eval` scores every
checkpoint not yet scored (Push-T: 50 seeds from 100000, 300 steps, best clip(coverage / 0.95) per episode,
reported as the max over checkpoints and the mean of the last `last_k`, as Diffusion Policy reports) and writes
docs/results/quality/ROW[-T].json. `report` writes docs/results/quality.md and quality_curves.png from them.
Threads are set, not inherited: a row's budget means 2 cores with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "quality"
RESULTS = ROOT / "docs" / "results" / "quality"
ROBOPOLICY = [sys.executable, "-m", "robopolicy.cli"]


@dataclass(frozen=True)
class Row:
    """A task, observations, recipe and budget, how it is scored, and the anchor it is compared with."""

    task: str
    train: tuple[str, ...]
    budget_min: float
    anchor: dict
    eval: tuple[str, ...] = ("n_episodes=50", "n_envs=2", "n_videos=0")
    last_k: int = 5  # the score's mean is over the last k checkpoints
    notes: str = ""
    demos: tuple[str, ...] = field(default=())  # a command making the demos, when the task needs them made


DP_PUSHT = ("training.num_workers=0", "training.val_every=250", "training.val_batches=8", "training.top_k=1000")
ROWS = {
    "pusht_keypoint": Row(
        task="pusht_keypoint",
        # 2,200 steps: what 60 minutes on 2 cores fit on the AVX2 machine of 2026-11-30 (1.6 s a step), so the cosine
        # schedule ends with the budget
        train=("task=pusht_keypoint", "policy=diffusion_unet", "training.batch_size=256", "training.max_steps=2200",
               "training.checkpoint_every=250", *DP_PUSHT),
        budget_min=60.0,
        anchor={"paper": "Diffusion Policy (CNN, state)", "max": 0.95, "mean": 0.91},
        notes="Diffusion Policy's demos (90 training episodes, its split), U-Net 128/256/512"),
    "pusht_image": Row(
        task="pusht_image",
        train=("task=pusht_image", "policy=diffusion_unet", "training.batch_size=64", "training.max_steps=20000",
               "training.checkpoint_every=1000", *DP_PUSHT),
        budget_min=180.0,
        anchor={"paper": "Diffusion Policy (CNN, image)", "mean": 0.84},
        notes="96x96 images, ResNet-18 encoder"),
}


def run_dir(name: str, tag: str) -> Path:
    return RUNS / (f"{name}-{tag}" if tag else name)


def result_file(name: str, tag: str) -> Path:
    return RESULTS / f"{run_dir(name, tag).name}.json"


def spent_minutes(directory: Path) -> list[dict]:
    """The budget ledger: one entry per training invocation (minutes, step reached)."""
    ledger = directory / "budget.json"
    return json.loads(ledger.read_text()) if ledger.is_file() else []


def last_step(directory: Path) -> int:
    log = directory / "train_log.jsonl"
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return max(steps, default=0)


def train(name: str, tag: str, budget_min: float | None, threads: int, overrides: list[str],
          at_most_min: float | None = None) -> None:
    """Train (or resume) a row within what is left of its budget, this time for at most `at_most_min` minutes (a
    run spread over sessions); the minutes spent go to budget.json."""
    row, directory = ROWS[name], run_dir(name, tag)
    ledger = spent_minutes(directory)
    budget = budget_min or row.budget_min
    left = budget - sum(entry["minutes"] for entry in ledger)
    now = min(left, at_most_min) if at_most_min else left
    if left <= 0.5:
        print(json.dumps({"row": name, "tag": tag, "budget_spent": True, "entries": ledger}))
        return
    resume = ["resume=true"] if (directory / "checkpoints" / "last").exists() else []
    command = [*ROBOPOLICY, "train", *row.train, *overrides, f"run_dir={directory}", f"training.threads={threads}",
               f"training.time_budget_min={now:.2f}", *resume]
    directory.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    with (directory / "train.stderr.log").open("a") as stderr:
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=stderr)
    ledger.append({"minutes": round((time.monotonic() - start) / 60, 2), "step": last_step(directory),
                   "budget_min": budget, "threads": threads, "overrides": overrides, "command": " ".join(command[2:])})
    (directory / "budget.json").write_text(json.dumps(ledger, indent=1) + "\n")
    print(json.dumps({"row": name, "tag": tag, "entries": ledger}))


def minutes_at(step: int, ledger: list[dict]) -> float:
    """Training minutes when `step` was reached, interpolated within the invocation that reached it."""
    before_minutes, before_step = 0.0, 0
    for entry in ledger:
        if step <= entry["step"]:
            share = (step - before_step) / max(1, entry["step"] - before_step)
            return round(before_minutes + share * entry["minutes"], 1)
        before_minutes, before_step = before_minutes + entry["minutes"], entry["step"]
    return round(before_minutes, 1)


def evaluate(name: str, tag: str) -> dict:
    """Score every checkpoint of the row's run not yet scored; write and return the row's result."""
    row, directory = ROWS[name], run_dir(name, tag)
    out = result_file(name, tag)
    result = json.loads(out.read_text()) if out.is_file() else {"checkpoints": {}}
    ledger = spent_minutes(directory)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    for checkpoint in sorted((directory / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1])):
        if checkpoint.name in result["checkpoints"]:
            continue
        done = subprocess.run([*ROBOPOLICY, "eval", str(checkpoint), *row.eval], cwd=ROOT, env=env, check=True,
                              capture_output=True, text=True)
        summary = json.loads(done.stdout)
        step = int(checkpoint.name.split("_")[1])
        result["checkpoints"][checkpoint.name] = {
            "step": step, "minutes": minutes_at(step, ledger), "mean_score": round(summary["mean_score"], 3),
            "mean_score_ci95": [round(x, 3) for x in summary["mean_score_ci95"]],
            "success_rate": round(summary["success_rate"], 3)}
    scores = [c["mean_score"] for c in sorted(result["checkpoints"].values(), key=lambda c: c["step"])]
    result.update(row=name, tag=tag, task=row.task, recipe=[*row.train], anchor=row.anchor, notes=row.notes,
                  budget_min=ledger[-1]["budget_min"] if ledger else row.budget_min,
                  minutes_spent=round(sum(e["minutes"] for e in ledger), 1), ledger=ledger, last_k=row.last_k,
                  max=max(scores, default=None),
                  mean_last_k=round(sum(scores[-row.last_k:]) / len(scores[-row.last_k:]), 3) if scores else None)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def report() -> None:
    """docs/results/quality.md (one line per row result) and quality_curves.png (score against CPU minutes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    lines = ["# Policy quality on this 2-core CPU", "",
             "Written by `python -m bench.quality report` from `quality/*.json`; how each number was made is in the "
             "docstring of `bench/quality.py`. Minutes are wall-clock training minutes on 2 cores (evaluation "
             "not counted).", "",
             "| row | task | budget (min) | spent (min) | checkpoints | max | mean of last k | anchor |",
             "|---|---|---|---|---|---|---|---|"]
    figure, axis = plt.subplots(figsize=(7, 4))
    for r in results:
        anchor = ", ".join(f"{k} {v}" for k, v in r["anchor"].items())
        lines.append(f"| {r['row']}{'-' + r['tag'] if r['tag'] else ''} | {r['task']} | {r['budget_min']:g} | "
                     f"{r['minutes_spent']} | {len(r['checkpoints'])} | {r['max']} | {r['mean_last_k']} "
                     f"(k={r['last_k']}) | {anchor} |")
        points = sorted(r["checkpoints"].values(), key=lambda c: c["step"])
        axis.plot([p["minutes"] for p in points], [p["mean_score"] for p in points], marker="o",
                  label=f"{r['row']}{'-' + r['tag'] if r['tag'] else ''}")
    axis.set_xlabel("training minutes (2 cores)")
    axis.set_ylabel("mean score (50 seeds)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(RESULTS.parent / "quality_curves.png", dpi=120)
    lines += ["", "![score against training minutes](quality_curves.png)", ""]
    (RESULTS.parent / "quality.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("train", "eval", "report"))
    parser.add_argument("row", nargs="?", choices=sorted(ROWS))
    parser.add_argument("--tag", default="", help="a variant of the row's recipe (its own run directory)")
    parser.add_argument("--budget-min", type=float, default=None, help="override the row's budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--at-most-min", type=float, default=None, help="train at most this long now (resume later)")
    parser.add_argument("overrides", nargs="*", help="robopolicy train overrides for this variant")
    args = parser.parse_intermixed_args()
    if args.action == "report":
        report()
    elif args.action == "train":
        train(args.row, args.tag, args.budget_min, args.threads, args.overrides, args.at_most_min)
    else:
        print(json.dumps(evaluate(args.row, args.tag), indent=1))


if __name__ == "__main__":
    main()
