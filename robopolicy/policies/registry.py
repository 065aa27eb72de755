"""Policies register by name; configs name a policy and get a built one. Nothing is imported from
a class path string: a name is looked up in this table, and a typo gets the closest names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.policies.base import Policy, PolicyConfig
from robopolicy.registry import Registry
from robopolicy.settings import build_settings

# Family name -> the module that registers it (imported only when that family is used).
FAMILIES = Registry("policy", {
    "diffusion_unet": "robopolicy.policies.diffusion.model",
    "diffusion_transformer": "robopolicy.policies.diffusion.model",
    "flow": "robopolicy.policies.flow.model",
    "act": "robopolicy.policies.act.model",
    "consistency": "robopolicy.policies.consistency.model",
})


@dataclass(frozen=True)
class PolicyEntry:
    """A registered family: its config dataclass and its policy class."""

    config_class: type[PolicyConfig]
    policy_class: type[Policy]


_REGISTRY: dict[str, PolicyEntry] = {}


def register_policy(name: str, config_class: type[PolicyConfig]):
    """Class decorator: make `name` build this policy from `config_class`."""

    def decorate(policy_class: type[Policy]) -> type[Policy]:
        _REGISTRY[name] = PolicyEntry(config_class, policy_class)
        return policy_class

    return decorate


def _entry(name: str) -> PolicyEntry:
    FAMILIES.load(name)
    return _REGISTRY[name]


def make_config(name: str, settings: Mapping[str, Any] | None = None) -> PolicyConfig:
    """The family's config dataclass from plain settings; unknown fields name the known ones."""
    return build_settings(_entry(name).config_class, settings, name)


def make_policy(name: str, shape_meta: Mapping[str, Any] | ShapeMeta,
                settings: Mapping[str, Any] | PolicyConfig | None = None) -> Policy:
    """Build policy `name` for shape_meta from its settings (a dict or a config instance)."""
    entry = _entry(name)
    if isinstance(settings, PolicyConfig) and not isinstance(settings, entry.config_class):
        raise TypeError(f"policy {name!r} needs a {entry.config_class.__name__}, got a {type(settings).__name__}")
    config = settings if isinstance(settings, PolicyConfig) else make_config(name, settings)
    return entry.policy_class(config, shape_meta)


def policy_names() -> list[str]:
    return FAMILIES.names()
