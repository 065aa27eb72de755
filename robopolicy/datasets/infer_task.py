"""A task section built from an episode store alone, so that `robopolicy train data=STORE` needs no YAML.

Each key is read by its dtype, rank and name: frames (uint8, or float holding 0..255, as (T, H, W, C) or
channels-first (T, C, H, W)) become
rgb, one-channel float frames and keys named like depth become depth, (T, N, 3|6) floats point clouds, and
(T, D) numbers (and small (T, N, D) arrays such as keypoints) low-dim. The action key is `action` or
`actions` unless named. Bookkeeping columns (indices, timestamps, rewards, done flags) are never
observations unless picked by name. A store whose episodes name two or more tasks (`episode_tasks`) gets a
text key `instruction`, so the policy is told which task each episode shows (name it in obs=[...] to keep
it for a store of one task; leave it out of obs=[...] to train without it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.layout import channels_first
from robopolicy.datasets.sources import require_tasks
from robopolicy.datasets.store import EpisodeStore, image_value_scale
from robopolicy.datasets.text import token_length

log = logging.getLogger(__name__)
ACTION_KEYS = ("action", "actions")
# never observations unless picked with obs=[...]: LeRobot's and robomimic's bookkeeping and outcome columns
NOT_OBSERVATIONS = re.compile(r"(^|[._/])(index|frame_index|episode_index|task_index|timestamps?|rewards?|"
                              r"dones?|success|terminals?|truncated|is_first|is_last|is_terminal)$")
INSTRUCTION_KEY = "instruction"  # the text key of the episodes' task strings
PREFIXES = ("observation.", "observations.", "observation/", "observations/", "obs.", "obs/")
VAL_RATIO = 0.1
CROP_FRACTION = 0.9  # random crops of 90% of the frame, as robomimic and Diffusion Policy train image policies
MIN_KEYPOINT_FEATURES = 33  # the ResNet trunk's smallest input that still leaves a spatial map to pool keypoints on
MAX_LOW_DIM_MATRIX = 64  # small (T, N, D) arrays such as Push-T's 9 keypoints are low-dim vectors
LARGE_IMAGE = 128 * 128  # frames above this many pixels get a narrower trunk; resize them when converting


def obs_name(key: str) -> str:
    """The shape_meta name of a store key: without an `observation.` prefix, other separators as `_`."""
    for prefix in PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            key = key[len(prefix):]
            break
    return re.sub(r"[^0-9A-Za-z_]", "_", key)


def _frame_size(array: Any) -> tuple[int, int, int] | None:
    """(C, H, W) of (T, H, W, C) or channels-first (T, C, H, W) frames: uint8, or float holding 0..255."""
    shape, dtype = tuple(array.shape), np.dtype(array.dtype)
    if len(shape) != 4 or not (dtype == np.uint8 or (np.issubdtype(dtype, np.floating)
                                                      and image_value_scale(array) == 255.0)):
        return None
    c, h, w = (shape[1], shape[2], shape[3]) if channels_first(shape) else (shape[3], shape[1], shape[2])
    return (c, h, w) if c in (1, 3, 4) and min(h, w) >= 8 else None


def classify(key: str, array: Any) -> dict[str, Any] | None:
    """The shape_meta entry of one store key, or None when it is no observation (text, 1-D columns)."""
    shape, dtype = tuple(array.shape[1:]), np.dtype(array.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        return None
    named_depth = "depth" in key.lower()
    if len(shape) == 3 and shape[-1] == 1 and (named_depth or dtype != np.uint8):
        return {"shape": list(shape[:2]), "type": "depth"}
    frames = _frame_size(array)
    if frames is not None:
        return {"shape": list(frames), "type": "rgb"}
    if len(shape) == 2 and named_depth and min(shape) >= 8:
        return {"shape": list(shape), "type": "depth"}
    if len(shape) == 2 and shape[-1] in (3, 6) and shape[0] >= 16 and np.issubdtype(dtype, np.floating):
        return {"shape": list(shape), "type": "point_cloud"}
    if len(shape) == 1 or (len(shape) == 2 and shape[0] * shape[1] <= MAX_LOW_DIM_MATRIX):
        return {"shape": list(shape), "type": "low_dim"}
    return None


def pick_action(store: EpisodeStore, action: str | None) -> str:
    """The action key: the one named, else `action` or `actions`; absence or ambiguity lists the keys."""
    if action is not None:
        if action not in store:
            raise DataError(store.path, f"no action key {action!r}", key=f"data/{action}",
                            fix=f"pick action=KEY from the store's keys {store.keys}")
        return action
    found = [k for k in ACTION_KEYS if k in store]
    if len(found) != 1:
        problem = "both 'action' and 'actions'" if found else "no 'action' or 'actions' key"
        raise DataError(store.path, problem, key="data/action", fix=f"name it with action=KEY; keys: {store.keys}")
    return found[0]


def infer_shape_meta(store: EpisodeStore, obs: Sequence[str] | None = None,
                     action: str | None = None) -> dict[str, Any]:
    """shape_meta for `store`: every observation-like key (or those in `obs`) and the action key."""
    action_key = pick_action(store, action)
    if store[action_key].ndim != 2:
        raise DataError(store.path, f"actions must be (T, D) rows, got {tuple(store[action_key].shape)}",
                        key=f"data/{action_key}", fix="pick another action=KEY")
    chosen = list(obs) if obs is not None else [k for k in store.keys if k != action_key
                                                and not NOT_OBSERVATIONS.search(k)]
    entries: dict[str, Any] = {}
    if obs is None and INSTRUCTION_KEY not in store and all(store.episode_tasks) and len(store.task_names) > 1:
        chosen.append(INSTRUCTION_KEY)
    for key in chosen:
        if key == INSTRUCTION_KEY and key not in store:
            entries[key] = instruction_entry(store)
            continue
        if key not in store:
            raise DataError(store.path, f"no observation key {key!r}", key=f"data/{key}",
                            fix=f"pick obs=[...] from the store's keys {store.keys}")
        entry = classify(key, store[key])
        if entry is None:
            if obs is not None:
                raise DataError(store.path, f"{tuple(store[key].shape)} {store[key].dtype} is no observation robopolicy"
                                " reads (frames, depth, point clouds or (T, D) numbers)", key=f"data/{key}",
                                fix="leave it out of obs=[...]")
            log.info("%s: data/%s %s is not used as an observation", store.path, key, tuple(store[key].shape))
            continue
        name = obs_name(key)
        if name in entries:
            raise DataError(store.path, f"keys {key!r} and {entries[name].get('source', name)!r} both map to {name!r}",
                            key=f"data/{key}", fix="pick one of them with obs=[...]")
        entries[name] = entry if name == key else {**entry, "source": key}
    if not entries:
        raise DataError(store.path, "no observation keys", fix=f"pick obs=[...] from the store's keys {store.keys}")
    meta_action: dict[str, Any] = {"shape": [int(store[action_key].shape[1])]}
    if action_key != "action":
        meta_action["source"] = action_key
    return {"obs": entries, "action": meta_action}


def instruction_entry(store: EpisodeStore) -> dict[str, Any]:
    """The text key of the episodes' instructions, long enough for the longest."""
    require_tasks(store, INSTRUCTION_KEY)
    log.info("%s: %d tasks, so the policy is told each episode's instruction (obs key %s)", store.path,
             len(store.task_names), INSTRUCTION_KEY)
    return {"shape": [token_length(store.task_names)], "type": "text"}


def encoder_hints(shape_meta: dict[str, Any]) -> dict[str, Any]:
    """Image encoder settings for the frame size: a 90% random crop, and a narrower trunk for large frames."""
    sizes = [tuple(e["shape"][1:]) for e in shape_meta["obs"].values() if e["type"] == "rgb"]
    if not sizes:
        return {}
    h, w = min(s[0] for s in sizes), min(s[1] for s in sizes)
    image: dict[str, Any] = {"crop_shape": [max(1, round(h * CROP_FRACTION)), max(1, round(w * CROP_FRACTION))]}
    if min(image["crop_shape"]) < MIN_KEYPOINT_FEATURES:
        image["pool"] = "avg"
    if h * w > LARGE_IMAGE:
        image["base_width"] = 32
        log.warning("frames of %dx%d make a slow encoder: convert with resize=[96,96] (or similar) for fast training",
                    h, w)
    return {"image": image}


def infer_task(path: str, obs: Sequence[str] | None = None, action: str | None = None,
               name: str | None = None) -> dict[str, Any]:
    """The task section (as configs/task/*.yaml holds it) for the store at `path`, with the encoder settings its
    frames need and the control rate from its fps."""
    store = EpisodeStore.open(path)
    shape_meta = infer_shape_meta(store, obs, action)
    task: dict[str, Any] = {
        "name": name or obs_name(Path(str(path).rstrip("/")).name.removesuffix(".zip").removesuffix(".zarr")),
        "dataset": {"path": str(path), "val_ratio": VAL_RATIO if store.n_episodes > 1 else 0.0,
                    "max_train_episodes": None, "split_seed": 42, "n_latency_steps": 0},
        "shape_meta": shape_meta,
        "normalizer": {},
        "env": None,
        "control_hz": store.fps,
    }
    hints = encoder_hints(shape_meta)
    if hints:
        task["encoder"] = hints
    return task
