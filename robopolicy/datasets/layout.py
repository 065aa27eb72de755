"""Store layout -> policy layout, shared by the training windows and the simulation evaluator.

Store layout is what demos record: images (..., H, W, C) (or channels-first (..., C, H, W) in
stores written by other tools) uint8 or float 0..255, depth
(..., H, W) or (..., H, W, 1), low-dim and point clouds as float. Policy layout is what
`Policy.predict_action` takes: float32 tensors, images float [0, 1] (..., C, H, W), and int64 byte
tokens for text keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from robopolicy.datasets.shape_meta import ObsSpec

if TYPE_CHECKING:
    import torch


def obs_offsets(spec: ObsSpec, n_obs_steps: int) -> np.ndarray:
    """Steps of a key's history relative to a window whose step n_obs_steps - 1 is "now"."""
    horizon = spec.horizon or n_obs_steps
    return (n_obs_steps - 1) - spec.down_sample_steps * np.arange(horizon - 1, -1, -1)


@dataclass(frozen=True)
class Window:
    """The steps a policy is trained on, declared by the policy (PolicyConfig.window) and read by the dataset:
    `horizon` actions and `n_obs_steps` observations, "now" being the last observation (window step
    n_obs_steps - 1); the policy executes `n_action_steps` of the actions from now on."""

    horizon: int
    n_obs_steps: int
    n_action_steps: int

    def __post_init__(self) -> None:
        if not 1 <= self.n_obs_steps <= self.horizon or not 1 <= self.n_action_steps <= self.horizon:
            raise ValueError(f"need 1 <= n_obs_steps ({self.n_obs_steps}) <= horizon ({self.horizon}) and "
                             f"1 <= n_action_steps ({self.n_action_steps}) <= horizon")

    def obs_offsets(self, spec: ObsSpec) -> np.ndarray:
        """Window steps of one observation key (its own history length and stride)."""
        return obs_offsets(spec, self.n_obs_steps)

    def action_offsets(self, n_latency_steps: int = 0) -> np.ndarray:
        """Window steps of the action chunk: the whole horizon, `n_latency_steps` after the observations."""
        return n_latency_steps + np.arange(self.horizon)


def history_length(specs: dict[str, ObsSpec], n_obs_steps: int) -> int:
    """How many past steps (including now) an env must keep to serve every key's history."""
    return max([n_obs_steps] + [int(n_obs_steps - obs_offsets(s, n_obs_steps).min()) for s in specs.values()])


def channels_first(shape: tuple[int, ...]) -> bool:
    """Frames stored channels-first, (..., C, H, W): a last axis that is no channel count and a third-last that is.
    Frames are channels-last (H, W, C) otherwise, as robopolicy writes them."""
    return len(shape) >= 3 and shape[-1] not in (1, 3, 4) and shape[-3] in (1, 3, 4)


def policy_layout_array(values: np.ndarray, kind: str, image_scale: float = 255.0,
                        squeeze_channel: bool = False) -> np.ndarray:
    """numpy store layout -> float32 numpy policy layout (images float [0, 1] channels first), always a copy.

    Images are converted where they lie and then permuted, so the CHW result is a view with
    channels-last strides; np.ascontiguousarray it if needed. Frames already channels-first stay as
    they are. Needs no torch (the robot computer).
    """
    values = np.asarray(values)
    if kind == "text":  # byte tokens stay integers: the text encoder looks them up
        return np.array(values, dtype=np.int64, copy=True)
    if kind == "rgb":
        scaled = np.divide(values, image_scale, dtype=np.float32)
        return scaled if channels_first(values.shape) else np.moveaxis(scaled, -1, -3)
    if squeeze_channel:
        values = values[..., 0]
    return np.array(values, dtype=np.float32, copy=True)


def to_policy_layout(values: np.ndarray, kind: str, image_scale: float = 255.0,
                     squeeze_channel: bool = False) -> torch.Tensor:
    """numpy store layout -> float32 torch policy layout (policy_layout_array as a tensor, no extra copy)."""
    import torch

    return torch.from_numpy(policy_layout_array(values, kind, image_scale, squeeze_channel))
