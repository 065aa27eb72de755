"""Building settings dataclasses from plain mappings (YAML, CLI overrides) with helpful errors."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
# The hydra YAML shipped with the package: train.yaml, task/, policy/, encoder/, optim/.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def build_settings(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """cls(**values), but unknown keys and values of the wrong type (a word for a number) raise a ValueError
    naming them; integral floats (1e5) become ints where an int is wanted."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {where} settings {sorted(unknown)}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: checked_value(value, hints[name], f"{where}.{name}") for name, value in values.items()})


SCALARS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}


def checked_value(value: Any, hint: Any, name: str) -> Any:
    """`value` when it fits a scalar type hint (int, float, bool, str, or one of them | None); other hints pass."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if value is None and type(None) in allowed:
        return None
    scalars = [t for t in allowed if t in SCALARS]
    if not scalars or len(scalars) < len([t for t in allowed if t is not type(None)]):
        return value  # a container, a dataclass or a mapping: checked where it is built
    for kind in scalars:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    wanted = " or ".join(SCALARS[t] for t in scalars) + (" or null" if type(None) in allowed else "")
    raise ValueError(f"{name}={value!r} must be {wanted}\n  fix: set {name}=<{wanted.split(' or ')[0]}>")


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
