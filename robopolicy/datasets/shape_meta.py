"""shape_meta: the one description of observation and action keys that every part is built from.

As a dict (in configs and checkpoints)::

    obs:
      img:       {shape: [3, 96, 96], type: rgb}                       # CHW inside the policy
      agent_pos: {shape: [2], type: low_dim, source: state, dims: [0, 2]}
      cloud:     {shape: [1024, 6], type: point_cloud, horizon: 2}
      instruction: {shape: [64], type: text}                          # the episode's task string
    action: {shape: [2]}      # frame: relative (and pose: {...}) for relative trajectories (datasets/action_frame.py)

Optional per obs key: `source` (the store key, default the obs key), `dims` ([start, stop)
of the last axis, for low_dim), `horizon` (steps of history, default n_obs_steps) and
`down_sample_steps` (stride between those steps, default 1). A `text` key is the episode's
instruction as byte tokens (datasets/text.py) of the given length, read from the store's
`episode_tasks` attribute; it has one step (horizon 1) and no source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from robopolicy.datasets.action_frame import ActionFrame, parse_action_frame

OBS_TYPES = ("rgb", "depth", "point_cloud", "low_dim", "text")


@dataclass(frozen=True)
class ObsSpec:
    """One observation key: its shape inside the policy, type, and where it comes from."""

    key: str
    shape: tuple[int, ...]
    type: str
    source: str
    dims: tuple[int, int] | None = None
    horizon: int | None = None
    down_sample_steps: int = 1


@dataclass(frozen=True)
class ShapeMeta:
    """Observation specs by key, and the action's shape and store key."""

    obs: dict[str, ObsSpec]
    action_shape: tuple[int, ...]
    action_source: str = "action"
    action_frame: ActionFrame | None = None  # relative trajectories; None: absolute actions

    @property
    def text_keys(self) -> list[str]:
        """The obs keys that hold an instruction (type text): a policy with any is told its task in words."""
        return [key for key, spec in self.obs.items() if spec.type == "text"]

    def to_dict(self) -> dict[str, Any]:
        """The plain-dict form written into configs and checkpoints."""
        obs = {}
        for key, spec in self.obs.items():
            entry = {k: v for k, v in asdict(spec).items() if k != "key" and v is not None}
            entry["shape"] = list(spec.shape)
            if spec.source == key:
                entry.pop("source")
            if spec.down_sample_steps == 1:
                entry.pop("down_sample_steps")
            if spec.dims is not None:
                entry["dims"] = list(spec.dims)
            obs[key] = entry
        action: dict[str, Any] = {"shape": list(self.action_shape)}
        if self.action_source != "action":
            action["source"] = self.action_source
        if self.action_frame is not None:
            action.update(frame="relative", pose=self.action_frame.to_dict())
        return {"obs": obs, "action": action}


def _positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"shape_meta {where} must be a positive integer, got {value!r}")
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"shape_meta {where}.shape must be a non-empty list of sizes, got {value!r}")
    return tuple(_positive_int(v, f"{where}.shape") for v in value)


def parse_shape_meta(meta: Mapping[str, Any] | ShapeMeta) -> ShapeMeta:
    """Check a shape_meta dict and turn it into a ShapeMeta; errors name the offending key."""
    if isinstance(meta, ShapeMeta):
        return meta
    if not isinstance(meta, Mapping) or "obs" not in meta or "action" not in meta:
        raise ValueError(f"shape_meta must be a mapping with 'obs' and 'action' entries, got {meta!r}")
    if not isinstance(meta["obs"], Mapping) or not isinstance(meta["action"], Mapping):
        raise ValueError("shape_meta 'obs' must map keys to specs and 'action' must be {shape: [...]}")
    obs = {}
    for key, entry in dict(meta["obs"]).items():
        where = f"obs.{key}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"shape_meta {where} must be a mapping like {{shape: [2], type: low_dim}}, got {entry!r}")
        kind = entry.get("type", "low_dim")
        if kind not in OBS_TYPES:
            raise ValueError(f"shape_meta {where}.type must be one of {OBS_TYPES}, got {kind!r}")
        shape = _shape(entry.get("shape"), where)
        expected_rank = {"rgb": 3, "depth": 2, "point_cloud": 2, "text": 1}.get(kind)
        if expected_rank is not None and len(shape) != expected_rank:
            layout = {"rgb": "[C, H, W]", "depth": "[H, W]", "point_cloud": "[N, 3|6]", "text": "[L] (tokens)"}[kind]
            raise ValueError(f"shape_meta {where}.shape must be {layout} for type {kind}, got {list(shape)}")
        dims = entry.get("dims")
        if dims is not None:
            if (kind != "low_dim" or not isinstance(dims, (list, tuple)) or len(dims) != 2
                    or not all(isinstance(d, int) for d in dims) or dims[1] - dims[0] != shape[-1]):
                raise ValueError(f"shape_meta {where}.dims must be [start, stop) of length shape[-1] on a low_dim key")
            dims = (int(dims[0]), int(dims[1]))
        horizon = entry.get("horizon")
        if kind == "text":
            if horizon not in (None, 1) or "source" in entry or entry.get("down_sample_steps", 1) != 1:
                raise ValueError(f"shape_meta {where} is a text key: one step of the episode's instruction, "
                                 "with no horizon, source or down_sample_steps")
            horizon = 1
        obs[key] = ObsSpec(
            key=key,
            shape=shape,
            type=kind,
            source=entry.get("source", key),
            dims=dims,
            horizon=None if horizon is None else _positive_int(horizon, f"{where}.horizon"),
            down_sample_steps=_positive_int(entry.get("down_sample_steps", 1), f"{where}.down_sample_steps"),
        )
    action = dict(meta["action"])
    unknown = sorted(set(action) - {"shape", "source", "frame", "pose"})
    if unknown:
        raise ValueError(f"shape_meta action has unknown entries {unknown}; it takes shape, source, frame, pose")
    shape = _shape(action.get("shape"), "action")
    frame = parse_action_frame(action, obs, math.prod(shape))
    return ShapeMeta(obs=obs, action_shape=shape, action_source=action.get("source", "action"), action_frame=frame)
