"""Named settings: Diffusion Policy's published Push-T sizes, for parity runs and comparisons.

`make_preset(name, shape_meta)` builds the policy; `PRESETS[name]` holds (family, settings) as a
config would. Our own defaults (the family configs) are smaller, since inference time is
control latency.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.policies.base import Policy
from robopolicy.policies.registry import make_policy

_DP_SAMPLING = {"sampler": "ddpm", "num_inference_steps": 100, "noise": {"num_train_timesteps": 100}}

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # Push-T image DP-CNN: ResNet-18 (GroupNorm, 32 keypoints, 84x84 crops) + U-Net 512/1024/2048: 263M parameters.
    "dp_pusht_image": ("diffusion_unet", {
        **_DP_SAMPLING,
        "backbone": {"unet": {"down_dims": (512, 1024, 2048), "kernel_size": 5, "step_embed_dim": 128}},
        "encoder": {"image": {"base_width": 64, "pool": "spatial_softmax", "num_keypoints": 32,
                              "feature_dim": 64, "crop_shape": (84, 84)}},
    }),
    # Push-T keypoint DP-CNN: U-Net 256/512/1024 with a 256-wide step embedding: 66M parameters.
    "dp_pusht_lowdim": ("diffusion_unet", {
        **_DP_SAMPLING,
        "backbone": {"unet": {"down_dims": (256, 512, 1024), "kernel_size": 5, "step_embed_dim": 256}},
    }),
}


def make_preset(name: str, shape_meta: Mapping[str, Any] | ShapeMeta) -> Policy:
    """Build preset `name` for shape_meta."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    family, settings = PRESETS[name]
    return make_policy(family, shape_meta, settings)
