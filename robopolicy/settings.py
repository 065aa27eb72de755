"""Building settings dataclasses from plain mappings (YAML, CLI overrides) with helpful errors."""

from __future__ import annotations

import dataclasses
import re
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


def parse_value(text: str) -> Any:
    """A value as YAML reads it, except that 1e-4 is a number (YAML 1.1 reads it as a string)."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        return float(value)
    return value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """The one option grammar of every verb: ["n_episodes=50", "env.max_steps=400"] -> a nested dict of
    YAML-typed values (dotted keys nest)."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value (e.g. n_episodes=50 or env.max_steps=400)")
        if key[0] in "+~":
            raise ValueError(f"override {item!r}: write the key without {key[0]!r} (key=value also adds a key the "
                             "config file lacks; the settings it belongs to check its name)")
        node = parsed
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is already set to a value, not a group of settings")
        if isinstance(node.get(leaf), dict):
            raise ValueError(f"override {item!r}: {key!r} is a group of settings, already given as {key}.<name>=...")
        node[leaf] = parse_value(value)
    return parsed


def options_help(*classes: type, skip: Sequence[str] = (), **extra: Any) -> str:
    """`key=default ...` for the fields of settings dataclasses (and `extra` keys): the option list a verb's
    help shows, generated from the classes that check the options, so the two cannot drift apart. Fields named
    in `skip` are set through other options; `extra` adds keys or replaces what a field's default shows."""
    items = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = "..."
            items[f.name] = default
    items.update(extra)
    return " ".join(f"{name}={_shown(value)}" for name, value in items.items())


def _shown(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return "..."
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_shown(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value).replace(" ", "")
