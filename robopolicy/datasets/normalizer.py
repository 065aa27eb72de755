"""Per-key affine normalization (y = x * scale + offset), fitted in one streaming pass.

Modes: `limits` maps [min, max] to [-1, 1]; `gaussian` maps mean/std to 0/1; `quantile`
maps [q01, q99] to [-1, 1] without clipping (so the inverse stays exact); `identity`.
Dimensions whose spread is below `eps` are centred instead of scaled. Statistics are
taken in the policy's layout: images per channel on [0, 1] values (shape (C, 1, 1)),
point clouds per channel (C,), depth as one value, low-dim per element of a row.
The fitted normalizer lives inside the policy and is saved with safetensors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.layout import channels_first
from robopolicy.datasets.shape_meta import ShapeMeta, parse_shape_meta
from robopolicy.datasets.sources import action_source, obs_source
from robopolicy.datasets.store import (
    EpisodeStore,
    block_starts,
    image_value_scale,
    iter_blocks,
)
from robopolicy.progress import progress

MODES = ("limits", "gaussian", "quantile", "identity")
DEFAULT_MODES = {"low_dim": "limits", "action": "limits", "rgb": "identity", "depth": "identity",
                 "point_cloud": "identity"}
STAT_NAMES = ("min", "max", "mean", "std", "q01", "q99")
ABSOLUTE_ACTION = "absolute_action"  # a relative-frame policy's absolute action statistics (the range it commands)
UPDATE_ROWS = 1 << 20  # rows per RunningStats update (about 24 MiB of float64 for 3 channels)


class RunningStats:
    """Streaming min / max / mean / std (Chan's merge) and a stratified sample for quantiles."""

    def __init__(self, total_rows: int, max_quantile_rows: int = 200_000, seed: int = 0):
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None
        self.total_rows = max(total_rows, 1)
        self.max_quantile_rows = max_quantile_rows
        self.samples: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)

    def update(self, rows: np.ndarray) -> None:
        """Add rows (n, *feature_shape)."""
        rows = np.asarray(rows, dtype=np.float64)
        n = len(rows)
        if n == 0:
            return
        mean = rows.mean(axis=0)
        m2 = ((rows - mean) ** 2).sum(axis=0)
        if self.count == 0:
            self.mean, self.m2, self.min, self.max = mean, m2, rows.min(axis=0), rows.max(axis=0)
        else:
            total = self.count + n
            delta = mean - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
            self.min = np.minimum(self.min, rows.min(axis=0))
            self.max = np.maximum(self.max, rows.max(axis=0))
        self.count += n
        if self.total_rows <= self.max_quantile_rows:
            self.samples.append(rows)
        else:
            take = min(n, math.ceil(self.max_quantile_rows * n / self.total_rows))
            self.samples.append(rows[self.rng.choice(n, size=take, replace=False)])

    def result(self) -> dict[str, np.ndarray]:
        """min, max, mean, std, q01, q99 over all rows seen (exact quantiles when all rows fit)."""
        if self.count == 0:
            raise ValueError("no rows to compute statistics from")
        sample = np.concatenate(self.samples)
        q01, q99 = np.quantile(sample, [0.01, 0.99], axis=0)
        return {"min": self.min, "max": self.max, "mean": self.mean, "std": np.sqrt(self.m2 / self.count),
                "q01": q01, "q99": q99}


def affine_from_stats(mode: str, stats: Mapping[str, np.ndarray], eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) for one mode; flat dimensions (spread < eps) map to 0 with scale 1."""
    if mode not in MODES:
        raise ValueError(f"normalizer mode must be one of {MODES}, got {mode!r}")
    shape = np.shape(stats["mean"])
    if mode == "identity":
        return np.ones(shape), np.zeros(shape)
    if mode == "gaussian":
        flat = stats["std"] < eps
        scale = np.where(flat, 1.0, 1.0 / np.where(flat, 1.0, stats["std"]))
        return scale, -stats["mean"] * scale
    low, high = (stats["min"], stats["max"]) if mode == "limits" else (stats["q01"], stats["q99"])
    spread = high - low
    flat = spread < eps
    scale = np.where(flat, 1.0, 2.0 / np.where(flat, 1.0, spread))
    offset = np.where(flat, -(low + high) / 2.0, -1.0 - scale * low)
    return scale, offset


class FieldNormalizer(nn.Module):
    """Scale and offset of one key plus the raw statistics they came from (all buffers)."""

    def __init__(self, mode: str, stats: Mapping[str, np.ndarray], eps: float = 1e-4):
        super().__init__()
        self.mode = mode
        scale, offset = affine_from_stats(mode, stats, eps)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32))
        for name in STAT_NAMES:
            self.register_buffer(name, torch.as_tensor(np.asarray(stats[name]), dtype=torch.float32))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.offset) / self.scale


class Normalizer(nn.Module):
    """Normalizers by key ("action" and obs keys); `normalize(dict)` maps the keys it knows."""

    def __init__(self, fields: Mapping[str, FieldNormalizer]):
        super().__init__()
        for key in fields:
            if "." in key or not key:
                raise ValueError(f"normalizer key {key!r} must be non-empty and contain no '.'")
        self.fields = nn.ModuleDict(dict(fields))

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def __getitem__(self, key: str) -> FieldNormalizer:
        return self.fields[key]

    def normalize(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalize every tensor whose key has a normalizer; others pass through."""
        return {k: self.fields[k].normalize(v) if k in self.fields else v for k, v in values.items()}

    def unnormalize(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The exact inverse of `normalize`."""
        return {k: self.fields[k].unnormalize(v) if k in self.fields else v for k, v in values.items()}

    @property
    def modes(self) -> dict[str, str]:
        return {k: f.mode for k, f in self.fields.items()}

    def save(self, path: str | os.PathLike) -> None:
        """Write all buffers to one safetensors file; modes go in its metadata."""
        tensors = {f"{key}/{name}": t.detach().cpu().contiguous() for key, f in self.fields.items()
                   for name, t in f.named_buffers()}
        save_file(tensors, os.fspath(path), metadata={"modes": json.dumps(self.modes)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Normalizer:
        """Read a file written by `save` (plain tensors and JSON; nothing is executed)."""
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt") as handle:
            modes = json.loads(handle.metadata()["modes"])
        tensors = load_file(os.fspath(path))
        fields = {}
        for key, mode in modes.items():
            field = FieldNormalizer(mode, {name: tensors[f"{key}/{name}"].numpy() for name in STAT_NAMES})
            field.scale.copy_(tensors[f"{key}/scale"])
            field.offset.copy_(tensors[f"{key}/offset"])
            fields[key] = field
        return cls(fields)

    @classmethod
    def fit(
        cls,
        store: EpisodeStore,
        shape_meta: Mapping[str, Any] | ShapeMeta,
        modes: Mapping[str, str] | None = None,
        episode_mask: np.ndarray | None = None,
        eps: float = 1e-4,
        seed: int = 0,
    ) -> Normalizer:
        """Fit every shape_meta key (and "action"), streaming each key once over the chosen episodes.

        `modes` overrides the defaults (limits for actions and low-dim, identity otherwise);
        keys in identity mode are not read at all. Text keys get no normalizer: their tokens pass through.
        """
        meta = parse_shape_meta(shape_meta)
        modes = dict(modes or {})
        unknown = set(modes) - set(meta.obs) - {"action"}
        if unknown:
            raise ValueError(f"normalizer modes given for unknown keys {sorted(unknown)}; keys: {[*meta.obs, 'action']}")
        for key, mode in modes.items():
            if mode not in MODES:
                raise ValueError(f"normalizer mode for {key!r} must be one of {MODES}, got {mode!r}")
        for spec in meta.obs.values():
            obs_source(store, spec)
        action_source(store, meta)
        rows = _selected_rows(store, episode_mask)
        fields = {}
        text = sorted(k for k, s in meta.obs.items() if s.type == "text")
        if set(text) & set(modes):
            raise ValueError(f"text keys {text} are byte tokens, which are not normalized: give them no mode")
        for key, kind, source, dims in [(k, s.type, s.source, s.dims) for k, s in meta.obs.items()
                                        if s.type != "text"] + [
            ("action", "action", meta.action_source, None)
        ]:
            mode = modes.get(key, DEFAULT_MODES[kind])
            feature_shape = _feature_shape(kind, meta, key)
            if mode == "identity":
                zeros = np.zeros(feature_shape)
                stats = {name: zeros for name in STAT_NAMES}
            else:
                stats = _stream_stats(store, source, kind, dims, rows, seed, f"fit {key}")
                stats = {name: value.reshape(feature_shape) for name, value in stats.items()}
            fields[key] = FieldNormalizer(mode, stats, eps)
        return cls(fields)


    def refit(self, windows: Iterable[Mapping[str, torch.Tensor]], eps: float = 1e-4) -> None:
        """Refit the fields of the keys in `windows` (dicts of (B, T, *features) batches), modes kept, on those
        values: a relative frame makes the action and pose values the policy sees depend on the window, not the row
        alone. The absolute action statistics stay, as ABSOLUTE_ACTION (the range its actions command)."""
        values: dict[str, list[np.ndarray]] = {}
        for batch in windows:
            for key, tensor in batch.items():
                array = tensor.detach().cpu().numpy()
                values.setdefault(key, []).append(array.reshape(-1, *array.shape[2:]))
        fields = dict(self.fields)
        if "action" in values:
            fields[ABSOLUTE_ACTION] = self.fields["action"]
        for key, parts in values.items():
            rows = np.concatenate(parts)
            stats = RunningStats(len(rows))
            stats.update(rows)
            fields[key] = FieldNormalizer(self.fields[key].mode, stats.result(), eps)
        self.fields = nn.ModuleDict(fields)


def _feature_shape(kind: str, meta: ShapeMeta, key: str) -> tuple[int, ...]:
    """Shape of the statistics in policy layout, broadcastable against (B, T, ...) values."""
    if kind == "action":
        return meta.action_shape
    shape = meta.obs[key].shape
    return {"rgb": (shape[0], 1, 1), "depth": (1, 1), "point_cloud": (shape[-1],)}.get(kind, shape)


def _selected_rows(store: EpisodeStore, episode_mask: np.ndarray | None) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the selected episodes, merged where adjacent."""
    if episode_mask is None:
        return [(0, store.n_steps)] if store.n_steps else []
    if np.shape(episode_mask) != (store.n_episodes,):
        raise DataError(store.path, f"episode_mask has shape {np.shape(episode_mask)}, the store has "
                        f"{store.n_episodes} episodes", fix="pass one bool per episode (e.g. dataset.episode_mask)")
    ranges: list[tuple[int, int]] = []
    for start, stop, keep in zip(store.episode_starts, store.episode_ends, episode_mask):
        if keep:
            if ranges and ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], int(stop))
            else:
                ranges.append((int(start), int(stop)))
    return ranges


def _stream_stats(store: EpisodeStore, source: str, kind: str, dims: tuple[int, int] | None,
                  ranges: list[tuple[int, int]], seed: int, desc: str) -> dict[str, np.ndarray]:
    """One pass over `source` in blocks, reshaped to (rows, *features) for RunningStats."""
    array = store[source]
    total = sum(stop - start for start, stop in ranges)
    if total == 0:
        raise DataError(store.path, "no rows selected to fit the normalizer on", key=f"data/{source}")
    pixels = array.shape[2:] if channels_first(array.shape) else array.shape[1:-1]
    per_row = {"rgb": int(np.prod(pixels)), "depth": int(np.prod(array.shape[1:3])),
               "point_cloud": array.shape[1] if array.ndim == 3 else 1}.get(kind, 1)
    stats = RunningStats(total * per_row, seed=seed)
    scale = image_value_scale(array) if kind == "rgb" else 1.0
    blocks = (block for start, stop in ranges for block in iter_blocks(array, start, stop))
    for pos, block in progress(blocks, desc, total=sum(len(block_starts(array, *rows)) for rows in ranges)):
        if dims is not None:
            block = block[..., dims[0] : dims[1]]
        if not np.isfinite(block).all():
            raise DataError(store.path, f"NaN or inf in rows {pos}..{pos + len(block)}", key=f"data/{source}",
                            fix="drop or repair those episodes before fitting")
        if kind == "rgb" and channels_first(block.shape):
            block = np.moveaxis(block, 1, -1)
        if kind in ("rgb", "depth", "point_cloud"):
            block = block.reshape(-1, 1 if kind == "depth" else block.shape[-1])
        for start in range(0, len(block), UPDATE_ROWS):  # bounds the float64 copies of image blocks
            stats.update(block[start : start + UPDATE_ROWS] / scale if scale != 1.0 else block[start : start + UPDATE_ROWS])
    return stats.result()

