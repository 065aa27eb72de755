"""The bridge: the runtime's RobotInterface over the ROS topics a topic map names.

Observations: each message becomes a Reading stamped with its `header.stamp` (the runtime then
subtracts the sensor's configured latency to get the capture time). Everything runs on ROS time,
which the transport guarantees is wall time; a topic whose stamps run ahead of this computer's
clock (a driver on a machine whose clock is not synchronised) or are empty is refused by name.
Commands: a JointTrajectory per trajectory command, each point at the time the runtime planned
(header.stamp + time_from_start), replacing the last; pose commands are a stream of PoseStamped
targets, each published when its time comes. Hold publishes an empty trajectory (the standard
"stop here") and drops pending pose targets; e-stop does the same and then sends nothing until an
operator's reset. Operators drive the node through std_msgs/Empty topics under the map's
control_prefix (start, stop, reset, estop); its state (warming_up, ready, running, estopped, shutdown) is
latched on <prefix>/state.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robopolicy.robots.interface import Reading, TimedAction
from robopolicy.ros.binding import read_topic
from robopolicy.ros.convert import (
    action_to_pose,
    joint_trajectory,
    pose_stamped,
    stamp_seconds,
)
from robopolicy.ros.topic_map import (
    CONTROL_TOPICS,
    TEXT_TYPES,
    CommandTopic,
    ObservationTopic,
    TopicMap,
    load_topic_map,
)
from robopolicy.ros.transport import ROS_VERSIONS, Transport, default_ros_version, open_transport
from robopolicy.runtime.safety import EmergencyStop
from robopolicy.settings import build_settings

log = logging.getLogger(__name__)


class PoseStream:
    """Publishes one command's pose targets one at a time, each at its time (streaming Cartesian
    interfaces apply a target when it arrives)."""

    def __init__(self, command: CommandTopic, transport: Transport):
        self.command, self.transport = command, transport
        self._publisher = transport.publisher(command.topic, "pose")
        self._queue: list[tuple[float, np.ndarray]] = []
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._publish_when_due, daemon=True, name=f"pose {command.topic}")
        self._thread.start()

    def replace(self, times: Sequence[float], values: np.ndarray) -> None:
        """Targets not yet published are replaced by these."""
        with self._ready:
            self._queue = list(zip(times, values, strict=True))
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed, self._queue = True, []
            self._ready.notify()
        self._thread.join(1.0)

    def _publish_when_due(self) -> None:
        start, stop = self.command.action_dims
        while True:
            with self._ready:
                if self._closed:
                    return
                wait = self._queue[0][0] - self.transport.now() if self._queue else 0.1
                if wait > 0:
                    self._ready.wait(min(wait, 0.1))
                    continue
                due, value = self._queue.pop(0)
                position, quat = action_to_pose(value[start:stop])  # published under the lock: after a
                self._publisher.publish(pose_stamped(  # replace() returns, no old target goes out
                    self.transport.types, position, quat, due, self.command.frame_id))


class RosBridge:
    """RobotInterface over ROS topics, with the operator's control topics and a latched state."""

    def __init__(self, topic_map: TopicMap, transport: Transport, estop: EmergencyStop | None = None,
                 max_clock_skew: float = 0.02):
        self.map, self.transport = topic_map, transport
        self.estop = estop or EmergencyStop()
        self.max_clock_skew = max_clock_skew
        self.start_requested, self.stop_requested = threading.Event(), threading.Event()
        self.halted = False  # e-stopped: nothing is sent until an operator's reset
        self._lock = threading.Lock()
        self._command_lock = threading.RLock()  # a send racing an e-stop must not publish after its "stop here"
        self._readings: list[Reading] = []
        self._problem: Exception | None = None
        self._last_state = ""
        self._trajectories = [(c, transport.publisher(c.topic, "joint_trajectory"))
                              for c in topic_map.commands if c.type == "joint_trajectory"]
        self._streams = [PoseStream(c, transport) for c in topic_map.commands if c.type == "pose"]
        self._state = transport.publisher(topic_map.control("state"), "string", qos="latched")
        for topic, bindings in topic_map.by_topic().items():
            transport.subscribe(topic, bindings[0].type, functools.partial(self._on_observation, topic, bindings),
                                qos=bindings[0].qos)
        for name in CONTROL_TOPICS:
            transport.subscribe(topic_map.control(name), "empty", getattr(self, f"_on_{name}"))

    def _on_observation(self, topic: str, bindings: Sequence[ObservationTopic], msg: Any) -> None:
        if bindings[0].type in TEXT_TYPES:  # an instruction: no header; it holds from when it arrives
            readings = [Reading(sensor, self.transport.now(), values)
                        for sensor, values in read_topic(bindings, msg).items()]
            with self._lock:
                self._readings.extend(readings)
            return
        try:
            stamp = stamp_seconds(msg.header.stamp)
            if stamp == 0.0:
                raise ValueError("its messages have an empty header.stamp; the bridge needs capture times: "
                                 "have the driver stamp them")
            ahead = stamp - self.transport.now()
            if ahead > self.max_clock_skew:
                raise ValueError(f"its header stamps are {1000 * ahead:.0f} ms ahead of this computer's ROS time: "
                                 "synchronise the clocks of the two machines (chrony or PTP)")
            readings = [Reading(sensor, stamp, values) for sensor, values in read_topic(bindings, msg).items()]
        except Exception as error:  # noqa: BLE001 - surfaced by poll(), which stops the runtime
            with self._lock:
                self._problem = self._problem or ValueError(f"topic {topic}: {error!r}")
            return
        with self._lock:
            self._readings.extend(readings)

    def _on_start(self, _: Any) -> None:
        if self.halted:
            log.warning("start refused: the robot is e-stopped; publish on %s first", self.map.control("reset"))
            return
        self.start_requested.set()

    def _on_stop(self, _: Any) -> None:
        self.stop_requested.set()

    def _on_reset(self, _: Any) -> None:
        """The operator's reset after an e-stop: the robot may be driven again."""
        self.halted = False
        self.estop.clear()
        self.stop_requested.set()
        self.set_state("ready")

    def _on_estop(self, _: Any) -> None:
        self.estop.trigger(f"e-stop on {self.map.control('estop')}")
        self.stop()

    def set_state(self, state: str) -> None:
        """Latch the node's state on <prefix>/state when it changes."""
        if state == self._last_state:
            return
        self._last_state = state
        msg = self.transport.types.new("string")
        msg.data = state
        self._state.publish(msg)

    def begin_run(self) -> None:
        """Forget the start / stop requests and the readings queued before this run, except the newest
        instruction: the operator's words hold until replaced, also across runs."""
        self.start_requested.clear()
        self.stop_requested.clear()
        with self._lock:
            spoken = [r for r in self._readings if any(isinstance(v, str) for v in r.values.values())]
            self._readings = spoken[-1:]

    def now(self) -> float:
        return self.transport.now()

    def poll(self) -> Sequence[Reading]:
        with self._lock:
            problem, self._problem = self._problem, None
            readings, self._readings = self._readings, []
        if problem is not None:
            raise problem
        return sorted(readings, key=lambda reading: reading.received)

    def send(self, actions: Sequence[TimedAction]) -> None:
        if not actions:
            return
        times = np.array([a.time for a in actions])
        values = np.stack([np.asarray(a.value, dtype=np.float64) for a in actions])
        with self._command_lock:
            if self.halted:
                return
            for command, publisher in self._trajectories:
                start, stop = command.action_dims
                publisher.publish(joint_trajectory(self.transport.types, command.joints, times,
                                                   values[:, start:stop]))
            for stream in self._streams:
                stream.replace(times, values)

    def hold(self) -> None:
        with self._command_lock:
            for stream in self._streams:
                stream.replace([], np.zeros((0, 0)))
            now = self.transport.now()
            for command, publisher in self._trajectories:
                msg = joint_trajectory(self.transport.types, command.joints, np.zeros(0),
                                       np.zeros((0, len(command.joints))))
                msg.header.stamp = self.transport.types.time(now)  # no points: stop and keep the current position
                publisher.publish(msg)

    def stop(self) -> None:
        with self._command_lock:
            self.halted = True
            self.hold()
        self.set_state("estopped")

    def close(self) -> None:
        for stream in self._streams:
            stream.close()


@dataclass
class RosOptions:
    """The `robot.*` options every verb that drives a ROS robot takes."""

    map: str = ""  # the topic map: configs/robot/NAME.yaml or a path
    ros: int = field(default_factory=default_ros_version)  # 1: rospy and a master; 2: DDS (ROS_DOMAIN_ID)
    namespace: str = ""  # ROS 2: the namespace relative topic names resolve under
    node: str = ""  # the node's name (default: robopolicy_<verb>)


def ros_options(cls: type[RosOptions], values: Mapping[str, Any], verb: str, node: str = "") -> RosOptions:
    """The robot.* options of robot=ros for `verb`, checked; the node is named `node` unless robot.node says."""
    options = build_settings(cls, dict(values), "robot")
    if not options.map:
        raise ValueError(f"robot=ros {verb}s through the bridge: give its topic map, robot.map=NAME "
                         "(configs/robot/NAME.yaml) or robot.map=PATH")
    if options.ros not in ROS_VERSIONS:
        raise ValueError(f"robot.ros={options.ros}: use robot.ros=1 (rospy and a master) or robot.ros=2 (DDS)")
    options.node = options.node or node or f"robopolicy_{verb}"
    return options


def open_ros_robot(options: MutableMapping[str, Any], robot_options: Mapping[str, Any], control_hz: float,
                   client: str) -> RosBridge:
    """robot=ros for a verb that records: the bridge over the topic map robot.map, as ROS node `client`."""
    ros = ros_options(RosOptions, robot_options, client)
    topic_map = load_topic_map(ros.map)
    return RosBridge(topic_map, open_transport(ros.ros, ros.node, ros.namespace))
