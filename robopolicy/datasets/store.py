"""The episode store: `data/<key>` arrays concatenated over time plus `meta/episode_ends`.

Reads Diffusion Policy / UMI / DP3 zarr v2 stores unchanged and writes zarr v3 (sharded
image chunks) or v2. Appends survive a killed process: on a local directory every file
write is an atomic rename (zarr's LocalStore), data rows are written before
`meta/episode_ends` grows, and a `pending_append` attribute brackets the append so that
rows of an interrupted append are recognised, ignored by readers and dropped by the
next writer. An episode exists once its end is in `meta/episode_ends`, never before.
(Files are not fsynced, so a power cut is not covered; fsspec stores are as atomic as
their backend's writes.)

One writer per store: create and open(mode="a") take an exclusive flock on
`<store>/.robopolicy.lock` (naming the holder's pid, host, time and command), held until
close(), the end of a `with` block, the store object's collection or the process's death;
a second writer gets a DataError naming the holder. Readers take no lock. Remote (URL)
stores are not locked. Every chunk is written, all-zero ones too, so that a missing chunk
file is always damage: read only, a missing chunk raises DataError (never zeros), and a
chunk that cannot be decoded raises DataError naming the key, the chunk and its rows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Union

import numcodecs.errors
import numpy as np
import zarr
from zarr.core.sync import sync

from robopolicy.atomic import ExclusiveLock, LockHeld, describe_holder
from robopolicy.datasets.errors import DataError
from robopolicy.datasets.image_codecs import IMAGE_CODECS
from robopolicy.datasets.zarr_io import (
    EXISTS_FIX,
    check_new_store_path,
    create_time_array,
    create_zarr_group,
    default_layout,
    empty_chunks_written,
    empty_directory,
    is_image_array,
    is_url,
    open_zarr_group,
    read_rows,
    register_chunk_grids,
    store_location,
    unknown_codec_error,
)
from robopolicy.progress import progress

log = logging.getLogger(__name__)

Array = Union[np.ndarray, zarr.Array]
PENDING_ATTR = "pending_append"
IMAGE_CODEC_ATTR = "image_codec"  # how image keys created later are compressed (set by create)
EPISODE_TASKS_ATTR = "episode_tasks"  # one task string (or null) per episode, in episode order (dataset convert)
LOCK_NAME = ".robopolicy.lock"  # inside a store directory: the writer's flock, naming the holder
# Rows read per block when streaming a key (bounded memory for image keys).
BLOCK_BYTES = 64 << 20


def block_rows(array: Array) -> int:
    """How many time steps of `array` make about BLOCK_BYTES, at least one chunk's worth."""
    row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize)
    rows = max(1, BLOCK_BYTES // row_bytes)
    chunk_rows = array.chunks[0] if isinstance(array, zarr.Array) else 1
    return max(chunk_rows, rows // chunk_rows * chunk_rows)


def block_starts(array: Array, start: int, stop: int) -> list[int]:
    """First rows of the chunk-aligned blocks that cover rows [start, stop)."""
    step = block_rows(array)
    return [start, *range((start // step + 1) * step, stop, step)] if start < stop else []


def iter_blocks(array: Array, start: int, stop: int, desc: str | None = None) -> Iterable[tuple[int, np.ndarray]]:
    """(row offset, numpy block) over rows [start, stop) in chunk-aligned blocks; a progress bar with desc."""
    step = block_rows(array)
    starts = block_starts(array, start, stop)
    blocks = ((pos, read_rows(array, pos, min(stop, (pos // step + 1) * step))) for pos in starts)
    return progress(blocks, desc, total=len(starts)) if desc else blocks


def _float_images_as_uint8(array: Array, stop: int, desc: str) -> np.ndarray:
    """Read float 0..255 frames as uint8 when every value is a whole number (lossless), else as they are."""
    out = np.empty((stop, *array.shape[1:]), dtype=np.uint8)
    for pos, block in iter_blocks(array, 0, stop, desc):
        rounded = np.rint(block)
        if not (np.array_equal(rounded, block) and block.min() >= 0 and block.max() <= 255):
            log.info("%s: float frames are not whole 0..255 values; kept as %s", desc, array.dtype)
            return read_rows(array, 0, stop)
        out[pos : pos + len(block)] = rounded
    return out


def image_value_scale(array: Array) -> float:
    """255 for uint8 frames and for float frames stored as 0..255 (older stores), else 1."""
    if array.dtype == np.uint8:
        return 255.0
    first = read_rows(array, 0, min(array.shape[0], 64))
    return 255.0 if first.size and float(first.max()) > 1.0 else 1.0


class EpisodeStore:
    """Episodic time-major arrays, lazily on disk (zarr) or loaded in memory (numpy).

    `store[key]` is the backing array; after an interrupted append it may hold rows past
    `n_steps`, which belong to no episode: index it through `episode_slice` or `read`.
    A store opened for writing holds the store's writer lock until close() (or a `with` block ends).
    """

    def __init__(
        self,
        arrays: Mapping[str, Array],
        episode_ends: np.ndarray,
        path: str,
        group: zarr.Group | None = None,
        timestamps: Mapping[str, Array] | None = None,
        attrs: Mapping[str, Any] | None = None,
        stored_keys: Iterable[str] | None = None,
    ):
        self._arrays = dict(arrays)
        self._stored_keys = sorted(stored_keys) if stored_keys is not None else None
        self._ends = np.asarray(episode_ends, dtype=np.int64)
        self.path = path
        self._group = group
        self._timestamps = dict(timestamps or {})
        self._attrs = dict(attrs or {})
        self._lock: ExclusiveLock | None = None
        self._closed = False

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        mode: str = "r",
        load: bool | Iterable[str] = False,
        storage_options: dict[str, Any] | None = None,
    ) -> EpisodeStore:
        """Open a store; mode "a" allows appends and takes the writer lock (DataError naming the holder when
        another writer has it). load=True or a list of keys reads into memory (read only)."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r} (use EpisodeStore.create for a new store)")
        if load and mode == "a":
            raise ValueError("load=... gives an in-memory copy whose appends would never reach disk; use mode='r'")
        location = store_location(path)
        if mode == "a":
            return cls._open_for_writing(location, writer_lock(location), storage_options)
        store = cls._from_group(location, open_zarr_group(location, mode="r", storage_options=storage_options))
        if load:
            return store.load(None if load is True else list(load))
        return store

    @classmethod
    def _open_for_writing(
        cls, location: str, lock: ExclusiveLock | None, storage_options: dict[str, Any] | None
    ) -> EpisodeStore:
        """Read the store under `lock` (so no other writer can change it meanwhile) and finish an interrupted append."""
        try:
            store = cls._from_group(location, open_zarr_group(location, mode="a", storage_options=storage_options))
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        store._lock = lock
        store._recover_interrupted_append()
        return store

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        zarr_format: int = 3,
        overwrite: bool = False,
        attrs: Mapping[str, Any] | None = None,
        storage_options: dict[str, Any] | None = None,
        image_codec: str = "blosc",
        image_quality: int | None = None,
    ) -> EpisodeStore:
        """Create an empty store (zarr v3 by default; v2 for tools that only read v2), holding its writer lock.
        uint8 image keys are compressed with `image_codec`: blosc (lossless zstd), none, jpegxl (lossless, or
        lossy at `image_quality`) or jpeg (quality 90 by default); see datasets.image_codecs."""
        if zarr_format not in (2, 3):
            raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format}")
        if image_codec not in IMAGE_CODECS:
            raise ValueError(f"image_codec must be one of {IMAGE_CODECS}, got {image_codec!r}")
        if image_codec != "blosc":
            attrs = {**(attrs or {}), IMAGE_CODEC_ATTR: {"codec": image_codec, "quality": image_quality}}
        location = store_location(path)
        check_new_store_path(location, overwrite)
        lock = _lock_new_store(location, overwrite)
        try:
            group = create_zarr_group(location, zarr_format, overwrite, storage_options)
            group.require_group("data")
            meta = group.require_group("meta")
            meta.create_array("episode_ends", shape=(0,), chunks=(1 << 14,), dtype="int64", fill_value=0)
            if attrs:
                group.attrs.update(dict(attrs))
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        store = cls({}, np.zeros(0, np.int64), location, group=group, attrs=attrs)
        store._lock = lock
        return store

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], episode_ends: np.ndarray, name: str = "<memory>") -> EpisodeStore:
        """An in-memory store over existing numpy arrays (checked like a store on disk)."""
        ends = np.asarray(episode_ends)
        check_episode_ends(name, ends, {f"data/{k}": len(v) for k, v in data.items()})
        return cls({k: np.asarray(v) for k, v in data.items()}, ends, name)

    @classmethod
    def _from_group(cls, location: str, group: zarr.Group) -> EpisodeStore:
        """Read the layout, check it, and build a lazy store; re-read once if an append raced us."""
        for attempt in range(3):
            ends_array = group.get("meta/episode_ends") if isinstance(group.get("meta"), zarr.Group) else None
            if not isinstance(ends_array, zarr.Array):
                raise DataError(
                    location, "missing meta/episode_ends", key="meta/episode_ends",
                    fix="a store needs meta/episode_ends: int64 end index of each episode in data/",
                )
            if not isinstance(group.get("data"), zarr.Group):
                raise DataError(location, "missing the data/ group", key="data", fix="arrays go under data/<key>")
            pending = group.attrs.get(PENDING_ATTR)
            register_chunk_grids(group.store, [ends_array])
            ends = _read_episode_ends(ends_array, pending)
            arrays = _list_arrays(location, group, "data")
            timestamps = _list_arrays(location, group, "timestamps")
            register_chunk_grids(group.store, [*arrays.values(), *timestamps.values()])
            lengths = {f"data/{k}": a.shape[0] for k, a in arrays.items()}
            lengths |= {f"timestamps/{k}": a.shape[0] for k, a in timestamps.items()}
            try:
                ends = check_episode_ends(location, ends, lengths, pending=pending)
                break
            except DataError:
                if attempt == 2 or pending is not None:
                    raise
                group = zarr.open_group(group.store, mode="r" if group.read_only else "a")
        return cls(arrays, ends, location, group=group, timestamps=timestamps, attrs=dict(group.attrs))

    # ------------------------------------------------------------------ reading
    @property
    def keys(self) -> list[str]:
        """Names of the data arrays."""
        return sorted(self._arrays)

    @property
    def stored_keys(self) -> list[str]:
        """Every data key of the store this one was opened or loaded from (a partial load keeps fewer in `keys`),
        for error messages that must list what the user's store holds."""
        return list(self._stored_keys) if self._stored_keys is not None else self.keys

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    def __getitem__(self, key: str) -> Array:
        if key not in self._arrays:
            raise DataError(self.path, "no such key", key=f"data/{key}", fix=f"keys in this store: {self.stored_keys}")
        return self._arrays[key]

    @property
    def episode_ends(self) -> np.ndarray:
        """(n_episodes,) int64 exclusive end row of each episode."""
        return self._ends.copy()

    @property
    def episode_starts(self) -> np.ndarray:
        """(n_episodes,) int64 first row of each episode."""
        return np.concatenate([[0], self._ends[:-1]]).astype(np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        """(n_episodes,) number of steps in each episode."""
        return np.diff(self._ends, prepend=0)

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_steps(self) -> int:
        """Rows that belong to committed episodes."""
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def attrs(self) -> dict[str, Any]:
        """Store-level metadata (e.g. `fps`, `env_args`), minus robopolicy's own bookkeeping."""
        return {k: v for k, v in self._attrs.items() if k != PENDING_ATTR}

    @property
    def fps(self) -> float | None:
        """Recording rate: the `fps` attribute, else estimated from timestamps, else None."""
        if "fps" in self._attrs:
            return float(self._attrs["fps"])
        if self._timestamps and self.n_episodes and self.episode_lengths[0] > 1:
            stamps = next(iter(self._timestamps.values()))
            first = np.asarray(stamps[: self.episode_lengths[0]], dtype=np.float64)
            return float(1.0 / np.median(np.diff(first)))
        return None

    @property
    def episode_tasks(self) -> list[str | None]:
        """Each episode's task string (the `episode_tasks` attribute), for language conditioning; None where the
        source named none or the episode was appended by a writer that records no task."""
        tasks = list(self._attrs.get(EPISODE_TASKS_ATTR) or [])[: self.n_episodes]
        return tasks + [None] * (self.n_episodes - len(tasks))

    @property
    def task_names(self) -> list[str]:
        """The distinct task strings the episodes name, sorted (what a policy trained on the store was told)."""
        return sorted({task for task in self.episode_tasks if task})

    @property
    def zarr_format(self) -> int | None:
        """2 or 3 for a store on disk, None in memory."""
        return None if self._group is None else self._group.metadata.zarr_format

    @property
    def has_interrupted_append(self) -> bool:
        """True when an append died before committing; its rows are ignored."""
        return PENDING_ATTR in self._attrs

    @property
    def is_in_memory(self) -> bool:
        return all(isinstance(a, np.ndarray) for a in self._arrays.values())

    def stored_arrays(self) -> dict[str, tuple[zarr.Array, int]]:
        """Each zarr array of a store on disk by its path, with the rows committed episodes use (for validation)."""
        if self._group is None:
            return {}
        arrays = {f"data/{k}": (a, self.n_steps) for k, a in sorted(self._arrays.items()) if isinstance(a, zarr.Array)}
        arrays |= {f"timestamps/{k}": (a, self.n_steps) for k, a in sorted(self._timestamps.items())
                   if isinstance(a, zarr.Array)}
        arrays["meta/episode_ends"] = (self._group["meta/episode_ends"], self.n_episodes)
        return arrays

    def timestamps(self, key: str) -> Array | None:
        """Capture times (seconds) of each row of `key`, when the recorder stored them."""
        return self._timestamps.get(key)

    def episode_slice(self, index: int) -> slice:
        """Rows of episode `index` (negative counts from the end)."""
        index = range(self.n_episodes)[index]
        start = 0 if index == 0 else int(self._ends[index - 1])
        return slice(start, int(self._ends[index]))

    def episode_of(self, row: int) -> int:
        """Index of the episode that holds `row`."""
        return int(np.searchsorted(self._ends, row, side="right"))

    def first_non_finite(self, key: str) -> int | None:
        """First row of `key` holding NaN or inf (scanned in blocks), or None."""
        for pos, block in iter_blocks(self[key], 0, self.n_steps, f"scan {key}"):
            bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
            if bad.any():
                return pos + int(np.argmax(bad))
        return None

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of `key` as numpy; stop defaults to, and is capped at, n_steps."""
        stop = self.n_steps if stop is None else min(stop, self.n_steps)
        return read_rows(self[key], start, stop)

    def episode(self, index: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """All rows of one episode for the given keys (all keys by default)."""
        rows = self.episode_slice(index)
        return {k: self.read(k, rows.start, rows.stop) for k in (keys or self.keys)}

    def load(self, keys: Iterable[str] | None = None, images_as_uint8: bool = True) -> EpisodeStore:
        """Read keys into memory. Float 0..255 frames read from disk become uint8 when that is lossless."""
        keys = list(keys) if keys is not None else self.keys
        arrays: dict[str, np.ndarray] = {}
        for key in keys:
            array = self[key]
            if isinstance(array, np.ndarray):
                arrays[key] = array[: self.n_steps]
            elif images_as_uint8 and array.dtype != np.uint8 and is_image_array(array.shape, array.dtype) \
                    and image_value_scale(array) == 255.0:
                arrays[key] = _float_images_as_uint8(array, self.n_steps, f"load {key}")
            else:
                arrays[key] = np.empty((self.n_steps, *array.shape[1:]), dtype=array.dtype)
                for pos, block in iter_blocks(array, 0, self.n_steps, f"load {key}"):
                    arrays[key][pos : pos + len(block)] = block
        timestamps = {k: read_rows(v, 0, self.n_steps) for k, v in self._timestamps.items() if k in keys}
        return EpisodeStore(arrays, self._ends, self.path, timestamps=timestamps, attrs=self.attrs,
                            stored_keys=self.stored_keys)

    # ------------------------------------------------------------------ writing
    def close(self) -> None:
        """Stop writing and release the writer lock, so that another process may write; reads keep working."""
        if self._lock is not None:
            self._lock.release()
        if self._group is not None:
            self._closed = True

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _check_writable(self, action: str) -> None:
        """Refuse a write to a store on disk that is open read only or closed."""
        if self._closed:
            raise DataError(self.path, "store is closed", fix=f"open it again with mode='a' to {action}")
        if self._group.read_only:
            raise DataError(self.path, "store is open read-only", fix=f"open it with mode='a' to {action}")

    def update_attrs(self, values: Mapping[str, Any]) -> None:
        """Set store-level attributes; on disk they are written at once (one atomic file write)."""
        if self._group is not None:
            self._check_writable("change it")
            self._group.attrs.update(dict(values))
        self._attrs.update(values)

    def append_episode(
        self, data: Mapping[str, np.ndarray], timestamps: Mapping[str, np.ndarray] | None = None
    ) -> int:
        """Append one episode atomically and return its index.

        `data[key]` is (T, ...) for every key (the same keys as the store's, once it has any);
        `timestamps[key]` is (T,) capture times in seconds, for the same keys in every episode.
        """
        data = {k: np.asarray(v) for k, v in data.items()}
        timestamps = {k: np.asarray(v, dtype=np.float64) for k, v in (timestamps or {}).items()}
        length = self._check_episode(data, timestamps)
        start, index = self.n_steps, self.n_episodes
        if self._group is None:
            for key, value in data.items():
                old = self._arrays.get(key, value[:0])
                self._arrays[key] = np.concatenate([old[:start], value])
            for key, value in timestamps.items():
                old = self._timestamps.get(key, value[:0])
                self._timestamps[key] = np.concatenate([old[:start], value])
        else:
            self._check_writable("append")
            self._group.attrs[PENDING_ATTR] = {"n_steps": start, "n_episodes": index}
            for key, value in data.items():
                self._arrays[key] = self._write_rows(self._group.require_group("data"), key, value, start)
            for key, value in timestamps.items():
                self._timestamps[key] = self._write_rows(self._group.require_group("timestamps"), key, value, start)
            ends = self._group["meta/episode_ends"]
            ends.resize((index + 1,))
            ends[index] = start + length
            del self._group.attrs[PENDING_ATTR]
        self._ends = np.append(self._ends, start + length).astype(np.int64)
        return index

    def _check_episode(self, data: dict[str, np.ndarray], timestamps: dict[str, np.ndarray]) -> int:
        """Check one episode against the store's keys, shapes and dtypes; return its length."""
        if not data:
            raise DataError(self.path, "empty episode: no keys given", fix="pass {key: (T, ...) array}")
        if self._arrays and set(data) != set(self._arrays):
            raise DataError(
                self.path, f"episode keys {sorted(data)} differ from the store's {self.keys}",
                fix="every episode must carry the same keys",
            )
        lengths = {k: len(v) if v.ndim else 0 for k, v in data.items()}
        length = next(iter(lengths.values()))
        if length == 0 or any(n != length for n in lengths.values()):
            raise DataError(self.path, f"episode arrays must share one non-zero length, got {lengths}",
                            fix="every key needs one row per time step")
        for key, value in data.items():
            existing = self._arrays.get(key)
            if existing is not None and value.shape[1:] != existing.shape[1:]:
                raise DataError(self.path, f"rows of shape {value.shape[1:]}, store has {existing.shape[1:]}",
                                key=f"data/{key}", fix="reshape the episode's array to match")
            if existing is not None and not np.can_cast(value.dtype, existing.dtype, casting="same_kind"):
                raise DataError(self.path, f"dtype {value.dtype} cannot be stored as {existing.dtype}",
                                key=f"data/{key}", fix=f"convert it to {existing.dtype}")
        for key, value in timestamps.items():
            if key not in data or value.shape != (length,):
                raise DataError(self.path, f"timestamps need shape ({length},) and a matching data key, got {value.shape}",
                                key=f"timestamps/{key}", fix="one capture time per row of an existing key")
        if self.n_episodes and set(timestamps) != set(self._timestamps):
            raise DataError(self.path, f"timestamps given for {sorted(timestamps)}, earlier episodes have them for "
                            f"{sorted(self._timestamps)}", key="timestamps",
                            fix="give capture times for the same keys in every episode")
        return length

    def _write_rows(self, parent: zarr.Group, key: str, value: np.ndarray, start: int) -> zarr.Array:
        """Grow `parent/key` to start + len(value) rows and write them (all-zero chunks too)."""
        if key in parent:
            array = empty_chunks_written(parent[key])
        else:
            choice = self._attrs.get(IMAGE_CODEC_ATTR, {"codec": "blosc", "quality": None})
            layout = default_layout(value.shape[1:], value.dtype, self._group.metadata.zarr_format,
                                    choice["codec"], choice["quality"])
            array = create_time_array(parent, key, value.shape[1:], value.dtype, layout)
        array.resize((start + len(value), *array.shape[1:]))
        array[start:] = value
        return array

    def _recover_interrupted_append(self) -> None:
        """Drop rows and episode ends that an interrupted append left past the last episode; runs only from
        _open_for_writing, under the writer lock, so the append it drops is never another writer's live one."""
        pending = self._group.attrs.get(PENDING_ATTR)
        if pending is None:
            return
        kept = self.n_episodes - pending["n_episodes"]
        log.warning("%s: an append was interrupted after episode %d; %s", self.path, pending["n_episodes"],
                    "its episode was complete and is kept" if kept else "its rows are dropped")
        for parent, arrays in (("data", self._arrays), ("timestamps", self._timestamps)):
            for key, array in list(arrays.items()):
                if self.n_episodes == 0:  # the store's first append: its arrays may not match the next one
                    del self._group[parent][key]
                    del arrays[key]
                else:
                    array.resize((self.n_steps, *array.shape[1:]))
        self._group["meta/episode_ends"].resize((self.n_episodes,))
        del self._group.attrs[PENDING_ATTR]
        self._attrs.pop(PENDING_ATTR, None)

    def copy_to(
        self, path: str | os.PathLike, zarr_format: int = 3, keys: Iterable[str] | None = None, overwrite: bool = False
    ) -> EpisodeStore:
        """Write this store (or chosen keys) as a new store; values and dtypes are kept."""
        if store_location(path) == self.path or os.path.realpath(store_location(path)) == os.path.realpath(self.path):
            raise DataError(self.path, "cannot copy a store onto itself", fix="pick a different destination path")
        dst = EpisodeStore.create(path, zarr_format=zarr_format, overwrite=overwrite, attrs=self.attrs)
        keys = list(keys) if keys is not None else self.keys
        for parent, source in (("data", {k: self[k] for k in keys}), ("timestamps", self._timestamps)):
            group = dst._group.require_group(parent)
            for key, array in source.items():
                if key not in keys:
                    continue
                out = create_time_array(group, key, array.shape[1:], array.dtype)
                out.resize((self.n_steps, *array.shape[1:]))
                for pos, block in iter_blocks(array, 0, self.n_steps, f"copy {key}"):
                    out[pos : pos + len(block)] = block
        ends = dst._group["meta/episode_ends"]
        ends.resize((self.n_episodes,))
        ends[:] = self._ends
        lock, dst._lock = dst._lock, None
        return EpisodeStore._open_for_writing(dst.path, lock, None)


def writer_lock(location: str) -> ExclusiveLock | None:
    """The lock that makes this process the one writer of the store directory at `location`; None for a URL
    (which cannot be locked: warned) or a path that is no directory (opening it fails next)."""
    if is_url(location):
        log.warning("%s: a remote store takes no writer lock; make sure no other process writes to it", location)
        return None
    if not Path(location).is_dir():
        return None
    try:
        return ExclusiveLock(Path(location) / LOCK_NAME)
    except LockHeld as held:
        ours = held.holder.get("pid") == os.getpid()
        raise DataError(
            location, f"another writer has it open: {describe_holder(held.holder)}",
            fix=("close that store first (store.close() or a `with` block)" if ours else
                 "wait for that writer to finish, or stop it; readers (mode='r') may open the store meanwhile. A "
                 "crashed writer's lock goes with its process, so a held lock means its holder is alive"),
        ) from None
    except OSError as err:
        raise DataError(location, f"cannot take the writer lock {LOCK_NAME}: {err}",
                        fix="open it read only (mode='r'), or copy the store somewhere writable") from err


def _lock_new_store(location: str, overwrite: bool) -> ExclusiveLock | None:
    """Make the directory of a new store and take its writer lock; empty it when it replaces an old store."""
    if is_url(location):
        return writer_lock(location)
    Path(location).mkdir(parents=True, exist_ok=True)
    lock = writer_lock(location)
    if overwrite:
        empty_directory(location, keep=LOCK_NAME)
    elif any(entry.name != LOCK_NAME for entry in Path(location).iterdir()):
        lock.release()
        raise DataError(location, "already exists", fix=EXISTS_FIX)
    return lock


def check_episode_ends(
    path: str, ends: np.ndarray, lengths: Mapping[str, int], pending: Mapping[str, int] | None = None
) -> np.ndarray:
    """Check episode_ends against the data lengths; return the committed ends.

    With a `pending` append marker, data may run past the last end and one trailing,
    unwritten end may be present; both belong to the interrupted append and are ignored.
    """
    key = "meta/episode_ends"
    if ends.ndim != 1 or not np.issubdtype(ends.dtype, np.integer):
        raise DataError(path, f"must be a 1-D integer array, got shape {ends.shape} dtype {ends.dtype}", key=key,
                        fix="store the end row of each episode as int64")
    if pending is not None and len(ends) > pending["n_episodes"]:
        committed = ends[: pending["n_episodes"]]
        last = int(committed[-1]) if len(committed) else 0
        tail_ok = ends[-1] > last and all(ends[-1] <= n for n in lengths.values())
        ends = ends if tail_ok and len(ends) == pending["n_episodes"] + 1 else committed
    ends = ends.astype(np.int64)
    if len(ends) and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
        bad = int(np.argmax(np.diff(np.concatenate([[0], ends])) <= 0))
        raise DataError(path, f"not strictly increasing at episode {bad} (value {int(ends[bad])})", key=key,
                        fix="each entry is the exclusive end row of an episode; empty episodes are not allowed")
    if len(set(lengths.values())) > 1 and pending is None:
        raise DataError(path, f"keys have different lengths: {dict(lengths)}", key="data",
                        fix="every data/<key> (and timestamps/<key>) needs one row per time step")
    end = int(ends[-1]) if len(ends) else 0
    if end and not lengths:
        raise DataError(path, f"episode_ends counts {end} rows but data/ holds no arrays", key="data",
                        fix="store each recorded key as data/<key>")
    for name, n in lengths.items():
        if n < end or (n > end and pending is None):
            raise DataError(
                path, f"episode_ends ends at row {end} but {name} has {n} rows", key=key,
                fix="the last episode end must equal the length of every data array",
            )
    return ends


def _read_episode_ends(array: zarr.Array, pending: Mapping[str, int] | None) -> np.ndarray:
    """meta/episode_ends as numpy. The one trailing end of an interrupted append may lie in a chunk it never
    wrote; it reads as 0, which check_episode_ends drops."""
    if pending is None or array.shape[0] <= pending["n_episodes"]:
        return read_rows(array, 0, array.shape[0])
    committed = read_rows(array, 0, pending["n_episodes"])
    try:
        tail = read_rows(array, pending["n_episodes"], array.shape[0])
    except DataError:  # the chunk of the unwritten end does not exist yet
        tail = np.zeros(array.shape[0] - pending["n_episodes"], array.dtype)
    return np.concatenate([committed, tail])


def _list_arrays(location: str, group: zarr.Group, name: str) -> dict[str, zarr.Array]:
    """The arrays of subgroup `name` (empty when it is absent); unknown codecs become a DataError."""
    parent = group.get(name)
    if not isinstance(parent, zarr.Group):
        return {}
    try:
        return dict(parent.arrays())
    except numcodecs.errors.UnknownCodecError as err:
        raise unknown_codec_error(location, _member_with_unknown_codec(parent), err) from err


def _member_with_unknown_codec(parent: zarr.Group) -> str:
    """The path of the first member of `parent` whose metadata names a codec not installed here."""
    async def child_names() -> list[str]:
        return [c async for c in parent.store.list_dir(parent.path) if not c.startswith(".") and c != "zarr.json"]

    for child in sorted(sync(child_names())):
        try:
            parent[child]
        except numcodecs.errors.UnknownCodecError:
            return f"{parent.path}/{child}"
    return parent.path
