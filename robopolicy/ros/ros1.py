"""The ROS 1 transport: rospy topics, ROS time and Debian's message classes behind the `Transport` seam.

The bridge, the simulated driver and the recorder talk only to `Transport` (see `transport.py`).
Of the QoS profiles, ROS 1 keeps latching; the others are TCP. Subscribers ask for TCP_NODELAY, so
small messages are not held back by Nagle's algorithm.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from robopolicy.ros.convert import KINDS, MessageTypes
from robopolicy.ros.transport import check_qos


def ros1_types() -> MessageTypes:
    """MessageTypes for ROS 1 (needs rospy and the std / sensor / trajectory / geometry / diagnostic messages)."""
    import rospy

    classes = {}
    for kind, name in KINDS.items():
        package, message = name.split("/")
        classes[kind] = getattr(importlib.import_module(f"{package}.msg"), message)
    return MessageTypes(classes=classes, time=rospy.Time.from_sec, duration=rospy.Duration.from_sec)


class Ros1Publisher:
    """A latched or plain rospy publisher."""

    def __init__(self, publisher: Any):
        self._publisher = publisher

    def publish(self, msg: Any) -> None:
        self._publisher.publish(msg)

    def subscribers(self) -> int:
        return self._publisher.get_num_connections()


class Ros1Transport:
    """A rospy node. ROS time must be wall time (no /use_sim_time): the runtime paces itself on the wall clock."""

    def __init__(self, node_name: str):
        import rospy

        self._rospy = rospy
        rospy.init_node(node_name, disable_signals=True)
        if rospy.get_param("/use_sim_time", False):
            raise ValueError("/use_sim_time is true: the robopolicy runtime runs in wall-clock time; unset it "
                             "(rosparam set /use_sim_time false) or run the bridge against a real-time clock")
        self.types = ros1_types()

    def now(self) -> float:
        return self._rospy.get_time()

    def subscribe(self, topic: str, kind: str, callback: Callable[[Any], None], qos: str = "default") -> None:
        check_qos(qos)  # ROS 1 has one profile for subscribers: TCP
        self._rospy.Subscriber(topic, self.types.classes[kind], callback, queue_size=20, tcp_nodelay=True)

    def publisher(self, topic: str, kind: str, qos: str = "default") -> Ros1Publisher:
        latch = check_qos(qos) == "latched"
        return Ros1Publisher(self._rospy.Publisher(topic, self.types.classes[kind], queue_size=20, latch=latch))

    def is_shutdown(self) -> bool:
        return self._rospy.is_shutdown()

    def shutdown(self, reason: str) -> None:
        self._rospy.signal_shutdown(reason)
