"""Where each shape_meta key's values live in a store, checked once for the dataset and the normalizer."""

from __future__ import annotations

import numpy as np

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.shape_meta import ObsSpec, ShapeMeta
from robopolicy.datasets.store import EPISODE_TASKS_ATTR, Array, EpisodeStore
from robopolicy.datasets.text import instruction_tokens, token_length


def _source(store: EpisodeStore, key: str, role: str) -> Array:
    if key not in store:
        raise DataError(store.path, f"{role} key not in the store", key=f"data/{key}",
                        fix=f"the store holds {store.stored_keys}: set `source:` in shape_meta to one of them "
                            "(or train with data=STORE obs=[...] action=KEY)")
    array = store[key]
    if np.dtype(array.dtype).kind not in "biuf":
        raise DataError(store.path, f"{role} values are {np.dtype(array.dtype)}, not numbers", key=f"data/{key}",
                        fix="store them as float32 (convert text or objects to numbers when writing the store)")
    return array


def _check_rows(store: EpisodeStore, array: Array, shape: tuple[int, ...], key: str) -> None:
    if tuple(array.shape[1:]) != tuple(shape):
        raise DataError(store.path, f"rows have shape {tuple(array.shape[1:])}, shape_meta says {list(shape)}",
                        key=f"data/{key}", fix="correct shape_meta or the data")


def check_finite(store: EpisodeStore, key: str) -> None:
    """Low-dim values and actions must be finite: one NaN poisons the normalizer and the loss."""
    row = store.first_non_finite(key) if np.issubdtype(store[key].dtype, np.floating) else None
    if row is not None:
        raise DataError(store.path, f"NaN or inf at row {row} (episode {store.episode_of(row)})",
                        key=f"data/{key}", fix="drop or repair that episode before training")


def require_tasks(store: EpisodeStore, key: str) -> list[str]:
    """Every episode's task string, for the text key `key`; a DataError naming the first episode without one."""
    tasks = store.episode_tasks
    missing = [episode for episode, task in enumerate(tasks) if not task]
    if missing:
        raise DataError(store.path, f"{len(missing)} of {len(tasks)} episodes have no task string (first: episode "
                        f"{missing[0]}), so obs.{key} has no instruction to read", key=f"attrs/{EPISODE_TASKS_ATTR}",
                        fix="convert from a source that names each episode's task (LeRobot `tasks`, robomimic "
                            "`ep_meta.lang`), generate demos with robopolicy demos, or leave the text key out")
    return tasks


def instruction_rows(store: EpisodeStore, spec: ObsSpec) -> np.ndarray:
    """(n_steps, L) uint8: every row's episode instruction as byte tokens, from the store's `episode_tasks`."""
    where = f"attrs/{EPISODE_TASKS_ATTR}"
    distinct, index = np.unique(np.array(require_tasks(store, spec.key), dtype=object), return_inverse=True)
    try:
        table = instruction_tokens(list(distinct), spec.shape[0])
    except ValueError as error:
        longest = token_length([t for t in distinct if isinstance(t, str)])
        raise DataError(store.path, str(error), key=where, fix=f"give every episode a non-blank task without NUL "
                        f"bytes; for long ones set obs.{spec.key}.shape to [{longest}]") from None
    return table[np.repeat(index.reshape(-1), store.episode_lengths)]


def obs_source(store: EpisodeStore, spec: ObsSpec) -> Array:
    """The store array behind one obs key, after checking its layout against the spec (a text key's rows are
    built from the episodes' instructions)."""
    if spec.type == "text":
        return instruction_rows(store, spec)
    array = _source(store, spec.source, f"obs.{spec.key}")
    where = f"data/{spec.source}"
    if spec.type == "rgb":
        c, h, w = spec.shape
        if array.ndim != 4 or tuple(array.shape[1:]) not in ((h, w, c), (c, h, w)):
            raise DataError(store.path, f"images must be (T, H, W, C) = (T, {h}, {w}, {c}) (or channels-first) for "
                            f"shape_meta {list(spec.shape)}, got {tuple(array.shape)}", key=where,
                            fix="store frames as uint8 HWC, or correct shape_meta")
    elif spec.type == "depth":
        if array.ndim not in (3, 4) or tuple(array.shape[1:3]) != spec.shape or array.shape[3:] not in ((), (1,)):
            raise DataError(store.path, f"depth must be (T, H, W) or (T, H, W, 1) with H, W = {spec.shape}, "
                            f"got {tuple(array.shape)}", key=where,
                            fix="store one depth channel per frame, or correct shape_meta")
    elif spec.type == "point_cloud":
        _check_rows(store, array, spec.shape, spec.source)
    else:
        width = array.shape[-1] if array.ndim > 1 else 1
        if spec.dims is not None and (array.ndim != 2 or spec.dims[1] > width):
            raise DataError(store.path, f"dims {list(spec.dims)} need (T, D) rows with D >= {spec.dims[1]}, "
                            f"got {tuple(array.shape)}", key=where, fix="fix `dims` in shape_meta")
        if spec.dims is None:
            _check_rows(store, array, spec.shape, spec.source)
        check_finite(store, spec.source)
    return array


def action_source(store: EpisodeStore, meta: ShapeMeta) -> Array:
    """The store array of actions, checked for shape and finite values."""
    array = _source(store, meta.action_source, "action")
    _check_rows(store, array, meta.action_shape, meta.action_source)
    check_finite(store, meta.action_source)
    return array
