"""The ROS 2 transport: DDS through Cyclone DDS's Python binding, with no ROS 2 installation.

ROS 2 is DDS on the wire: a topic /arm/command is the DDS topic `rt/arm/command`, a message
`trajectory_msgs/msg/JointTrajectory` the DDS type `trajectory_msgs::msg::dds_::JointTrajectory_`
(`ros2_messages.py`), and `ROS_DOMAIN_ID` the DDS domain. Nodes using rmw_cyclonedds_cpp or
rmw_fastrtps_cpp exchange messages with this one; `CYCLONEDDS_URI` picks the network interface.
Time is the system clock, as a ROS 2 node's is unless it uses simulated time. Each subscription
has its own thread, so a slow callback holds back only its own topic (as rospy's do).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from cyclonedds.core import InstanceState, Qos, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from robopolicy.ros.ros2_messages import ros2_types
from robopolicy.ros.transport import check_qos

log = logging.getLogger(__name__)
MAX_DOMAIN_ID = 232  # the highest id whose ports fit the DDS port mapping
# ~ (the node's private namespace) only as a whole first token: "~abc" and "/a/~/b" are not ROS 2 names
_NAME = re.compile(r"^(~|/?[A-Za-z_][A-Za-z0-9_]*)(/[A-Za-z_][A-Za-z0-9_]*)*$")
_XCDR1 = Policy.DataRepresentation(use_cdrv0_representation=True)  # plain CDR, what ROS 2 nodes write
_RELIABLE = Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100))
# ROS 2's profiles: the default (reliable, keep last 10), sensor data (best effort, keep last 5),
# and a latched topic (transient local, keep last 1: a late subscriber gets the last message)
QOS = {"default": Qos(_RELIABLE, Policy.History.KeepLast(10), Policy.Durability.Volatile, _XCDR1),
       "sensor_data": Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(5), Policy.Durability.Volatile,
                          _XCDR1),
       "latched": Qos(_RELIABLE, Policy.History.KeepLast(1), Policy.Durability.TransientLocal, _XCDR1)}


def domain_id() -> int:
    """ROS_DOMAIN_ID (0 when unset), checked."""
    value = os.environ.get("ROS_DOMAIN_ID", "").strip() or "0"
    if not value.isdigit() or int(value) > MAX_DOMAIN_ID:
        raise ValueError(f"ROS_DOMAIN_ID={value!r} is not a domain id; set it to 0..{MAX_DOMAIN_ID} (the same as the "
                         "robot's ROS 2 nodes)")
    return int(value)


def dds_topic(topic: str, namespace: str = "", node: str = "") -> str:
    """A ROS 2 topic name -> its DDS topic: relative names under `namespace`, ~ under the node, then rt/ prefixed."""
    if not _NAME.match(topic):
        raise ValueError(f"{topic!r} is not a ROS 2 topic name: use letters, digits, _ and / (e.g. /arm/command)")
    if topic.startswith("~"):
        topic = f"{namespace.rstrip('/')}/{node}{topic[1:]}"
    elif not topic.startswith("/"):
        topic = f"{namespace.rstrip('/')}/{topic}"
    if not topic.startswith("/"):
        topic = "/" + topic
    return "rt" + topic


class Ros2Publisher:
    """A DDS writer; `subscribers` counts the readers it has matched."""

    def __init__(self, writer: DataWriter):
        self._writer = writer

    def publish(self, msg: Any) -> None:
        self._writer.write(msg)

    def subscribers(self) -> int:
        return len(self._writer.get_matched_subscriptions())


class Ros2Transport:
    """A DDS participant standing in for a ROS 2 node named `node_name` in `namespace`."""

    def __init__(self, node_name: str, namespace: str = ""):
        if namespace and (not _NAME.match(namespace) or namespace.startswith("~")):
            raise ValueError(f"namespace {namespace!r} is not a ROS 2 namespace: e.g. /arm1")
        self.node_name, self.namespace = node_name, namespace
        self.types = ros2_types()
        self._participant = DomainParticipant(domain_id())
        self._topics: dict[str, Topic] = {}
        self._stopping = threading.Event()
        self._shutdown_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def now(self) -> float:
        return time.time()

    def _topic(self, topic: str, kind: str) -> Topic:
        name = dds_topic(topic, self.namespace, self.node_name)
        if name not in self._topics:
            self._topics[name] = Topic(self._participant, name, self.types.classes[kind])
        elif self._topics[name].data_type is not self.types.classes[kind]:
            raise ValueError(f"topic {topic} is used with two message types in one node")
        return self._topics[name]

    def subscribe(self, topic: str, kind: str, callback: Callable[[Any], None], qos: str = "default") -> None:
        reader = DataReader(self._participant, self._topic(topic, kind), qos=QOS[check_qos(qos)])
        thread = threading.Thread(target=self._dispatch, args=(reader, callback), daemon=True,
                                  name=f"ros2 {topic}")
        self._threads.append(thread)
        thread.start()

    def _dispatch(self, reader: DataReader, callback: Callable[[Any], None]) -> None:
        """Wait for samples on `reader` and hand each message to `callback`, in order, until shutdown. Samples
        that only tell an instance's state (a writer left: no data) are not messages and are dropped."""
        message_type = reader.topic.data_type
        waitset = WaitSet(self._participant)
        waitset.attach(ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Any))
        while not self._stopping.is_set():
            waitset.wait(duration(milliseconds=100))
            for msg in reader.take(N=64):
                if self._stopping.is_set():
                    return
                if not isinstance(msg, message_type):
                    continue
                try:
                    callback(msg)
                except Exception:  # noqa: BLE001 - one bad message must not end the subscription (as in rospy)
                    log.exception("callback of %s failed", reader.topic.name)

    def publisher(self, topic: str, kind: str, qos: str = "default") -> Ros2Publisher:
        return Ros2Publisher(DataWriter(self._participant, self._topic(topic, kind), qos=QOS[check_qos(qos)]))

    def is_shutdown(self) -> bool:
        return self._stopping.is_set()

    def shutdown(self, reason: str) -> None:
        """Stop the subscriptions' threads, then delete the participant: peers see this node's readers and writers
        leave at once (not when its lease runs out, 10 s later)."""
        with self._shutdown_lock:
            if self._stopping.is_set():
                return
            log.info("leaving ROS 2: %s", reason)
            self._stopping.set()
            others = [thread for thread in self._threads if thread is not threading.current_thread()]
            for thread in others:
                thread.join(2.0)
            if any(thread.is_alive() for thread in others):
                log.warning("a subscription callback is still running; this node leaves ROS 2 when the process ends")
                return
            self._participant.__del__()  # cyclonedds keeps every entity until deleted; this deletes its children too
