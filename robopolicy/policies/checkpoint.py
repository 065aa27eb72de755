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
from robopolicy.policies.registry import make_policy

FILES = ("config.yaml", "model.safetensors", "ema.safetensors", "normalizer.safetensors", "train_state.pt", "meta.json")


def read_meta(checkpoint: Path) -> dict[str, Any]:
    """meta.json of a checkpoint directory, with a clear error for anything else."""
    checkpoint = Path(checkpoint)
    missing = [f for f in FILES if not (checkpoint / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{checkpoint} is not a robopolicy checkpoint: missing {missing}")
    return json.loads((checkpoint / "meta.json").read_text())


def read_config(checkpoint: Path) -> dict[str, Any]:
    """The resolved run config saved with a checkpoint."""
    return yaml.safe_load((Path(checkpoint) / "config.yaml").read_text())


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
