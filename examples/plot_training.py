"""Plot train/val loss and action error of one or more runs from their train_log.jsonl into a PNG.

Usage: .venv/bin/python examples/plot_training.py RUN_DIR [RUN_DIR ...] --out curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)

PANELS = (("train_loss", "train loss"), ("val_loss", "validation loss (held-out episodes)"),
          ("action_error", "action MSE, sampled chunk vs demo (raw units)"), ("samples_per_s", "samples / s"))


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    figure, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4))
    for run in args.runs:
        entries = read_log(run)
        for axis, (key, title) in zip(axes, PANELS):
            points = [(e["step"], e[key]) for e in entries if key in e]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, label=run.name, marker="." if key != "train_loss" else None)
            axis.set_title(title, fontsize=10)
            axis.set_xlabel("optimizer step")
    for axis, (key, _) in zip(axes, PANELS):
        if key != "samples_per_s":
            axis.set_yscale("log")
        axis.legend()
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
