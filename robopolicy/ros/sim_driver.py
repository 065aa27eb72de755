"""The simulated robot driver node: the runtime's SimRobot exposed on ROS the way arm drivers are.

It publishes the topic map's observation topics from the simulated arm, stamped when each reading
leaves the simulated sensor (as drivers that stamp on receipt do; the sensor's injected latency
is the delay a bridge's latency.<sensor> compensates), and follows the map's commands: timed
JointTrajectory points from header.stamp + time_from_start (a new trajectory replaces the old
from its first point; an empty one holds), and pose targets from the moment they arrive. Every
command dim keeps its last value until a newer point replaces it. Commands stamped before the
current episode began are ignored.

With episodes=N the node also plays the operator: per seed it resets the scene, starts the
bridge (<prefix>/start), waits for the task to end, stops it, and writes episodes.json.
`robopolicy robot sim-driver map=sim_lift env.name=robosuite env.task=Lift ...`; options:
DriverConfig fields, env.*, latency.<sensor>, actuation_latency, jitter.
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.atomic import write_json_atomic
from robopolicy.progress import progress
from robopolicy.robots.interface import Reading, TimedAction
from robopolicy.robots.sim import SIM_OPTIONS, SimRobot, sim_robot_config
from robopolicy.ros.binding import topic_message
from robopolicy.ros.bridge import RosOptions
from robopolicy.ros.convert import (
    pose_to_action,
    stamp_seconds,
    trajectory_to_arrays,
)
from robopolicy.ros.topic_map import TopicMap, load_topic_map
from robopolicy.ros.transport import Transport, open_transport
from robopolicy.runtime.loop import percentiles_ms
from robopolicy.settings import build_settings, parse_overrides
from robopolicy.stats import wilson_interval

log = logging.getLogger(__name__)


@dataclass
class DriverConfig(RosOptions):
    """The simulated driver node's own options (map, ros, namespace and node as the bridge's)."""

    map: str = "sim_lift"
    node: str = "robopolicy_sim_driver"
    control_hz: float = 20.0
    episodes: int = 0  # > 0: play the operator for this many seeds, then exit
    seed_start: int = 100000
    max_seconds: float = 60.0  # per episode
    ready_timeout: float = 300.0  # seconds to wait for the bridge to be ready
    out: str = ""  # episodes.json goes here (default: runs/sim_driver/<time>)


def sim_sensors(topic_map: TopicMap) -> dict[str, list[str]]:
    """The simulator's sensor groups from the map; each topic's keys must come from one sensor."""
    sensors: dict[str, list[str]] = {}
    for topic, bindings in topic_map.sensed_topics().items():
        if len({b.sensor for b in bindings}) > 1:
            raise ValueError(f"topic {topic} binds keys of several sensors ({ {b.key: b.sensor for b in bindings} }); "
                             "the simulated driver publishes one sensor's reading per message")
        for binding in bindings:
            sensors.setdefault(binding.sensor, []).append(binding.key)
    return sensors


class SimDriver:
    """Publishes the simulated arm's readings and turns command messages into its timed actions."""

    def __init__(self, topic_map: TopicMap, transport: Transport, robot: SimRobot):
        self.map, self.transport, self.robot = topic_map, transport, robot
        self._inbox: queue.Queue[Callable[[], None]] = queue.Queue()  # command handlers, run by the pumping thread
        self._schedules: list[list[tuple[float, np.ndarray]]] = [[] for _ in topic_map.commands]
        self.episode_start = -math.inf
        self._topics = [(bindings, transport.publisher(topic, bindings[0].type, qos=bindings[0].qos))
                        for topic, bindings in topic_map.sensed_topics().items()]
        for index, command in enumerate(topic_map.commands):
            handler = self._on_trajectory if command.type == "joint_trajectory" else self._on_pose
            transport.subscribe(command.topic, command.type, functools.partial(self._receive, handler, index))

    def _receive(self, handler: Callable[[int, Any, float], None], index: int, msg: Any) -> None:
        """From a transport thread: queue the message, with its arrival time, for the pumping thread."""
        self._inbox.put(functools.partial(handler, index, msg, self.transport.now()))

    def clock_offset(self) -> float:
        """ROS time minus the simulator's monotonic clock."""
        return self.transport.now() - time.monotonic()

    def reset(self, seed: int) -> None:
        """A new episode from `seed`: earlier commands are dropped, and any still in transit ignored."""
        self.robot.reset(seed)
        self._schedules = [[] for _ in self.map.commands]
        self.episode_start = self.transport.now()
        while not self._inbox.empty():
            self._inbox.get_nowait()

    def pump(self, timeout: float) -> None:
        """Apply the commands that arrived and publish the readings that left the sensors (waits up to `timeout`)."""
        while not self._inbox.empty():
            self._inbox.get_nowait()()
        for reading in self.robot.poll(timeout):
            self._publish(reading)

    def _publish(self, reading: Reading) -> None:
        stamp = reading.received + self.clock_offset()
        for bindings, publisher in self._topics:
            if all(b.key in reading.values for b in bindings):
                publisher.publish(topic_message(self.transport.types, bindings, reading.values, stamp))

    def _on_trajectory(self, index: int, msg: Any, arrived: float) -> None:
        if stamp_seconds(msg.header.stamp) < self.episode_start:
            return
        if not msg.points:  # the standard "stop here"
            self.robot.hold()
            self._schedules = [[] for _ in self.map.commands]
            return
        times, positions = trajectory_to_arrays(msg)
        self._merge(index, list(zip(times, positions, strict=True)))

    def _on_pose(self, index: int, msg: Any, arrived: float) -> None:
        if stamp_seconds(msg.header.stamp) < self.episode_start:
            return
        start, stop = self.map.commands[index].action_dims
        self._merge(index, [(arrived, pose_to_action(msg, stop - start))])

    def _merge(self, index: int, points: list[tuple[float, np.ndarray]]) -> None:
        """New points replace this command's points from the first new time on; then the arm gets the
        composed actions (nothing until every command has a value)."""
        self._schedules[index] = [p for p in self._schedules[index] if p[0] < points[0][0]][-1:] + points
        if not all(self._schedules):
            return
        times = sorted({t for schedule in self._schedules for t, _ in schedule})
        offset = self.clock_offset()
        actions = []
        for t in times:
            parts = [_value_at(schedule, t) for schedule in self._schedules]
            if all(part is not None for part in parts):
                actions.append(TimedAction(t - offset, np.concatenate(parts).astype(np.float32)))
        self.robot.send(actions)


def _value_at(schedule: Sequence[tuple[float, np.ndarray]], t: float) -> np.ndarray | None:
    """The schedule's latest value at or before `t` (zero-order hold)."""
    value = None
    for time_, v in schedule:
        if time_ > t:
            break
        value = v
    return value


class Operator:
    """Plays the person at the robot: resets the scene, starts and stops the bridge through its control topics."""

    def __init__(self, driver: SimDriver):
        self.driver = driver
        transport, topic_map = driver.transport, driver.map
        self._start = transport.publisher(topic_map.control("start"), "empty")
        self._stop = transport.publisher(topic_map.control("stop"), "empty")
        self.bridge_state = ""
        transport.subscribe(topic_map.control("state"), "string", self._on_state, qos="latched")

    def _on_state(self, msg: Any) -> None:
        self.bridge_state = msg.data

    def pump_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bridge did not get {what} within {timeout} s (its state: "
                                   f"{self.bridge_state or 'never published'})")
            self.driver.pump(0.002)

    def episode(self, seed: int, max_seconds: float) -> dict[str, Any]:
        """Reset to `seed`, start the bridge, wait for the task to end, stop the bridge."""
        robot = self.driver.robot
        self.pump_until(lambda: self.bridge_state == "ready", 30.0, "ready")
        self.driver.reset(seed)
        self._start.publish(self.driver.transport.types.new("empty"))
        self.pump_until(lambda: self.bridge_state == "running", 10.0, "running")
        started = time.monotonic()
        self.pump_until(lambda: robot.status["done"] or time.monotonic() - started > max_seconds, max_seconds + 10,
                        "to the end of the episode")
        self._stop.publish(self.driver.transport.types.new("empty"))
        self.pump_until(lambda: self.bridge_state != "running", 10.0, "stopped")
        robot.poll()
        errors = robot.executed_errors()
        return {"seed": seed, "success": bool(robot.status["is_success"]), "steps": robot.status["steps"],
                "seconds": time.monotonic() - started,
                "executed_abs_error_ms": percentiles_ms(errors) if len(errors) else None}


def run_sim_driver(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The driver node; with episodes=N it runs N operator-driven episodes and returns their results."""
    values = parse_overrides(overrides)
    arm = {k: values.pop(k) for k in SIM_OPTIONS if k in values and k != "sensors"}  # the map says the sensors
    options = build_settings(DriverConfig, values, "sim-driver")
    topic_map = load_topic_map(options.map)
    sim = sim_robot_config(arm, options.control_hz, "the simulated driver", sensors=sim_sensors(topic_map))
    transport = open_transport(options.ros, options.node, options.namespace)
    results: dict[str, Any] = {"settings": {"sim": asdict(sim), "driver": asdict(options)}, "episodes": []}
    out = Path(options.out or Path("runs") / "sim_driver" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        with SimRobot(sim) as robot:
            driver = SimDriver(topic_map, transport, robot)
            driver.reset(options.seed_start)
            if options.episodes <= 0:
                while not transport.is_shutdown():
                    driver.pump(0.002)
                return results
            operator = Operator(driver)
            log.info("waiting for the bridge on %s", topic_map.control("state"))
            operator.pump_until(lambda: operator.bridge_state == "ready", options.ready_timeout, "ready")
            seeds = range(options.seed_start, options.seed_start + options.episodes)
            for seed in progress(seeds, desc="ros episodes", total=options.episodes):
                results["episodes"].append(operator.episode(seed, options.max_seconds))
                successes = sum(e["success"] for e in results["episodes"])
                n = len(results["episodes"])
                results.update(success_rate=successes / n, success_rate_ci95=list(wilson_interval(successes, n)))
                write_json_atomic(out / "episodes.json", results)
    finally:
        transport.shutdown("simulated driver done")
    return {**results, "results": str(out / "episodes.json")}
