"""The one `key=value` grammar of every verb, and option help generated from the settings dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from robopolicy.settings import build_settings, options_help, parse_overrides


def test_dotted_keys_nest_and_values_are_yaml_with_exponents_as_numbers():
    parsed = parse_overrides(["optim.lr=1e-4", "policy.settings.down_dims=[64,128]", "resume=true", "out=runs/x",
                              "init_from=null", "scale=-2.5E+3", "name=1e"])
    assert parsed == {"optim": {"lr": 1e-4}, "policy": {"settings": {"down_dims": [64, 128]}}, "resume": True,
                      "out": "runs/x", "init_from": None, "scale": -2500.0, "name": "1e"}


@pytest.mark.parametrize("overrides, message", [
    (["n_episodes"], "is not key=value"),
    (["+training.max_step=3"], r"without '\+'"),
    (["env=pusht", "env.max_steps=3"], "'env' is already set to a value"),
    (["env.max_steps=3", "env=pusht"], "'env' is a group of settings"),
])
def test_malformed_overrides_are_refused_with_the_fix(overrides, message):
    with pytest.raises(ValueError, match=message):
        parse_overrides(overrides)


@dataclass
class Example:
    path: str
    steps: int = 3
    ratio: float | None = None
    flag: bool = False
    keys: list[str] = field(default_factory=list)


def test_help_lists_every_field_with_its_default_and_unknown_keys_name_the_known_ones():
    assert options_help(Example) == "path=... steps=3 ratio=null flag=false keys=[]"
    assert options_help(Example, skip=("path", "keys"), extra_key=1) == "steps=3 ratio=null flag=false extra_key=1"
    with pytest.raises(ValueError, match=r"unknown demo settings \['step'\]; known: \['flag', 'keys', 'path'"):
        build_settings(Example, {"path": "x", "step": 2}, "demo")
