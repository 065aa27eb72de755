"""Relative trajectories (UMI, Chi et al. 2024): actions and end-effector poses in the frame of the latest observed
pose.

With `shape_meta.action: {shape: [D], frame: relative}` a policy sees the end-effector position and 6D rotation of
each observation step, and predicts each action's position and 6D rotation, relative to the pose of the latest
observation step: p' = R0^T (p - p0), R' = R0^T R. The conversion is inside the policy (`Policy.normalize_obs`,
`normalize_action`, `unnormalize_action`; the tensor math is in datasets/relative.py, so that this module, which
shape_meta reads, stays free of torch for the runtime's clients), so training, evaluation, an exported artifact and
the runtime all hand the policy absolute poses and get absolute actions back, converted with the pose of the
observation the chunk was computed from, which is what makes a relative chunk stay right when it
executes late (UMI's latency argument). Other action dimensions (the gripper) and other observation keys are left
as they are.

`pose` names the obs keys of the reference pose and where the action's position and rotation sit; by default the
low-dim key of shape [3] whose name (or source) ends in `eef_pos`, the one of shape [6] whose name holds `rot6d`,
and the action's first 9 dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FRAMES = ("absolute", "relative")


@dataclass(frozen=True)
class ActionFrame:
    """Where the reference pose is read and which action dimensions are a pose (see the module docstring)."""

    position: str  # obs key (low_dim, shape [3]) of the end-effector position
    rotation: str | None = None  # obs key (low_dim, shape [6]) of its rotation as 6D; None: positions only
    action_position: int = 0  # first of the action's 3 position dimensions
    action_rotation: int | None = 3  # first of its 6 rotation dimensions (6D); None: the action has no rotation

    @property
    def obs_keys(self) -> list[str]:
        return [key for key in (self.position, self.rotation) if key is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "rotation": self.rotation, "action_position": self.action_position,
                "action_rotation": self.action_rotation}


def _default_key(obs: Mapping[str, Any], size: int, matches: Any) -> str | None:
    found = [key for key, spec in obs.items() if spec.type == "low_dim" and spec.shape == (size,)
             and (matches(key) or matches(spec.source))]
    return found[0] if len(found) == 1 else None


def parse_action_frame(action: Mapping[str, Any], obs: Mapping[str, Any], action_dim: int) -> ActionFrame | None:
    """shape_meta's `action.frame` / `action.pose` -> an ActionFrame (None for absolute actions), checked against the
    obs specs; errors name the key to set."""
    frame = action.get("frame", "absolute")
    if frame not in FRAMES:
        raise ValueError(f"shape_meta action.frame must be one of {FRAMES}, got {frame!r}")
    if frame == "absolute":
        if "pose" in action:
            raise ValueError("shape_meta action.pose is for action.frame: relative; drop it or set the frame")
        return None
    pose = dict(action.get("pose") or {})
    unknown = sorted(set(pose) - {"position", "rotation", "action_position", "action_rotation"})
    if unknown:
        raise ValueError(f"shape_meta action.pose has unknown entries {unknown}; it takes position, rotation, "
                         "action_position, action_rotation")
    if "position" not in pose:
        pose["position"] = _default_key(obs, 3, lambda name: name.endswith("eef_pos"))
        if "rotation" not in pose:
            pose["rotation"] = _default_key(obs, 6, lambda name: "rot6d" in name)
        if pose["position"] is None:
            raise ValueError("shape_meta action.frame: relative needs the end-effector pose it is relative to; "
                             "no single low_dim obs key of shape [3] ends in 'eef_pos': set action.pose: "
                             "{position: KEY, rotation: KEY (6D, or null)}")
    if pose.get("rotation") is None:
        pose.setdefault("action_rotation", None)
    result = ActionFrame(**pose)
    for name, key, size in (("position", result.position, 3), ("rotation", result.rotation, 6)):
        if key is not None and (key not in obs or obs[key].type != "low_dim" or obs[key].shape != (size,)):
            raise ValueError(f"shape_meta action.pose.{name} must name a low_dim obs key of shape [{size}], "
                             f"got {key!r}")
    for name, start, size in (("action_position", result.action_position, 3),
                              ("action_rotation", result.action_rotation, 6)):
        if start is not None and not 0 <= start <= action_dim - size:
            raise ValueError(f"shape_meta action.pose.{name} ({start}) leaves no {size} action dimensions there "
                             f"(the action has {action_dim})")
    if result.action_rotation is not None and result.rotation is None:
        raise ValueError("shape_meta action.pose.action_rotation needs pose.rotation, the observed rotation the "
                         "action's rotation is relative to")
    return result
