"""ROS nodes the bridge tests run as separate processes: `python -m tests.ros_probes NAME ROS [ARGS]`.

Each probe is a bridge node (or a camera relay, or a bag recorder) on ROS `ROS` (1 or 2) that does
one thing against the simulated driver node and prints its measurements as one JSON line; the
tests assert on them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np

from robopolicy.robots.interface import TimedAction
from robopolicy.ros.bridge import RosBridge
from robopolicy.ros.convert import (
    crop_resize,
    image_to_array,
    stamp_seconds,
    trajectory_to_arrays,
)
from robopolicy.ros.node import Diagnostics
from robopolicy.ros.topic_map import load_topic_map
from robopolicy.ros.transport import Transport, open_transport
from robopolicy.runtime.artifact import load_artifact
from robopolicy.runtime.loop import Runtime, RuntimeConfig

DT = 0.05


class Recorder:
    """Messages of one topic with their arrival times (ROS clock)."""

    def __init__(self, transport: Transport, topic: str, kind: str, qos: str = "default"):
        self.transport, self.messages = transport, []
        transport.subscribe(topic, kind, self._on_message, qos=qos)

    def _on_message(self, msg: Any) -> None:
        self.messages.append((self.transport.now(), msg))


def collect(bridge: RosBridge, seconds: float) -> list[tuple[float, Any]]:
    """(poll time, reading) for every reading in the next `seconds`."""
    readings, end = [], bridge.now() + seconds
    while bridge.now() < end:
        now = bridge.now()
        readings += [(now, r) for r in bridge.poll()]
        time.sleep(0.005)
    return readings


def current_pose(bridge: RosBridge) -> np.ndarray:
    """The grip site's position and rot6d from the newest arm reading."""
    arm = [r for _, r in collect(bridge, 0.3) if "robot0_eef_pos" in r.values][-1]
    return np.concatenate([arm.values["robot0_eef_pos"], arm.values["robot0_eef_rot6d"]])


def rising(pose: np.ndarray, start: float, steps: int, height: float, gripper: float) -> list[TimedAction]:
    """Targets that raise the grip site by `height` over `steps` periods from `start`."""
    return [TimedAction(start + k * DT, np.concatenate([pose[:2], [pose[2] + height * (k + 1) / steps], pose[3:],
                                                        [gripper]])) for k in range(steps)]


def observations(ros: int, map_name: str) -> dict[str, Any]:
    """Readings for 2 s: sensor, stamp, age when polled, values."""
    transport = open_transport(ros, "probe_observations")
    bridge = RosBridge(load_topic_map(map_name), transport)
    rows = [{"sensor": r.sensor, "stamp": r.received, "age": polled - r.received,
             "values": {k: np.asarray(v).tolist() for k, v in r.values.items()}} for polled, r in collect(bridge, 2.0)]
    return {"readings": rows}


def images(ros: int, map_name: str) -> dict[str, Any]:
    """Camera readings as the bridge gives them (at least 2 s, until 12 frames of each camera or 10 s: rendering
    speed depends on the machine's load, the checks below do not), and the raw front-camera messages."""
    transport = open_transport(ros, "probe_images")
    bridge = RosBridge(load_topic_map(map_name), transport)
    raw = Recorder(transport, "/camera/agentview/image_raw", "image")
    readings = [r for _, r in collect(bridge, 2.0) if r.sensor == "camera"]
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline and min(sum(key in r.values for r in readings) for key in
                                              ("agentview_image", "robot0_eye_in_hand_image")) < 12:
        readings += [r for _, r in collect(bridge, 0.5) if r.sensor == "camera"]
    by_stamp = {stamp_seconds(m.header.stamp): crop_resize(image_to_array(m), (4, 4, 76, 76), (38, 38))
                for _, m in raw.messages}
    front = [r for r in readings if "agentview_image" in r.values and r.received in by_stamp]
    wrist = [r.values["robot0_eye_in_hand_image"] for r in readings if "robot0_eye_in_hand_image" in r.values]
    return {"front": len(front), "wrist": len(wrist), "front_shape": list(front[-1].values["agentview_image"].shape),
            "wrist_shape": list(wrist[-1].shape), "wrist_dtype": str(wrist[-1].dtype),
            "front_max_difference": max(int(np.abs(r.values["agentview_image"].astype(int)
                                                   - by_stamp[r.received].astype(int)).max()) for r in front),
            "front_std": float(np.std(front[-1].values["agentview_image"])),
            "stamp_steps": np.diff(sorted(r.received for r in front)).tolist()}


def commands(ros: int, map_name: str) -> dict[str, Any]:
    """Send 20 timed actions raising the arm 3 cm; record the command messages and where the arm went."""
    transport = open_transport(ros, "probe_commands")
    topic_map = load_topic_map(map_name)
    bridge = RosBridge(topic_map, transport)
    trajectories = Recorder(transport, "/gripper/command", "joint_trajectory")
    poses = Recorder(transport, "/arm/target_pose", "pose")
    time.sleep(1.0)  # let the recorders connect
    before = current_pose(bridge)
    actions = rising(before, bridge.now() + 0.3, 20, 0.03, -1.0)
    bridge.send(actions)
    collect(bridge, 2.5)
    after = current_pose(bridge)
    times, positions = trajectory_to_arrays(trajectories.messages[-1][1])
    return {"sent_times": [a.time for a in actions], "sent_gripper": [float(a.value[9]) for a in actions],
            "trajectory_times": times.tolist(), "trajectory_positions": positions[:, 0].tolist(),
            "trajectory_joints": list(trajectories.messages[-1][1].joint_names),
            "pose_stamps": [stamp_seconds(m.header.stamp) for _, m in poses.messages],
            "pose_arrivals": [t for t, _ in poses.messages],
            "pose_z": [m.pose.position.z for _, m in poses.messages],
            "z_before": float(before[2]), "z_after": float(after[2])}


def estop(ros: int, map_name: str) -> dict[str, Any]:
    """Raise the arm slowly, e-stop it through the control topic after 1 s; record the arm's height."""
    transport = open_transport(ros, "probe_estop")
    topic_map = load_topic_map(map_name)
    bridge = RosBridge(topic_map, transport)
    estop_topic = transport.publisher(topic_map.control("estop"), "empty")
    trajectories = Recorder(transport, "/gripper/command", "joint_trajectory")
    while estop_topic.subscribers() == 0:
        time.sleep(0.05)
    time.sleep(0.5)
    pose = current_pose(bridge)
    bridge.send(rising(pose, bridge.now() + 0.2, 60, 0.15, -1.0))
    track = collect(bridge, 1.2)
    stopped_at = bridge.now()
    estop_topic.publish(transport.types.new("empty"))
    track += collect(bridge, 0.2)
    bridge.send(rising(pose, bridge.now() + 0.1, 20, 0.3, -1.0))  # ignored: e-stopped
    track += collect(bridge, 1.0)
    heights = [(r.received, float(r.values["robot0_eef_pos"][2])) for _, r in track if "robot0_eef_pos" in r.values]
    return {"estop": stopped_at, "heights": heights, "halted": bridge.halted, "reason": bridge.estop.reason,
            "trajectories": [(t, len(m.points)) for t, m in trajectories.messages]}


def watchdog(ros: int, map_name: str, artifact_dir: str, relay_pid: int) -> dict[str, Any]:
    """The runtime through the bridge; after 1.5 s the camera relay is frozen (SIGSTOP)."""
    artifact = load_artifact(artifact_dir)  # imports torch before any ROS thread runs
    transport = open_transport(ros, "probe_watchdog")
    topic_map = load_topic_map(map_name)
    bridge = RosBridge(topic_map, transport)
    diagnostics = Recorder(transport, topic_map.diagnostics, "diagnostics")
    # sync inference: the tiny policy's deadlines are not what is tested, on two busy cores
    runtime = Runtime(artifact, bridge, RuntimeConfig(sensor_latency={"camera": 0.125}, inference="sync"),
                      bridge.estop)
    runtime.warm_up(timeout=20.0)
    publisher = Diagnostics(bridge, runtime, period=0.25)
    stalled: list[float] = []

    def on_tick(stats: Any) -> None:
        publisher.tick(stats)
        if not stalled and len(stats.ticks) == 30:
            os.kill(relay_pid, signal.SIGSTOP)
            stalled.append(bridge.now())

    start = bridge.now()
    stats = runtime.run(4.0, on_tick=on_tick)
    time.sleep(0.3)
    return {"stalled": stalled[0] - start, "ticks": [(t["time"], t["held"]) for t in stats.ticks],
            "holds": stats.holds, "sent": stats.sent,
            "diagnostics": [(t - start, m.status[0].level, m.status[0].message) for t, m in diagnostics.messages]}


def relay(ros: int, source: str, target: str) -> None:
    """A camera node: republishes the object state from `source` on `target`, stamps unchanged."""
    transport = open_transport(ros, "camera_relay")
    publisher = transport.publisher(target, "joint_state")
    transport.subscribe(source, "joint_state", publisher.publish)
    threading.Event().wait()


def bag(ros: int, map_name: str, path: str) -> dict[str, Any]:
    """`ros2 bag record` of the map's observation and command topics into a ROS 2 bag (rosbags' writer, the
    messages' CDR bytes as they came), until SIGINT; prints "recording" once every observation topic spoke."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from robopolicy.ros.ros2_messages import type_name

    transport = open_transport(ros, "probe_bag")
    topic_map = load_topic_map(map_name)
    topics = {topic: (bindings[0].type, bindings[0].qos) for topic, bindings in topic_map.by_topic().items()}
    topics.update({c.topic: (c.type, "default") for c in topic_map.commands})
    received: list[tuple[str, int, bytes]] = []
    lock, stop = threading.Lock(), threading.Event()

    def keep(topic: str, msg: Any) -> None:
        with lock:
            received.append((topic, time.time_ns(), bytes(msg.serialize(use_version_2=False))))

    for topic, (kind, qos) in topics.items():
        transport.subscribe(topic, kind, lambda msg, topic=topic: keep(topic, msg), qos=qos)
    while {t for t, _, _ in list(received)} < set(topic_map.by_topic()):
        time.sleep(0.02)
    print("recording", flush=True)
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    transport.shutdown("bag done")
    store = get_typestore(Stores.ROS2_HUMBLE)
    with lock, Writer(path, version=9) as writer:
        connections = {topic: writer.add_connection(topic, type_name(kind), typestore=store)
                       for topic, (kind, _) in topics.items()}
        for topic, logged, data in received:
            writer.write(connections[topic], logged, data)
    return {"messages": {topic: sum(t == topic for t, _, _ in received) for topic in topics}}


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    try:
        arguments = [int(a) if a.isdigit() else a for a in args]
        if name == "relay":
            relay(*arguments)
        result = {"observations": observations, "images": images, "commands": commands, "estop": estop,
                  "watchdog": watchdog, "bag": bag}[name](*arguments)
        print(json.dumps(result), flush=True)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)  # rospy's threads would otherwise keep the process alive
