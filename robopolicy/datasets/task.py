"""The `task:` section of a run config (configs/task/*.yaml): which store to train on, how to split it, what the
policy sees (shape_meta) and the simulator that evaluates it. Built once, defaults here and nowhere else."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from robopolicy.settings import build_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetConfig:
    """`task.dataset`: the episode store and the split of its episodes."""

    path: str  # episode store: a zarr directory, .zarr.zip or fsspec URL
    val_ratio: float = 0.0  # fraction of episodes held out for validation
    max_train_episodes: int | None = None  # at most this many training episodes (None: all of the split)
    split_seed: int = 42  # seeds which episodes are held out
    n_latency_steps: int = 0  # actions are taken this many steps after their observations (latency in steps)

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_ratio < 1.0:
            raise ValueError(f"task.dataset.val_ratio must be in [0, 1), got {self.val_ratio}")
        if self.n_latency_steps < 0:
            raise ValueError(f"task.dataset.n_latency_steps must be >= 0, got {self.n_latency_steps}")

    def task_names(self) -> list[str] | None:
        """The task strings the store's episodes name (what a policy trained on it was told); None where the store
        is not on this machine."""
        from robopolicy.datasets.store import EpisodeStore

        path = Path(str(self.path))
        return EpisodeStore.open(path).task_names if path.exists() else None


@dataclass(frozen=True)
class TaskConfig:
    """`task:`: its name, the dataset, shape_meta (ARCHITECTURE.md), per-key normalizer modes and the env."""

    name: str
    dataset: DatasetConfig
    shape_meta: dict[str, Any]
    normalizer: dict[str, Any] = field(default_factory=dict)  # normalizer mode per key (default: limits)
    env: dict[str, Any] | None = None  # the simulator `robopolicy eval` uses, as envs.registry names it (None: `eval`
    # measures action errors on the recorded validation episodes instead)
    control_hz: float | None = None  # the rate the demos were recorded at (export's default control rate)
    encoder: dict[str, Any] = field(default_factory=dict)  # encoder settings the data needs (e.g. image.crop_shape
    # for its frame size), applied over the encoder group; encoder.* on the command line wins

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], strict: bool = True) -> TaskConfig:
        """Checked construction; a missing or unknown key is named with the known ones. strict=False (reading a
        checkpoint's saved config) drops unknown keys with a warning: older runs could add any key."""
        values = dict(raw)
        if not strict:
            values = cls._known(values, cls, "task")
            values["dataset"] = cls._known(dict(values.get("dataset") or {}), DatasetConfig, "task.dataset")
        for key in ("name", "dataset", "shape_meta"):
            if key not in values:
                raise ValueError(f"the task config lacks {key!r} (see robopolicy/configs/task/*.yaml)")
        values["dataset"] = build_settings(DatasetConfig, values["dataset"], "task.dataset")
        values["normalizer"] = dict(values.get("normalizer") or {})
        values["encoder"] = dict(values.get("encoder") or {})
        return build_settings(cls, values, "task")

    @staticmethod
    def _known(values: dict[str, Any], config: type, where: str) -> dict[str, Any]:
        known = {f.name for f in fields(config)}
        if set(values) - known:
            log.warning("ignoring %s settings %s that robopolicy does not know", where, sorted(set(values) - known))
        return {k: v for k, v in values.items() if k in known}
