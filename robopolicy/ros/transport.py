"""The seam between the ROS nodes (bridge, simulated driver, recorder) and ROS itself.

Node logic calls only this protocol. `ros1.Ros1Transport` implements it with rospy (a ROS 1
master), `ros2.Ros2Transport` with DDS (ROS 2, no ROS installation needed); `open_transport`
picks one by `ros=1|2`. QoS profiles are ROS 2's: "default" (reliable, keep last 10),
"sensor_data" (best effort, keep last 5: what ROS 2 camera drivers publish with) and "latched"
(transient local: late subscribers get the last message); ROS 1 has TCP and latching only.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, Protocol

from robopolicy.ros.convert import MessageTypes

QOS_PROFILES = ("default", "sensor_data", "latched")
ROS_VERSIONS = (1, 2)


class Publisher(Protocol):
    def publish(self, msg: Any) -> None:
        """Send one message."""

    def subscribers(self) -> int:
        """How many subscribers are connected."""


class Transport(Protocol):
    """Topics by message kind (`convert.KINDS`) and the ROS clock, in seconds."""

    types: MessageTypes

    def now(self) -> float:
        """ROS time in seconds (wall time: simulated time is refused)."""

    def subscribe(self, topic: str, kind: str, callback: Callable[[Any], None], qos: str = "default") -> None:
        """Call `callback(msg)` from a transport thread for every message on `topic`."""

    def publisher(self, topic: str, kind: str, qos: str = "default") -> Publisher:
        """A publisher; latched ones resend their last message to late subscribers."""

    def is_shutdown(self) -> bool:
        """Whether the node is shutting down."""

    def shutdown(self, reason: str) -> None:
        """Leave the ROS graph."""


def check_qos(qos: str) -> str:
    """`qos`, if it names a profile."""
    if qos not in QOS_PROFILES:
        raise ValueError(f"unknown QoS profile {qos!r}; use one of {list(QOS_PROFILES)}")
    return qos


def default_ros_version() -> int:
    """1 where ROS 1's rospy is importable, else 2 (which needs only the cyclonedds wheel)."""
    return 1 if importlib.util.find_spec("rospy") is not None else 2


def open_transport(ros: int, node: str, namespace: str = "") -> Transport:
    """A ROS 1 (rospy) or ROS 2 (DDS) node named `node`; ROS 2 nodes may live in a namespace."""
    if ros == 1:
        from robopolicy.ros.ros1 import Ros1Transport

        if namespace:
            raise ValueError("namespace= is a ROS 2 option; a ROS 1 node takes ROS_NAMESPACE from its environment")
        return Ros1Transport(node)
    if ros == 2:
        from robopolicy.ros.ros2 import Ros2Transport

        return Ros2Transport(node, namespace)
    raise ValueError(f"ros={ros} is not a ROS version; use ros=1 (rospy and a master) or ros=2 (DDS)")
