"""Building settings dataclasses from plain mappings (YAML, CLI overrides) with helpful errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
# The hydra YAML shipped with the package: train.yaml, task/, policy/, encoder/, optim/.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def build_settings(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """cls(**values), but unknown keys raise a ValueError naming them and the known ones."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {where} settings {sorted(unknown)}; known: {sorted(known)}")
    return cls(**values)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """["n_episodes=50", "env.max_steps=400"] -> nested dict with YAML-typed values."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value (e.g. n_episodes=50 or env.max_steps=400)")
        node = parsed
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is already set to a value, not a group of settings")
        node[leaf] = yaml.safe_load(value)
    return parsed
