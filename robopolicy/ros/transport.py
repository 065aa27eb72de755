"""The seam between the ROS nodes (bridge, simulated driver) and a ROS client library.

Node logic calls only this protocol; `ros1.Ros1Transport` implements it with rospy. A ROS 2
transport is one more class (not shipped: rclpy cannot be installed on our machines, and
untested code is not shipped). It needs: an rclpy node spun in a background thread (a
MultiThreadedExecutor, so subscription callbacks do not wait on each other); `now()` from the
node's clock in seconds; `subscribe`/`publisher` mapping each kind of `convert.KINDS` to the
ROS 2 message class, with a reliable QoS of depth ~20 for commands and control, best-effort
for camera images, and transient-local durability where ROS 1 latches; `MessageTypes.time`
building a `builtin_interfaces/Time` (sec, nanosec; `convert.stamp_seconds` already reads
those); and /use_sim_time refused as `Ros1Transport` does. The converters need no change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from robopolicy.ros.convert import MessageTypes


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

    def subscribe(self, topic: str, kind: str, callback: Callable[[Any], None]) -> None:
        """Call `callback(msg)` from a transport thread for every message on `topic`."""

    def publisher(self, topic: str, kind: str, latch: bool = False) -> Publisher:
        """A publisher; latched ones resend their last message to late subscribers."""

    def is_shutdown(self) -> bool:
        """Whether the node is shutting down."""

    def shutdown(self, reason: str) -> None:
        """Leave the ROS graph."""
