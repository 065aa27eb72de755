"""Named presets: the policy configs shipped in robopolicy/configs/policy/, usable without hydra.

`dp_pusht_image` and `dp_pusht_lowdim` are Diffusion Policy's published Push-T sizes (263M and
66M parameters), for parity runs; the family configs (e.g. `diffusion_unet`) are our smaller
defaults, since inference time is control latency. In training, the same files are the
`policy=` choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.policies.base import Policy
from robopolicy.policies.registry import make_policy
from robopolicy.settings import CONFIG_DIR


def preset_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "policy").glob("*.yaml"))


def merged_settings(policy: Mapping[str, Any], encoder: Mapping[str, Any]) -> dict[str, Any]:
    """A policy config's settings with the encoder group's settings as its `encoder`."""
    return {**policy.get("settings", {}), "encoder": dict(encoder)}


def make_preset(name: str, shape_meta: Mapping[str, Any] | ShapeMeta, encoder: str = "default") -> Policy:
    """Build the policy of configs/policy/<name>.yaml with configs/encoder/<encoder>.yaml."""
    path = CONFIG_DIR / "policy" / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"unknown preset {name!r}; known: {preset_names()}")
    config = yaml.safe_load(path.read_text())
    encoder_settings = yaml.safe_load((CONFIG_DIR / "encoder" / f"{encoder}.yaml").read_text())
    return make_policy(config["name"], shape_meta, merged_settings(config, encoder_settings))
