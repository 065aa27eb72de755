"""`robopolicy distill TEACHER_CHECKPOINT`: train a one-step consistency student from a diffusion or flow policy.

The student's run config is the teacher's (task, data split, encoder, optimizer, EMA) with the
policy replaced by the consistency family (robopolicy.policies.consistency.model, where the
objective is documented) over the teacher's horizons and backbone, started from the teacher's
weights (`init_from`). `key=value` overrides apply on top, as in `robopolicy train`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from robopolicy.policies.checkpoint import read_config, read_meta
from robopolicy.policies.registry import make_config
from robopolicy.settings import parse_overrides
from robopolicy.training.config import GROUPS, merge_values
from robopolicy.training.run import train_config

TEACHER_FAMILIES = ("diffusion_unet", "diffusion_transformer", "flow")
SHARED_SETTINGS = ("horizon", "n_obs_steps", "n_action_steps", "backbone")
DISTILL_DEFAULTS = {"training": {"max_steps": 2000}, "optim": {"warmup_steps": 100}}


def student_settings(family: str, teacher: Mapping[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The consistency settings for a teacher's settings: same horizons and network, its time scale."""
    config = asdict(make_config(family, teacher))
    settings = {k: config[k] for k in SHARED_SETTINGS}
    if family == "flow":
        settings["time_embed_scale"] = config["time_embed_scale"]
    else:  # the student's t * scale spans the teacher's step range, so its time embedding starts out aligned
        settings["time_embed_scale"] = float(config["noise"]["num_train_timesteps"])
    return {**settings, "teacher": str(checkpoint.resolve())}


def distill_config(checkpoint: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The student's resolved run config (see the module docstring)."""
    checkpoint = Path(checkpoint)
    groups = sorted({item.partition("=")[0] for item in overrides} & set(GROUPS))
    if groups:
        raise ValueError(f"distill keeps the teacher's {groups}: set values inside them instead (e.g. "
                         "task.dataset.path=... or policy.settings.teacher_steps=16)")
    meta, config = read_meta(checkpoint), read_config(checkpoint)
    family = meta["policy"]
    if family not in TEACHER_FAMILIES:
        raise ValueError(f"{checkpoint} holds a {family!r} policy; distill needs one of {TEACHER_FAMILIES}")
    settings = student_settings(family, meta["policy_settings"], checkpoint)
    label = f"{config['policy'].get('label', family)}_consistency"
    raw = {**config, "policy": {"name": "consistency", "label": label, "settings": settings},
           "init_from": str(checkpoint.resolve()), "resume": False,
           "run_dir": str(Path(config["run_dir"]).parent / label)}
    return merge_values(merge_values(raw, DISTILL_DEFAULTS), parse_overrides(overrides))


def distill(checkpoint: str | Path, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Distill the teacher at `checkpoint`; returns the student's final training metrics."""
    return train_config(distill_config(checkpoint, overrides))
