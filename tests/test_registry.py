"""Every name a user types is looked up in one Registry, which answers a typo with the closest names."""

from __future__ import annotations

import pytest

from robopolicy.datasets.convert.formats import open_source
from robopolicy.envs.registry import make_env
from robopolicy.policies.registry import make_policy
from robopolicy.registry import Registry, UnknownName
from robopolicy.robots.kinds import split_robot
from robopolicy.robots.teleop import make_teleop


@pytest.mark.parametrize("call, message", [
    (lambda: make_policy("diffusion_unt", {}), "unknown policy 'diffusion_unt'; did you mean 'diffusion_unet'"),
    (lambda: make_env({"name": "pushT"}), r"unknown env name .* 'pushT'; did you mean 'pusht'"),
    (lambda: open_source("robomimc", "x.hdf5", {}), "unknown --from format 'robomimc'; did you mean 'robomimic'"),
    (lambda: make_teleop("keybaord", {}), "unknown teleop device 'keybaord'; did you mean 'keyboard'"),
    (lambda: split_robot(["robot=rso"]), "unknown robot 'rso'; did you mean 'ros'"),
    (lambda: make_env({"task": "Lift"}), r"no env name \(the task's env.name\) given; known: \['libero', 'metaworld'"),
])
def test_a_mistyped_name_gets_the_closest_known_one(call, message):
    with pytest.raises(UnknownName, match=message):
        call()


def test_lookup_imports_on_use_and_errors_read_as_both_key_and_value_errors():
    registry = Registry("codec", {"json": "json:dumps", "math": "math"})
    assert registry.load("json")({"a": 1}) == '{"a": 1}'
    assert registry.load("math").sqrt(4.0) == 2.0
    assert registry.names() == ["json", "math"]
    with pytest.raises(UnknownName) as error:
        registry.load("yaml")
    assert isinstance(error.value, KeyError) and isinstance(error.value, ValueError)  # caught as either
    assert str(error.value) == "unknown codec 'yaml'. Known: ['json', 'math']"  # no quotes around a KeyError's text
