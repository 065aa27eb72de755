"""What `robopolicy dataset info` and `validate` report about a store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.store import EpisodeStore, block_rows, block_starts
from robopolicy.datasets.zarr_io import (
    ChunkGrid,
    chunk_starts,
    describe_codec,
    missing_objects,
    read_rows,
    undecodable_chunks,
)
from robopolicy.progress import progress


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


def validate(store: EpisodeStore, deep: bool = False) -> list[Finding]:
    """Full scan beyond the checks done at open: missing chunk files (a listing, nothing decoded), non-finite
    values, image ranks, timestamps. deep=True also decodes every chunk of every array, images included, so
    that a damaged file is found before training reads it."""
    findings = []
    if store.has_interrupted_append:
        findings.append(Finding("warning", "meta", "an append was interrupted; its rows are ignored and are "
                                "dropped when the store is next opened with mode='a'"))
    arrays = store.stored_arrays()
    missing = {path: _check_chunks_present(path, array, rows) for path, (array, rows) in arrays.items()}
    findings += [finding for found in missing.values() for finding in found]
    for key in store.keys:
        array = store[key]
        findings += _check_image_rank(key, array.shape, array.dtype)
        if np.issubdtype(array.dtype, np.floating) and not missing.get(f"data/{key}"):
            findings += _scanned(f"data/{key}", _check_finite, store, key)
        if store.timestamps(key) is not None and not missing.get(f"timestamps/{key}"):
            findings += _scanned(f"timestamps/{key}", _check_timestamps, store, key)
    if deep:
        findings += _check_chunks_decode(arrays)
    return list(dict.fromkeys(findings))  # a chunk the value scans could not decode is found again by deep


def _scanned(key: str, check: Callable[[EpisodeStore, str], list[Finding]], store: EpisodeStore,
             data_key: str) -> list[Finding]:
    """The findings of a check that reads a key; a chunk it cannot decode is a finding too."""
    try:
        return check(store, data_key)
    except DataError as err:
        return [Finding("error", err.key or key, err.problem)]


def _check_chunks_present(path: str, array: zarr.Array, rows: int) -> list[Finding]:
    """Every chunk file (shard file, for sharded arrays) that the committed rows need is in the store's listing;
    zarr would read a missing one as zeros."""
    grid = ChunkGrid.of(array)
    missing = dict(missing_objects(array, rows))
    findings = []
    for first, last in _runs(sorted(missing)):
        files = f"file {missing[first]}" if first == last else f"files {missing[first]} ... {missing[last]}"
        findings.append(Finding("error", path, f"{grid.object_name(first, last)} missing: {files} (zarr would "
                                "read zeros in its place)"))
    return findings


def _check_chunks_decode(arrays: dict[str, tuple[zarr.Array, int]]) -> list[Finding]:
    """Decode every chunk of every array in blocks; name each chunk of a failing block that fails on its own."""
    total = sum(ChunkGrid.of(array).n_chunks(rows) for array, rows in arrays.values())
    bar = progress(None, "validate --deep", total=total)
    findings = []
    try:
        for path, (array, rows) in arrays.items():
            step = block_rows(array)
            for start in block_starts(array, 0, rows):
                stop = min(rows, (start // step + 1) * step)
                findings += _check_block_decodes(path, array, start, stop)
                bar.update(len(chunk_starts(array, start, stop)))
    finally:
        bar.close()
    return findings


def _check_block_decodes(path: str, array: zarr.Array, start: int, stop: int) -> list[Finding]:
    """Rows [start, stop) decode; else one finding per run of consecutive chunks that fail on their own, with the
    first one's error (missing chunks are _check_chunks_present's)."""
    try:
        read_rows(array, start, stop)
        return []
    except DataError:
        failed = undecodable_chunks(array, start, stop)
    grid = ChunkGrid.of(array)
    errors = dict(failed)
    return [Finding("error", path, f"{grid.chunk_name(first, last)} cannot be decoded "
                    f"({type(errors[first]).__name__}: {errors[first]})") for first, last in _runs(sorted(errors))]


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted integers as (first, last) runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def _check_image_rank(key: str, shape: tuple[int, ...], dtype: np.dtype) -> list[Finding]:
    """uint8 arrays of rank >= 3 are frames and must be (T, H, W, C) with C in 1, 3, 4."""
    if np.dtype(dtype) != np.uint8 or len(shape) < 3:
        return []
    if len(shape) == 4 and shape[-1] in (1, 3, 4):
        return []
    return [Finding("error", f"data/{key}", f"uint8 frames must be (T, H, W, C) with C in 1, 3, 4; got "
                    f"{tuple(shape)} (store grey frames as (T, H, W, 1))")]


def _check_finite(store: EpisodeStore, key: str) -> list[Finding]:
    """NaN or inf in a float key (its first row)."""
    row = store.first_non_finite(key)
    if row is None:
        return []
    return [Finding("error", f"data/{key}", f"NaN or inf at row {row} (episode {store.episode_of(row)})")]


def _check_timestamps(store: EpisodeStore, key: str) -> list[Finding]:
    """Capture times increase within every episode."""
    stamps = read_rows(store.timestamps(key), 0, store.n_steps)
    for index in range(store.n_episodes):
        rows = store.episode_slice(index)
        if np.any(np.diff(stamps[rows]) <= 0):
            return [Finding("error", f"timestamps/{key}", f"capture times not increasing in episode {index}")]
    return []
