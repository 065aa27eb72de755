"""The bridge's node logic through an in-process transport (no master, no DDS): clock checks on stamps,
commands by the topic map, hold / e-stop / reset, on ROS 1's and ROS 2's message classes (the `types` fixture of
tests/ros/conftest.py). test_ros_bridge runs it against real nodes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import yaml

from robopolicy.robots.interface import TimedAction
from robopolicy.ros.bridge import RosBridge
from robopolicy.ros.convert import MessageTypes, joint_state, pose_stamped, stamp_seconds
from robopolicy.ros.topic_map import load_topic_map
from robopolicy.ros.transport import check_qos
from robopolicy.settings import CONFIG_DIR


class Wire:
    """What one topic carried, for the test to read, and the QoS profile it was published with."""

    def __init__(self, qos: str) -> None:
        self.messages: list[Any] = []
        self.qos = qos

    def publish(self, msg: Any) -> None:
        self.messages.append(msg)

    def subscribers(self) -> int:
        return 1


class LoopbackTransport:
    """Transport whose subscriptions the test calls directly and whose publications it reads."""

    def __init__(self, types: MessageTypes) -> None:
        self.types = types
        self.callbacks: dict[str, Callable[[Any], None]] = {}
        self.subscribed: dict[str, tuple[str, str]] = {}  # topic -> (kind, qos)
        self.wires: dict[str, Wire] = {}

    def now(self) -> float:
        return time.time()

    def subscribe(self, topic: str, kind: str, callback: Callable[[Any], None], qos: str = "default") -> None:
        self.callbacks[topic] = callback
        self.subscribed[topic] = (kind, check_qos(qos))

    def publisher(self, topic: str, kind: str, qos: str = "default") -> Wire:
        return self.wires.setdefault(topic, Wire(check_qos(qos)))

    def is_shutdown(self) -> bool:
        return False

    def shutdown(self, reason: str) -> None:
        pass


@pytest.fixture
def bridge(types):
    transport = LoopbackTransport(types)
    bridge = RosBridge(load_topic_map("sim_lift"), transport)
    yield bridge, transport
    bridge.close()


def test_topics_take_the_qos_of_the_topic_map_and_the_state_is_latched(types, tmp_path):
    raw = yaml.safe_load((CONFIG_DIR / "robot" / "sim_lift.yaml").read_text())
    raw["observations"]["object"]["qos"] = "sensor_data"  # as a camera-rate perception node publishes
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump(raw))
    transport = LoopbackTransport(types)
    bridge = RosBridge(load_topic_map(tmp_path / "robot.yaml"), transport)
    try:
        assert transport.subscribed["/perception/object_state"] == ("joint_state", "sensor_data")
        assert transport.subscribed["/arm/eef_pose"] == ("pose", "default")
        assert transport.subscribed["/robopolicy/estop"] == ("empty", "default")
        assert {topic: wire.qos for topic, wire in transport.wires.items()} == {
            "/arm/target_pose": "default", "/gripper/command": "default", "/robopolicy/state": "latched"}
    finally:
        bridge.close()


def fingers(transport: LoopbackTransport, stamp: float) -> Any:
    return joint_state(transport.types, ["finger_right", "finger_left"], np.array([-0.02, 0.03]), stamp)


def test_readings_take_the_header_stamp_and_the_policy_joint_order(bridge):
    bridge, transport = bridge
    stamp = transport.now() - 0.01
    transport.callbacks["/arm/joint_states"](fingers(transport, stamp))
    transport.callbacks["/arm/eef_pose"](pose_stamped(transport.types, [0.1, 0.2, 0.3], [0, 0, 0, 1], stamp))
    readings = bridge.poll()
    assert [r.received for r in readings] == [stamp, stamp] and {r.sensor for r in readings} == {"arm"}
    values = {k: v for r in readings for k, v in r.values.items()}
    np.testing.assert_allclose(values["robot0_gripper_qpos"], [0.03, -0.02])  # finger_left first, as mapped
    np.testing.assert_allclose(values["robot0_eef_rot6d"], [1, 0, 0, 0, 1, 0])


def test_stamps_from_the_future_or_empty_are_refused_naming_the_topic(bridge):
    bridge, transport = bridge
    transport.callbacks["/arm/joint_states"](fingers(transport, transport.now() + 0.5))
    with pytest.raises(ValueError, match="/arm/joint_states.*ahead of this computer's ROS time.*synchronise"):
        bridge.poll()
    transport.callbacks["/arm/joint_states"](fingers(transport, 0.0))
    with pytest.raises(ValueError, match="/arm/joint_states.*empty header.stamp"):
        bridge.poll()
    assert bridge.poll() == []


def test_commands_split_by_action_dims_and_estop_holds_until_reset(bridge):
    bridge, transport = bridge
    start = transport.now() + 0.05
    rot6d = [1, 0, 0, 0, 1, 0]
    actions = [TimedAction(start + 0.05 * k, np.array([0.1 * k, 0, 1, *rot6d, 0.5 * k])) for k in range(3)]
    bridge.send(actions)
    trajectory = transport.wires["/gripper/command"].messages[-1]
    assert list(trajectory.joint_names) == ["gripper"]
    assert [p.positions[0] for p in trajectory.points] == [0.0, 0.5, 1.0]
    assert stamp_seconds(trajectory.header.stamp) == pytest.approx(start)
    time.sleep(0.25)
    targets = transport.wires["/arm/target_pose"].messages
    assert [round(t.pose.position.x, 6) for t in targets] == [0.0, 0.1, 0.2]
    assert [stamp_seconds(t.header.stamp) for t in targets] == pytest.approx([a.time for a in actions])

    transport.callbacks["/robopolicy/estop"](transport.types.new("empty"))
    assert bridge.halted and bridge.estop.triggered
    assert transport.wires["/gripper/command"].messages[-1].points == []  # "stop here"
    assert transport.wires["/robopolicy/state"].messages[-1].data == "estopped"
    sent = len(transport.wires["/gripper/command"].messages)
    bridge.send(actions)
    transport.callbacks["/robopolicy/start"](transport.types.new("empty"))
    assert len(transport.wires["/gripper/command"].messages) == sent and not bridge.start_requested.is_set()

    transport.callbacks["/robopolicy/reset"](transport.types.new("empty"))
    assert not bridge.halted and not bridge.estop.triggered
    bridge.send(actions)
    assert len(transport.wires["/gripper/command"].messages) == sent + 1


def test_an_instruction_topic_gives_its_text_as_the_operator_says_it(types, tmp_path):
    raw = yaml.safe_load((CONFIG_DIR / "robot" / "sim_lift.yaml").read_text())
    raw["observations"]["instruction"] = {"topic": "/robopolicy/instruction", "type": "string", "qos": "latched"}
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump(raw))
    transport = LoopbackTransport(types)
    bridge = RosBridge(load_topic_map(tmp_path / "robot.yaml"), transport)
    try:
        assert transport.subscribed["/robopolicy/instruction"] == ("string", "latched")
        message = transport.types.new("string")
        message.data = "lift the cube"
        before = transport.now()
        transport.callbacks["/robopolicy/instruction"](message)  # no header: it holds from its arrival
        (reading,) = bridge.poll()
        assert (reading.sensor, dict(reading.values)) == ("operator", {"instruction": "lift the cube"})
        assert before <= reading.received <= transport.now()
    finally:
        bridge.close()
    raw["observations"]["object"]["qos"] = "latched"
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="observations.object.qos latched is for an instruction topic"):
        load_topic_map(tmp_path / "robot.yaml")
