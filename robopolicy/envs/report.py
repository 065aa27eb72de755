"""Evaluation summaries: success rate and mean score with 95% intervals, eval.json, a per-seed plot."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.atomic import write_json_atomic
from robopolicy.envs.runner import Rollouts
from robopolicy.stats import mean_interval, wilson_interval


def summarize(rollouts: Rollouts) -> dict[str, Any]:
    """The headline numbers of an evaluation, with every episode listed by seed."""
    episodes = rollouts.episodes
    success = np.array([e.success for e in episodes])
    scores = np.array([e.score for e in episodes])
    lengths = np.array([e.length for e in episodes])
    calls = np.array(rollouts.call_ms) if rollouts.call_ms else np.zeros(1)
    return {
        "instruction": rollouts.instruction,
        "n_episodes": len(episodes),
        "success_rate": float(success.mean()),
        "success_rate_ci95": list(wilson_interval(int(success.sum()), len(episodes))),
        "mean_score": float(scores.mean()),
        "mean_score_ci95": list(mean_interval(scores)),
        "mean_episode_length": float(lengths.mean()),
        "policy_call_ms": {"p50": float(np.percentile(calls, 50)), "p90": float(np.percentile(calls, 90)),
                           "batch": rollouts.batch_size, "calls": len(rollouts.call_ms)},
        "wall_s": rollouts.wall_s,
        "seeds": [e.seed for e in episodes],
        "videos": [e.video for e in episodes if e.video],
        "episodes": [asdict(e) for e in episodes],
    }


def plot_per_seed(summary: dict[str, Any], path: Path, title: str) -> Path:
    """A bar per seed (score; green = success) with the mean: shows which starts fail."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = summary["episodes"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(episodes)), 3.2))
    colors = ["tab:green" if e["success"] else "tab:red" for e in episodes]
    ax.bar(range(len(episodes)), [e["score"] for e in episodes], color=colors)
    ax.axhline(summary["mean_score"], color="black", linestyle="--", linewidth=1,
               label=f"mean score {summary['mean_score']:.3f}")
    ax.set_xticks(range(len(episodes)), [str(e["seed"]) for e in episodes], rotation=90, fontsize=6)
    ax.set_xlabel("seed")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{title}: success {summary['success_rate']:.2f} (green) over {len(episodes)} seeds", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(summary: dict[str, Any], out_dir: Path, title: str) -> dict[str, Any]:
    """Write per_seed.png and eval.json (atomically) into out_dir; returns the summary with both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "eval.json"
    summary = {**summary, "plot": str(plot_per_seed(summary, out_dir / "per_seed.png", title)), "eval_json": str(path)}
    write_json_atomic(path, summary)
    return summary


def write_suite_report(report: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """suite.json and suite.md (success per task with its instruction and videos, then per suite) in out_dir;
    returns the report with both paths."""
    write_json_atomic(out_dir / "suite.json", report)
    tasks = report["tasks"]
    lines = [f"# {report['suite']}: success {report['success_rate']:.3f} over {len(tasks)} tasks", "",
             "| task | instruction | success | 95% interval | videos |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {t['instruction']} | {t['success_rate']:.2f} | "
              f"{t['success_rate_ci95'][0]:.2f}-{t['success_rate_ci95'][1]:.2f} | "
              f"{' '.join(os.path.relpath(v, out_dir) for v in t['videos'])} |" for name, t in tasks.items()]
    lines += ["", "| suite | success |", "|---|---|", *(f"| {g} | {v:.3f} |" for g, v in report["suites"].items())]
    (out_dir / "suite.md").write_text("\n".join(lines) + "\n")
    return {**report, "suite_json": str(out_dir / "suite.json"), "suite_md": str(out_dir / "suite.md")}
