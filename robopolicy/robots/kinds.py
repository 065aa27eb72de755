"""robot=sim | robot=ros: which robot a verb drives. The simulated arm lives here; the ROS bridge lives in
robopolicy.ros, a layer above this one (it drives the runtime), so it is named by module, not imported."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

from robopolicy.registry import Registry
from robopolicy.settings import parse_overrides

# kind -> opener(options, robot_options, control_hz, client) -> a RobotInterface with close()
ROBOT_KINDS = Registry("robot", {"sim": "robopolicy.robots.sim:open_sim_robot",
                                 "ros": "robopolicy.ros.bridge:open_ros_robot"},
                       explain=" (robot=sim drives the simulated arm, robot=ros a ROS robot through the bridge with "
                               "robot.map=NAME)")


def split_robot(overrides: Sequence[str]) -> tuple[str, dict[str, Any], list[str]]:
    """(the robot kind, its robot.* options, the other overrides): robot=ros and robot.map=... side by side."""
    kind, robot, rest = "sim", [], []
    for item in overrides:
        if item.startswith("robot="):
            kind = item.partition("=")[2]
        elif item.startswith("robot."):
            robot.append(item[len("robot."):])
        else:
            rest.append(item)
    return ROBOT_KINDS.check(kind), parse_overrides(robot), rest


def open_robot(kind: str, options: MutableMapping[str, Any], robot_options: dict[str, Any], control_hz: float,
               client: str) -> Any:
    """The robot of `kind`; the simulated arm takes its settings from `options` (popping them), a ROS robot from
    its robot.* options. `client` names the verb (the ROS node name)."""
    return ROBOT_KINDS.load(kind)(options, robot_options, control_hz, client)
