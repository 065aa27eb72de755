"""Task envs and their scripted experts by name, as a task config's `env:` section names them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np

from robopolicy.envs.base import Expert
from robopolicy.registry import Registry

# Each module exposes make_env(**options) -> gymnasium.Env, make_expert(env, rng) -> Expert and
# instruction(**options) -> str (the task in words, for language-conditioned policies); a benchmark of several
# tasks also exposes suite_tasks(suite) -> [(name, env overrides)].
ENVS = Registry("env name (the task's env.name)", {
    "pusht": "robopolicy.envs.pusht",
    "robosuite": "robopolicy.envs.robosuite_tasks",
    "metaworld": "robopolicy.envs.metaworld_tasks",
    "libero": "robopolicy.envs.libero_tasks",
})


def _module(env_cfg: Mapping[str, Any]) -> ModuleType:
    return ENVS.load(env_cfg.get("name"))


def env_options(env_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The env section minus its name, checked against the env's make_env parameters."""
    options = {k: v for k, v in env_cfg.items() if k != "name"}
    accepted = inspect.signature(_module(env_cfg).make_env).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"env {env_cfg['name']!r} has no option(s) {unknown}; it accepts {sorted(accepted)}")
    return options


def make_env(env_cfg: Mapping[str, Any]) -> gym.Env:
    """A task env from a config section such as {name: robosuite, task: Lift, obs_type: lowdim}."""
    return _module(env_cfg).make_env(**env_options(env_cfg))


def make_expert(env_cfg: Mapping[str, Any], env: Any, rng: np.random.Generator) -> Expert:
    """The scripted expert of the env's task (raises if the task has none)."""
    return _module(env_cfg).make_expert(env, rng)


def env_instruction(env_cfg: Mapping[str, Any]) -> str:
    """The instruction of the env's task (what scripted demos record and what evaluation tells the policy)."""
    return _module(env_cfg).instruction(**env_options(env_cfg))


def env_suite(env_cfg: Mapping[str, Any], suite: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, env section) of every task of a benchmark suite of the env (LIBERO's four suites)."""
    module = _module(env_cfg)
    if not hasattr(module, "suite_tasks"):
        raise ValueError(f"env {env_cfg['name']!r} has no task suites (suite={suite}); evaluate one task at a time")
    return [(name, {**env_cfg, **overrides}) for name, overrides in module.suite_tasks(suite)]
