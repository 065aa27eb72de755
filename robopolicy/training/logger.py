"""Training metrics to train_log.jsonl (always), TensorBoard (default) and wandb (when enabled)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robopolicy.atomic import write_text_atomic

log = logging.getLogger(__name__)


class MetricLogger:
    """Writes one JSON line per log call; only the main process writes anything."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, wandb: bool, wandb_project: str,
                 config: Mapping[str, Any], resumed_step: int | None = None):
        self.enabled = enabled
        self.writer = None
        self.wandb_run = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if resumed_step is not None:
            drop_lines_after(run_dir / "train_log.jsonl", resumed_step)
        self.jsonl = (run_dir / "train_log.jsonl").open("a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError as err:
                raise RuntimeError("logging.wandb=true needs `pip install wandb`") from err
            self.wandb_run = wandb_module.init(project=wandb_project, config=dict(config), dir=str(run_dir))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(name, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(dict(metrics), step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def drop_lines_after(path: Path, step: int) -> None:
    """Remove the lines of steps after `step` (a resumed run logs them again), in one rename."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            logged = json.loads(line).get("step", 0)
        except ValueError:  # a line cut short by a crash
            continue
        if logged <= step:
            kept.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))
