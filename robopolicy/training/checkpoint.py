"""Writing checkpoint directories (docs/ARCHITECTURE.md; robopolicy.policies.checkpoint reads them): safetensors
weights, YAML/JSON metadata, and a train_state.pt of plain tensors and numbers read with weights_only=True.
Nothing pickled runs code.

A checkpoint is written into a temporary directory and renamed into place; `last` is a symlink
swapped atomically, so a crash while saving never leaves a corrupt `last`.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

import robopolicy
from robopolicy.atomic import write_json_atomic
from robopolicy.policies.base import Policy


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict safetensors accepts: contiguous CPU tensors, shared storage cloned apart."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def versions() -> dict[str, str]:
    return {"robopolicy": robopolicy.__version__, "torch": torch.__version__, "python": platform.python_version()}


@dataclass
class CheckpointContent:
    """Everything one checkpoint holds."""

    config: Mapping[str, Any]  # the resolved run config
    meta: Mapping[str, Any]  # policy name and settings, shape_meta, step, metrics, dataset fingerprint
    policy: Policy
    ema_policy: Policy | None
    train_state: Mapping[str, Any]  # optimizer, scheduler, RNG, step: tensors and plain values only


def write_checkpoint(root: Path, name: str, content: CheckpointContent) -> Path:
    """Write checkpoint `name` under root atomically (temporary directory, then rename); when the disk is full
    the partial copy is removed and the error says that the previous checkpoint is intact."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_files(tmp, content)
    except (OSError, RuntimeError, SafetensorError) as error:  # what torch.save and safetensors raise on a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(getattr(error, "errno", None) or errno.EIO,
                      f"could not write checkpoint {root / name} ({type(error).__name__}: {error}); the previous "
                      f"checkpoint (`last`) is intact\n  fix: check the free space on that disk (df -h {root}); free "
                      "some (or set run_dir= on another disk) and train again with resume=true") from error
    final = root / name
    if final.exists():  # moved aside, not deleted, until the new one is in place
        old = root / f".old-{name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    return final


def _write_files(tmp: Path, content: CheckpointContent) -> None:
    """The checkpoint's files in a fresh directory `tmp`."""
    tmp.mkdir()
    (tmp / "config.yaml").write_text(yaml.safe_dump(dict(content.config), sort_keys=False))
    (tmp / "meta.json").write_text(json.dumps({**content.meta, "versions": versions()}, indent=2))
    save_file(weights(content.policy), str(tmp / "model.safetensors"))
    save_file(weights(content.ema_policy or content.policy), str(tmp / "ema.safetensors"))
    content.policy.normalizer.save(tmp / "normalizer.safetensors")
    torch.save(dict(content.train_state), tmp / "train_state.pt")


def point_last(root: Path, name: str) -> None:
    """Make root/last point at checkpoint `name` (symlink swapped with one rename)."""
    link = root / f".last-{os.getpid()}"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(name)
    os.replace(link, root / "last")


def read_train_state(checkpoint: Path) -> dict[str, Any]:
    """Optimizer, scheduler, RNG and counters; weights_only=True, so loading runs no code."""
    return torch.load(Path(checkpoint) / "train_state.pt", map_location="cpu", weights_only=True)


class CheckpointManager:
    """step_<n> directories under root, `last`, and the top-k by a monitored metric (index.json)."""

    def __init__(self, root: Path, top_k: int, monitor: str, mode: str):
        self.root, self.top_k, self.monitor, self.mode = Path(root), top_k, monitor, mode
        self.index_path = self.root / "index.json"

    def remove_leftovers(self) -> None:
        """Delete what interrupted saves left behind (temporary directories and links)."""
        for leftover in self.root.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in [*self.root.glob(".last-*"), *self.root.glob(".index-*")]:
            leftover.unlink(missing_ok=True)

    def saved_step(self) -> int | None:
        """Step of the checkpoint `last` points at."""
        last = self.last()
        return int(last.name.split("_")[-1]) if last is not None else None

    def last(self) -> Path | None:
        """The checkpoint `last` points at, if any."""
        link = self.root / "last"
        return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None

    def _index(self) -> list[dict[str, Any]]:
        return json.loads(self.index_path.read_text()) if self.index_path.is_file() else []

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        write_json_atomic(self.index_path, entries)

    def best(self) -> list[str]:
        """Names of the top-k checkpoints by the monitored metric, best first."""
        scored = [e for e in self._index() if e["metrics"].get(self.monitor) is not None]
        scored.sort(key=lambda e: e["metrics"][self.monitor], reverse=self.mode == "max")
        return [e["name"] for e in scored[: self.top_k]]

    def save(self, step: int, metrics: Mapping[str, float], content: CheckpointContent) -> Path:
        """Write step_<step>, point `last` at it, and delete checkpoints that are neither best nor last."""
        name = f"step_{step:08d}"
        path = write_checkpoint(self.root, name, content)
        point_last(self.root, name)
        entries = [e for e in self._index() if e["name"] != name] + [{"name": name, "step": step, "metrics": dict(metrics)}]
        self._write_index(entries)
        keep = set(self.best()) | {name}
        for entry in entries:
            if entry["name"] not in keep:
                shutil.rmtree(self.root / entry["name"], ignore_errors=True)
        self._write_index([e for e in entries if e["name"] in keep])
        return path
