"""Reading checkpoint directories (ARCHITECTURE.md) and rebuilding their policy, without the trainer.

The trainer writes them (robopolicy.training.checkpoint); evaluation, export, distillation and a
policy initialized from another read them here. Weights are safetensors and metadata YAML/JSON,
so reading one runs no code from the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from robopolicy.datasets.normalizer import Normalizer
from robopolicy.policies.base import Policy
from robopolicy.policies.registry import make_policy, policy_names

FILES = ("config.yaml", "model.safetensors", "ema.safetensors", "normalizer.safetensors", "train_state.pt", "meta.json")


def require_checkpoint(checkpoint: Path) -> Path:
    """`checkpoint` when it holds every checkpoint file, else a FileNotFoundError that says what to pass."""
    checkpoint = Path(checkpoint)
    missing = [f for f in FILES if not (checkpoint / f).is_file()]
    if missing:
        what = "does not exist" if not checkpoint.exists() else f"is not a robopolicy checkpoint: missing {missing}"
        raise FileNotFoundError(f"{checkpoint} {what}\n  fix: pass a checkpoint directory such as "
                                "runs/NAME/checkpoints/last (or, where the verb takes one, an artifact directory "
                                "written by `robopolicy export`)")
    return checkpoint


def read_meta(checkpoint: Path) -> dict[str, Any]:
    """meta.json of a checkpoint directory, with a clear error for anything else (a policy name it does not know
    included)."""
    path = require_checkpoint(checkpoint) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})\n  fix: restore the checkpoint from a copy") from error
    known = policy_names()
    if not isinstance(meta, dict) or meta.get("policy") not in known:
        name = meta.get("policy") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: policy {name!r} is not one this robopolicy knows ({known})\n  fix: load it with "
                         "the robopolicy version that wrote it (meta.json 'versions'), or restore the file")
    return meta


def read_config(checkpoint: Path) -> dict[str, Any]:
    """The resolved run config saved with a checkpoint (plain YAML only: tags are refused, never constructed)."""
    path = require_checkpoint(checkpoint) / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ValueError(f"{path} is not plain YAML ({problem})\n  fix: a checkpoint's config holds plain values only; "
                         "remove the tag or restore the file") from error
    if not isinstance(config, dict) or "task" not in config:
        raise ValueError(f"{path} holds no run config (no 'task' section)\n  fix: restore the file from a copy")
    return config


def load_policy(checkpoint: str | Path, use_ema: bool = True, device: str | torch.device = "cpu") -> Policy:
    """Rebuild the policy of a checkpoint (EMA weights by default) in eval mode."""
    checkpoint = Path(checkpoint)
    meta = read_meta(checkpoint)
    policy = make_policy(meta["policy"], meta["shape_meta"], meta["policy_settings"])
    policy.set_normalizer(Normalizer.load(checkpoint / "normalizer.safetensors"))
    policy.load_state_dict(load_file(str(checkpoint / ("ema.safetensors" if use_ema else "model.safetensors"))))
    return policy.to(device).eval()


def load_weights(policy: nn.Module, checkpoint: Path, file: str) -> None:
    """Load model.safetensors or ema.safetensors of a checkpoint into `policy` (strict)."""
    policy.load_state_dict(load_file(str(Path(checkpoint) / file)))


def init_from_checkpoint(policy: nn.Module, checkpoint: str | Path, use_ema: bool = True) -> list[str]:
    """Copy the weights of `checkpoint` that `policy` has (same name and shape) into it, e.g. a student from its
    teacher; returns the policy's keys left at their initial values. Refuses a checkpoint that shares nothing.
    The normalizer is not copied: it belongs to this run's data."""
    checkpoint = Path(checkpoint)
    read_meta(checkpoint)
    source = load_file(str(checkpoint / ("ema.safetensors" if use_ema else "model.safetensors")))
    own = {k: v for k, v in policy.state_dict().items() if not k.startswith("normalizer.")}
    mismatched = sorted(k for k in source.keys() & own.keys() if source[k].shape != own[k].shape)
    if mismatched:
        raise ValueError(f"init_from={checkpoint}: {mismatched[:5]} have other shapes there than in this policy; "
                         "initialize from a checkpoint with the same network sizes")
    shared = {k: v for k, v in source.items() if k in own}
    if not shared:
        raise ValueError(f"init_from={checkpoint} shares no weights with this policy")
    policy.load_state_dict(shared, strict=False)
    return sorted(own.keys() - shared.keys())
