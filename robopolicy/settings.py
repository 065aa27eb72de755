"""Building settings dataclasses from plain mappings (YAML, CLI overrides) with helpful errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def build_settings(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """cls(**values), but unknown keys raise a ValueError naming them and the known ones."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {where} settings {sorted(unknown)}; known: {sorted(known)}")
    return cls(**values)
