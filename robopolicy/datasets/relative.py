"""The tensor math of relative trajectories (datasets/action_frame.py): poses into and out of the frame of the latest
observed end-effector pose, p' = R0^T (p - p0), R' = R0^T R, with rotations as 6D."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from robopolicy.datasets.action_frame import ActionFrame

_EPS = 1e-8


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two columns, so a network's unnormalized output is a rotation."""
    a, b = rot6d[..., :3], rot6d[..., 3:]
    x = a / a.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    y = b - (x * b).sum(dim=-1, keepdim=True) * x
    y = y / y.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return torch.stack([x, y, torch.linalg.cross(x, y, dim=-1)], dim=-1)


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> the first two columns (..., 6)."""
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def _reference(frame: ActionFrame, obs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(p0 (B, 3), R0 (B, 3, 3) or None): the pose of the latest observation step."""
    position = obs[frame.position][:, -1]
    rotation = rot6d_to_matrix(obs[frame.rotation][:, -1]) if frame.rotation is not None else None
    return position, rotation


def _into(position: torch.Tensor, rotation6d: torch.Tensor | None, p0: torch.Tensor,
          r0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Absolute (B, T, 3) positions and (B, T, 6) rotations -> relative to (p0, R0)."""
    offset = position - p0[:, None]
    if r0 is None:
        return offset, rotation6d
    relative = torch.einsum("bji,btj->bti", r0, offset)
    if rotation6d is None:
        return relative, None
    return relative, matrix_to_rot6d(r0.transpose(-1, -2)[:, None] @ rot6d_to_matrix(rotation6d))


def _out_of(position: torch.Tensor, rotation6d: torch.Tensor | None, p0: torch.Tensor,
            r0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The inverse of `_into`."""
    if r0 is None:
        return position + p0[:, None], rotation6d
    absolute = torch.einsum("bij,btj->bti", r0, position) + p0[:, None]
    if rotation6d is None:
        return absolute, None
    return absolute, matrix_to_rot6d(r0[:, None] @ rot6d_to_matrix(rotation6d))


def obs_to_relative(frame: ActionFrame, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Raw obs -> the same with the pose keys relative to the latest step's pose (which becomes the identity)."""
    p0, r0 = _reference(frame, obs)
    rotation = obs[frame.rotation] if frame.rotation is not None else None
    position, rotation = _into(obs[frame.position], rotation, p0, r0)
    converted = {**obs, frame.position: position}
    if frame.rotation is not None:
        converted[frame.rotation] = rotation
    return converted


def _map_action(frame: ActionFrame, action: torch.Tensor, obs: Mapping[str, torch.Tensor],
                inverse: bool) -> torch.Tensor:
    p0, r0 = _reference(frame, obs)
    p, r = frame.action_position, frame.action_rotation
    rotation = action[..., r : r + 6] if r is not None else None
    position, rotation = (_out_of if inverse else _into)(action[..., p : p + 3], rotation, p0, r0)
    parts = [(p, position)] + ([(r, rotation)] if r is not None else [])
    out = action.clone()
    for start, values in parts:
        out[..., start : start + values.shape[-1]] = values
    return out


def action_to_relative(frame: ActionFrame, action: torch.Tensor, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Absolute actions (B, T, Da) -> relative to the pose of `obs`'s latest step (raw obs)."""
    return _map_action(frame, action, obs, inverse=False)


def action_to_absolute(frame: ActionFrame, action: torch.Tensor, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Relative actions (B, T, Da) -> absolute, with the pose of `obs`'s latest step (raw obs)."""
    return _map_action(frame, action, obs, inverse=True)


def relative_windows(dataset: Any, frame: ActionFrame, batch_size: int = 4096) -> Iterator[dict[str, torch.Tensor]]:
    """Every window of a SequenceDataset as a policy in `frame` sees it: the action and the pose keys, relative (what
    its normalizer is fitted on, `Normalizer.refit`)."""
    view = dataset.with_obs(frame.obs_keys)
    for start in range(0, len(view), batch_size):
        batch = view.get_batch(np.arange(start, min(start + batch_size, len(view))))
        obs = obs_to_relative(frame, batch["obs"])
        action = action_to_relative(frame, batch["action"], batch["obs"])
        yield {"action": action, **{key: obs[key] for key in frame.obs_keys}}
