"""What `robopolicy dataset info` and `validate` report about a store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from robopolicy.datasets.store import EpisodeStore
from robopolicy.datasets.zarr_io import describe_codec


def describe(store: EpisodeStore) -> dict[str, Any]:
    """Episodes, steps, per-key shape/dtype/codec, episode-length summary, fps and task strings."""
    lengths = store.episode_lengths
    keys = {}
    for key in store.keys:
        array = store[key]
        keys[key] = {
            "shape": [store.n_steps, *array.shape[1:]],
            "dtype": str(array.dtype),
            "codec": describe_codec(array),
            "chunks": list(getattr(array, "chunks", array.shape)),
            "timestamps": store.timestamps(key) is not None,
        }
    return {
        "path": store.path,
        "zarr_format": store.zarr_format,
        "episodes": store.n_episodes,
        "steps": store.n_steps,
        "episode_length": {
            "min": int(lengths.min()) if len(lengths) else 0,
            "median": float(np.median(lengths)) if len(lengths) else 0.0,
            "max": int(lengths.max()) if len(lengths) else 0,
        },
        "fps": store.fps,
        "tasks": _tasks(store),
        "keys": keys,
    }


def _tasks(store: EpisodeStore) -> dict[str, int] | None:
    """How many distinct task strings the episodes carry and how many episodes have one; None when none has."""
    named = [task for task in store.episode_tasks if task is not None]
    return {"distinct": len(set(named)), "episodes": len(named)} if named else None


@dataclass(frozen=True)
class Finding:
    """One validation result: level is "error" or "warning"."""

    level: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: [{self.key}] {self.message}"


def validate(store: EpisodeStore) -> list[Finding]:
    """Full scan beyond the checks done at open: non-finite values, image ranks, timestamps."""
    findings = []
    if store.has_interrupted_append:
        findings.append(Finding("warning", "meta", "an append was interrupted; its rows are ignored and are "
                                "dropped when the store is next opened with mode='a'"))
    for key in store.keys:
        array = store[key]
        findings += _check_image_rank(key, array.shape, array.dtype)
        if np.issubdtype(array.dtype, np.floating):
            findings += _check_finite(store, key)
        stamps = store.timestamps(key)
        if stamps is not None:
            findings += _check_timestamps(store, key, np.asarray(stamps[: store.n_steps]))
    return findings


def _check_image_rank(key: str, shape: tuple[int, ...], dtype: np.dtype) -> list[Finding]:
    """uint8 arrays of rank >= 3 are frames and must be (T, H, W, C) with C in 1, 3, 4."""
    if np.dtype(dtype) != np.uint8 or len(shape) < 3:
        return []
    if len(shape) == 4 and shape[-1] in (1, 3, 4):
        return []
    return [Finding("error", f"data/{key}", f"uint8 frames must be (T, H, W, C) with C in 1, 3, 4; got "
                    f"{tuple(shape)} (store grey frames as (T, H, W, 1))")]


def _check_finite(store: EpisodeStore, key: str) -> list[Finding]:
    row = store.first_non_finite(key)
    if row is None:
        return []
    return [Finding("error", f"data/{key}", f"NaN or inf at row {row} (episode {store.episode_of(row)})")]


def _check_timestamps(store: EpisodeStore, key: str, stamps: np.ndarray) -> list[Finding]:
    for index in range(store.n_episodes):
        rows = store.episode_slice(index)
        if np.any(np.diff(stamps[rows]) <= 0):
            return [Finding("error", f"timestamps/{key}", f"capture times not increasing in episode {index}")]
    return []
