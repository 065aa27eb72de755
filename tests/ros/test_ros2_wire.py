"""ROS 2 without ROS 2: the DDS structs of ros2_messages.py put on the wire the bytes ROS 2 nodes do (checked
message by message against rosbags' Humble serializer, an implementation of its own), times split into
sec / nanosec, ROS 2 names mapped onto DDS topics, and Ros2Transport's behaviour on real DDS domains in this
process (each test on a domain of its own, confined to loopback): delivery in order, latching, the QoS
request / offer rule, domain isolation, matched subscriber counts, failing callbacks and shutdown."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest

from tests.needs import require

require("ros2")
pytestmark = pytest.mark.ros2

from cyclonedds._clayer import ddspy_take  # noqa: E402  (the C layer's take, which DataReader.take wraps)
from cyclonedds.core import InstanceState, SampleState, ViewState  # noqa: E402
from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from robopolicy.ros.convert import (  # noqa: E402
    KINDS,
    array_to_compressed_image,
    array_to_point_cloud,
    joint_state,
    joint_trajectory,
    pose_stamped,
    stamp_seconds,
)
from robopolicy.ros.ros2 import QOS, Ros2Transport, dds_topic, domain_id  # noqa: E402
from robopolicy.ros.ros2_messages import CLASSES, ros2_duration, ros2_time, ros2_types, type_name  # noqa: E402
from tests.ros_graph import dds_environment  # noqa: E402

TYPES = ros2_types()
TS = get_typestore(Stores.ROS2_HUMBLE)
# 1700000000 + 63/512 s: a float that holds its nanoseconds exactly, so the reference can name them
STAMP, SEC, NANOSEC = 1700000000 + 63 / 512, 1700000000, 123046875
RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)
CLOUD = np.array([[1.0, -2.0, 3.5, 0.25], [np.inf, 0.0, 0.0, 1.0], [4.0, 5.0, -6.0, 0.5]], np.float32)
PNG = io.BytesIO()
PILImage.fromarray(RGB).save(PNG, format="PNG")


def ref(msgtype: str, /, **fields):
    """A message of rosbags' Humble typestore (`msgtype` without the /msg/ part, e.g. sensor_msgs/Image)."""
    package, message = msgtype.split("/")
    return TS.types[f"{package}/msg/{message}"](**fields)


def ref_header(frame_id: str, sec: int = SEC, nanosec: int = NANOSEC):
    return ref("std_msgs/Header", stamp=ref("builtin_interfaces/Time", sec=sec, nanosec=nanosec), frame_id=frame_id)


def ref_duration(sec: int, nanosec: int):
    return ref("builtin_interfaces/Duration", sec=sec, nanosec=nanosec)


def f64(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def u8(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def new(kind: str, **values):
    msg = TYPES.new(kind)
    for name, value in values.items():
        setattr(msg, name, value)
    return msg


def image():
    """An rgb8 image 5 wide whose rows are padded from 15 to an odd 17 bytes."""
    rows = np.zeros((3, 17), np.uint8)
    rows[:, :15] = RGB.reshape(3, 15)
    rows[:, 15:] = [0xAB, 0xCD]
    msg = new("image", height=3, width=5, encoding="rgb8", is_bigendian=0, step=17, data=rows.tobytes())
    msg.header.stamp, msg.header.frame_id = TYPES.time(STAMP), "front_camera_optical"
    return msg, ref("sensor_msgs/Image", header=ref_header("front_camera_optical"), height=3, width=5,
                    encoding="rgb8", is_bigendian=0, step=17, data=u8(rows.tobytes()))


def compressed_image():
    msg = array_to_compressed_image(TYPES, RGB, STAMP, "wrist_camera", image_format="png")
    assert msg.data == PNG.getvalue()
    return msg, ref("sensor_msgs/CompressedImage", header=ref_header("wrist_camera"), format="png",
                    data=u8(PNG.getvalue()))


def joint_state_():
    msg = joint_state(TYPES, ["shoulder", "elbow", "wrist"], np.array([0.5, -1.25, 3.0]), STAMP)
    msg.header.frame_id, msg.velocity, msg.effort = "base_link", [0.1, 0.0, -0.2], [12.5, -3.0, 0.75]
    return msg, ref("sensor_msgs/JointState", header=ref_header("base_link"), name=["shoulder", "elbow", "wrist"],
                    position=f64(0.5, -1.25, 3.0), velocity=f64(0.1, 0.0, -0.2), effort=f64(12.5, -3.0, 0.75))


def ref_point_field(name: str, offset: int, datatype: int = 7, count: int = 1):
    return ref("sensor_msgs/PointField", name=name, offset=offset, datatype=datatype, count=count)


def point_cloud():
    msg = array_to_point_cloud(TYPES, CLOUD, ("x", "y", "z", "intensity"), STAMP, "lidar")
    fields = [ref_point_field(name, 4 * i) for i, name in enumerate(("x", "y", "z", "intensity"))]
    return msg, ref("sensor_msgs/PointCloud2", header=ref_header("lidar"), height=1, width=3, fields=fields,
                    is_bigendian=False, point_step=16, row_step=48, data=u8(CLOUD.astype("<f4").tobytes()),
                    is_dense=True)


def point_field():
    return new("point_field", name="rgb", offset=12, datatype=6, count=1), ref_point_field("rgb", 12, 6, 1)


def pose():
    quat = np.array([0.1, -0.2, 0.3, 0.9])
    quat /= np.linalg.norm(quat)
    msg = pose_stamped(TYPES, [0.4, -0.25, 1.125], quat, STAMP, "world")
    return msg, ref("geometry_msgs/PoseStamped", header=ref_header("world"), pose=ref(
        "geometry_msgs/Pose", position=ref("geometry_msgs/Point", x=0.4, y=-0.25, z=1.125),
        orientation=ref("geometry_msgs/Quaternion", x=quat[0], y=quat[1], z=quat[2], w=quat[3])))


def ref_point(positions, sec: int, nanosec: int, velocities=(), accelerations=(), effort=()):
    return ref("trajectory_msgs/JointTrajectoryPoint", positions=f64(*positions), velocities=f64(*velocities),
               accelerations=f64(*accelerations), effort=f64(*effort), time_from_start=ref_duration(sec, nanosec))


def joint_trajectory_():
    offsets = np.array([0.0, 25 / 512, 1 + 51 / 512])  # exact in binary: 0, 48828125 ns, 1 s 99609375 ns
    positions = np.array([[0.0, 0.5, -1.0], [0.25, 0.75, -1.5], [1.0, 2.0, -3.0]])
    msg = joint_trajectory(TYPES, ["shoulder", "elbow", "wrist"], STAMP + offsets, positions)
    msg.header.frame_id = "base_link"
    msg.points[1].velocities = [1.0, -2.0, 0.5]
    points = [ref_point(positions[0], 0, 0), ref_point(positions[1], 0, 48828125, velocities=(1.0, -2.0, 0.5)),
              ref_point(positions[2], 1, 99609375)]
    return msg, ref("trajectory_msgs/JointTrajectory", header=ref_header("base_link"),
                    joint_names=["shoulder", "elbow", "wrist"], points=points)


def joint_trajectory_point():
    msg = new("joint_trajectory_point", positions=[0.5, -0.5], velocities=[0.125, 0.0], accelerations=[-1.0, 2.0],
              effort=[3.5, 4.25], time_from_start=ros2_duration(2.5))
    return msg, ref_point((0.5, -0.5), 2, 500000000, (0.125, 0.0), (-1.0, 2.0), (3.5, 4.25))


def empty():
    return TYPES.new("empty"), ref("std_msgs/Empty", structure_needs_at_least_one_member=0)


def string():
    return new("string", data="estopped: Kraft über Grenze"), ref("std_msgs/String", data="estopped: Kraft über Grenze")


def key_value():
    return new("key_value", key="latency_ms", value="12.5"), ref("diagnostic_msgs/KeyValue", key="latency_ms",
                                                                 value="12.5")


def diagnostic_status():
    values = [("camera_hz", "29.7"), ("stale_topics", "/camera/front")]
    msg = new("diagnostic_status", level=1, name="robopolicy: inputs", message="a camera is late",
              hardware_id="bridge", values=[new("key_value", key=k, value=v) for k, v in values])
    return msg, ref("diagnostic_msgs/DiagnosticStatus", level=1, name="robopolicy: inputs",
                    message="a camera is late", hardware_id="bridge",
                    values=[ref("diagnostic_msgs/KeyValue", key=k, value=v) for k, v in values])


def diagnostics():
    status, ref_status = diagnostic_status()
    error = new("diagnostic_status", level=2, name="robopolicy: runtime", message="e-stopped")
    msg = new("diagnostics", status=[status, error])
    msg.header.stamp = TYPES.time(STAMP)
    return msg, ref("diagnostic_msgs/DiagnosticArray", header=ref_header(""), status=[ref_status, ref(
        "diagnostic_msgs/DiagnosticStatus", level=2, name="robopolicy: runtime", message="e-stopped",
        hardware_id="", values=[])])


MESSAGES: dict[str, Callable[[], tuple]] = {
    "image": image, "compressed_image": compressed_image, "joint_state": joint_state_, "point_cloud": point_cloud,
    "point_field": point_field, "pose": pose, "joint_trajectory": joint_trajectory_,
    "joint_trajectory_point": joint_trajectory_point, "empty": empty, "string": string, "key_value": key_value,
    "diagnostic_status": diagnostic_status, "diagnostics": diagnostics}


def reference_bytes(kind: str, reference) -> bytes:
    return bytes(TS.serialize_cdr(reference, type_name(kind)))


def test_every_kind_has_a_struct_and_a_reference_message():
    assert set(CLASSES) == set(KINDS) == set(MESSAGES)
    for kind, cls in CLASSES.items():
        assert cls.__idl_typename__ == type_name(kind).replace("/msg/", "::msg::dds_::").replace("/", "::") + "_"
        assert cls.__idl_annotations__["extensibility"] == "final"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_message_serializes_to_the_bytes_of_ros2_humble_and_reads_them_back(kind):
    msg, reference = MESSAGES[kind]()
    expected = reference_bytes(kind, reference)
    assert expected[:4] == b"\x00\x01\x00\x00"  # plain CDR, little endian: what ROS 2 nodes write
    assert bytes(msg.serialize(use_version_2=False)) == expected
    assert CLASSES[kind].deserialize(expected) == msg


@pytest.fixture
def domain(monkeypatch) -> Callable[..., Ros2Transport]:
    """A DDS domain of this test's own, on loopback: returns a node factory; the nodes shut down afterwards."""
    nodes: list[Ros2Transport] = []
    enter_new_domain(monkeypatch)

    def node(name: str, namespace: str = "") -> Ros2Transport:
        nodes.append(Ros2Transport(name, namespace))
        return nodes[-1]

    yield node
    for transport in nodes:
        transport.shutdown("test over")


def enter_new_domain(monkeypatch) -> int:
    """Nodes created from now on join a fresh domain id (ROS_DOMAIN_ID), with DDS on loopback (CYCLONEDDS_URI)."""
    env = dds_environment()
    for name in ("ROS_DOMAIN_ID", "CYCLONEDDS_URI"):
        monkeypatch.setenv(name, env[name])
    return int(env["ROS_DOMAIN_ID"])


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def take_raw(reader: DataReader, timeout: float = 5.0) -> list[bytes]:
    """The serialized samples `reader` gets (waiting up to `timeout` for the first), as received: DataReader.take
    would deserialize them, so this calls the C layer's take that it wraps."""
    received: list[bytes] = []
    deadline = time.monotonic() + timeout
    while not received and time.monotonic() < deadline:
        samples = ddspy_take(reader._ref, SampleState.Any | ViewState.Any | InstanceState.Any, 64)
        received = [bytes(data) for data, info in samples if info.valid_data]
        time.sleep(0.005)
    return received


def test_the_transports_writers_send_plain_cdr_exactly_as_ros2_serializes_it(domain):
    """What a subscriber receives is the Humble serialization, padded to 4 bytes with zeros as DDS sends payloads;
    rosbags (a ROS 2 reader's stand-in) reads the padded bytes back to the same message."""
    publisher_node = domain("wire_publisher")
    listener = DomainParticipant(domain_id())  # a bare DDS participant: nothing of Ros2Transport on this side
    for qos in QOS:
        assert publisher_node.publisher(f"/wire/qos_{qos}", "string", qos=qos)._writer._use_version_2 is False
    for kind in sorted(KINDS):
        msg, reference = MESSAGES[kind]()
        expected = reference_bytes(kind, reference)
        reader = DataReader(listener, Topic(listener, f"rt/wire/{kind}", CLASSES[kind]), qos=QOS["default"])
        publisher = publisher_node.publisher(f"/wire/{kind}", kind)
        assert wait_until(lambda p=publisher: p.subscribers() == 1), kind
        publisher.publish(msg)
        received = take_raw(reader)
        assert received == [expected + b"\0" * (-len(expected) % 4)], kind
        assert reference_bytes(kind, TS.deserialize_cdr(received[0], type_name(kind))) == expected, kind


def exact_split(seconds: float) -> tuple[int, int]:
    """The float's exact value split into whole seconds and nanoseconds, rounded half to even (the oracle)."""
    exact = Decimal(seconds)
    whole = int(exact.to_integral_value(rounding=ROUND_FLOOR))
    nanoseconds = int(((exact - whole) * 10**9).to_integral_value(rounding=ROUND_HALF_EVEN))
    return (whole + 1, 0) if nanoseconds == 10**9 else (whole, nanoseconds)


@pytest.mark.parametrize("seconds, sec, nanosec", [
    (0.0, 0, 0), (1.5, 1, 500000000), (12.25, 12, 250000000), (STAMP, SEC, NANOSEC),
    (1700000000.123456789, 1700000000, 123456717),  # the float nearest is ...123456716.5375 ns
    (1700000000.987654321, 1700000000, 987654209),  # ...987654209.137 ns
    (1.0000000016, 1, 2), (1.9999999994, 1, 999999999),
    (0.9999999999, 1, 0), (41.9999999999, 42, 0), (1.9999999996, 2, 0),  # rounding up to a second carries
    (2**31 - 1 + 0.5, 2**31 - 1, 500000000)])
def test_seconds_split_into_sec_and_nanosec_rounded_to_the_nanosecond(seconds, sec, nanosec):
    assert exact_split(seconds) == (sec, nanosec)
    for split in (ros2_time, ros2_duration):
        value = split(seconds)
        assert (value.sec, value.nanosec) == (sec, nanosec), split.__name__
        assert type(value).deserialize(value.serialize(use_version_2=False)) == value


def test_epoch_times_round_trip_within_a_microsecond():
    for seconds in [*np.random.default_rng(0).uniform(1.6e9, 1.9e9, 2000), 1700000000.999999, 1999999999.9999998]:
        stamp = ros2_time(float(seconds))
        assert 0 <= stamp.nanosec < 10**9
        assert (stamp.sec, stamp.nanosec) == exact_split(float(seconds))
        assert abs(stamp_seconds(stamp) - seconds) < 1e-6


def test_ros2_names_map_to_dds_topics_under_the_namespace_and_the_node():
    assert dds_topic("/arm/command") == "rt/arm/command"
    assert dds_topic("/arm/command", "/robot1", "bridge") == "rt/arm/command"  # absolute: no namespace
    assert dds_topic("arm/command") == "rt/arm/command"
    assert dds_topic("arm/command", "/robot1") == "rt/robot1/arm/command"
    assert dds_topic("arm/command", "/robot1/") == "rt/robot1/arm/command"
    assert dds_topic("joint_states", "/lab/robot1", "bridge") == "rt/lab/robot1/joint_states"
    assert dds_topic("~/x", "/robot1", "bridge") == "rt/robot1/bridge/x"
    assert dds_topic("~/x", "", "bridge") == "rt/bridge/x"
    assert dds_topic("~", "/robot1", "bridge") == "rt/robot1/bridge"
    for bad in ("arm command", "/a//b", "1abc", "/arm/1st", "/arm/", "", "~abc", "/~/x", "arm-command", "/arm/命令"):
        with pytest.raises(ValueError, match=f"{bad!r} is not a ROS 2 topic name"):
            dds_topic(bad, "/robot1", "bridge")


def test_bad_domain_ids_and_namespaces_are_refused_naming_the_setting(monkeypatch):
    for value, expected in (("", 0), ("0", 0), (" 7 ", 7), ("232", 232)):
        monkeypatch.setenv("ROS_DOMAIN_ID", value)
        assert domain_id() == expected
    monkeypatch.delenv("ROS_DOMAIN_ID")
    assert domain_id() == 0
    for value in ("abc", "300", "233", "-1", "1.5"):
        monkeypatch.setenv("ROS_DOMAIN_ID", value)
        with pytest.raises(ValueError, match=f"ROS_DOMAIN_ID={value!r} is not a domain id; set it to 0..232"):
            domain_id()
        with pytest.raises(ValueError, match="ROS_DOMAIN_ID"):
            Ros2Transport("bridge")
    enter_new_domain(monkeypatch)
    for namespace in ("robot 1", "/robot1//arm", "~/robot1"):
        with pytest.raises(ValueError, match=f"namespace {namespace!r} is not a ROS 2 namespace"):
            Ros2Transport("bridge", namespace)


def test_unknown_qos_and_a_second_type_on_one_topic_are_refused(domain):
    node = domain("bridge")
    with pytest.raises(ValueError, match="unknown QoS profile 'reliable'"):
        node.publisher("/arm/command", "joint_trajectory", qos="reliable")
    with pytest.raises(ValueError, match="unknown QoS profile 'best_effort'"):
        node.subscribe("/arm/joint_states", "joint_state", print, qos="best_effort")
    node.subscribe("/arm/joint_states", "joint_state", print)
    with pytest.raises(ValueError, match="topic /arm/joint_states is used with two message types"):
        node.publisher("/arm/joint_states", "pose")


class Inbox:
    """A subscription's messages, for the test to wait on."""

    def __init__(self) -> None:
        self.messages: list = []

    def __call__(self, msg) -> None:
        self.messages.append(msg)

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        return wait_until(lambda: len(self.messages) >= count, timeout)


def publish_until(publisher, msg, inbox: Inbox, timeout: float = 5.0) -> bool:
    """Publish `msg` every 20 ms until `inbox` has a message (best-effort topics may drop the first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publisher.publish(msg)
        if inbox.wait_for(1, timeout=0.02):
            return True
    return False


def test_joint_states_arrive_in_order_and_intact_between_two_nodes(domain):
    driver, bridge = domain("driver"), domain("bridge", "/robot1")
    assert driver._participant.domain_id == domain_id()
    inbox = Inbox()
    bridge.subscribe("joint_states", "joint_state", inbox)  # relative: /robot1/joint_states
    elsewhere = driver.publisher("/joint_states", "joint_state")
    publisher = driver.publisher("/robot1/joint_states", "joint_state")
    assert wait_until(lambda: publisher.subscribers() == 1) and elsewhere.subscribers() == 0
    sent = []
    for k in range(10):  # a burst as deep as the default profile's history (keep last 10)
        msg = joint_state(driver.types, ["shoulder", "elbow"], np.array([0.01 * k, -0.5 * k]), STAMP + 0.05 * k)
        msg.header.frame_id, msg.velocity = f"frame{k}", [float(k), 0.0]
        sent.append(msg)
        publisher.publish(msg)
    assert inbox.wait_for(10)
    assert inbox.messages == sent


def test_a_latched_message_reaches_a_subscriber_that_comes_later(domain):
    bridge, operator = domain("bridge"), domain("operator")
    state = bridge.publisher("/robopolicy/state", "string", qos="latched")
    for value in ("warming_up", "ready"):
        state.publish(new("string", data=value))
    latched, volatile = Inbox(), Inbox()
    operator.subscribe("/robopolicy/state", "string", latched, qos="latched")
    assert latched.wait_for(1)
    assert [m.data for m in latched.messages] == ["ready"]  # keep last 1: only the newest state
    operator.subscribe("/robopolicy/state", "string", volatile)  # a volatile reader asks for no history
    assert wait_until(lambda: state.subscribers() == 2)
    state.publish(new("string", data="running"))
    assert latched.wait_for(2) and volatile.wait_for(1)
    assert [m.data for m in latched.messages] == ["ready", "running"]
    assert [m.data for m in volatile.messages] == ["running"]


def test_best_effort_subscribers_hear_reliable_publishers_but_not_the_reverse(domain):
    """DDS matches a reader and a writer only when the writer offers at least what the reader requests: a
    best-effort (sensor_data) reader takes a reliable writer's messages, but a reliable (default) reader never
    matches a best-effort writer and hears nothing, with no error on either side. Camera drivers publish
    sensor_data, so the topic map's qos must say sensor_data for them, or the bridge waits forever for images."""
    camera, bridge = domain("camera"), domain("bridge")
    from_reliable = Inbox()
    bridge.subscribe("/camera/reliable", "string", from_reliable, qos="sensor_data")
    reliable = camera.publisher("/camera/reliable", "string")
    assert wait_until(lambda: reliable.subscribers() == 1)
    assert publish_until(reliable, new("string", data="frame"), from_reliable)

    wants_reliable, best_effort_reader = Inbox(), Inbox()
    bridge.subscribe("/camera/best_effort", "string", wants_reliable)
    bridge.subscribe("/camera/best_effort", "string", best_effort_reader, qos="sensor_data")
    best_effort = camera.publisher("/camera/best_effort", "string", qos="sensor_data")
    assert wait_until(lambda: best_effort.subscribers() >= 1)
    assert publish_until(best_effort, new("string", data="frame"), best_effort_reader)
    best_effort.publish(new("string", data="frame"))
    assert best_effort_reader.wait_for(2)
    assert best_effort.subscribers() == 1 and wants_reliable.messages == []


def test_nodes_on_different_domain_ids_do_not_hear_each_other(domain, monkeypatch):
    publisher_node, same_domain = domain("driver"), domain("bridge")
    heard, elsewhere = Inbox(), Inbox()
    same_domain.subscribe("/arm/joint_states", "string", heard)
    other_id = enter_new_domain(monkeypatch)
    other_domain = domain("bridge_elsewhere")
    assert other_domain._participant.domain_id == other_id != publisher_node._participant.domain_id
    other_domain.subscribe("/arm/joint_states", "string", elsewhere)
    publisher = publisher_node.publisher("/arm/joint_states", "string")
    assert wait_until(lambda: publisher.subscribers() == 1)
    for _ in range(3):
        publisher.publish(new("string", data="hello"))
    assert heard.wait_for(3)
    assert publisher.subscribers() == 1 and elsewhere.messages == []


def test_subscribers_counts_the_matched_readers(domain):
    driver, bridge, recorder = domain("driver"), domain("bridge"), domain("recorder")
    publisher = driver.publisher("/arm/command", "joint_trajectory")
    assert publisher.subscribers() == 0
    bridge.subscribe("/arm/command", "joint_trajectory", Inbox())
    assert wait_until(lambda: publisher.subscribers() == 1)
    recorder.subscribe("/arm/command", "joint_trajectory", Inbox())
    recorder.subscribe("/arm/command", "joint_trajectory", Inbox())
    driver.subscribe("/arm/command", "joint_trajectory", Inbox())  # a reader in the publisher's own node counts
    assert wait_until(lambda: publisher.subscribers() == 4)
    bridge.subscribe("/arm/other", "joint_trajectory", Inbox())
    assert publisher.subscribers() == 4


def test_a_failing_callback_does_not_end_its_subscription(domain, caplog):
    driver, bridge = domain("driver"), domain("bridge")
    inbox = Inbox()

    def callback(msg) -> None:
        inbox(msg)
        if msg.data == "bad":
            raise RuntimeError("cannot convert")

    bridge.subscribe("/arm/joint_states", "string", callback)
    publisher = driver.publisher("/arm/joint_states", "string")
    assert wait_until(lambda: publisher.subscribers() == 1)
    with caplog.at_level(logging.ERROR, logger="robopolicy.ros.ros2"):
        for data in ("good", "bad", "after", "bad", "last"):
            publisher.publish(new("string", data=data))
        assert inbox.wait_for(5)
    assert [m.data for m in inbox.messages] == ["good", "bad", "after", "bad", "last"]
    failures = [r for r in caplog.records if "callback of rt/arm/joint_states failed" in r.getMessage()]
    assert len(failures) == 2 and all("cannot convert" in str(r.exc_info[1]) for r in failures)


def test_shutdown_stops_delivery(domain):
    driver, bridge, witness = domain("driver"), domain("bridge"), domain("witness")
    delivered, seen = Inbox(), Inbox()
    bridge.subscribe("/arm/joint_states", "string", delivered)
    witness.subscribe("/arm/joint_states", "string", seen)
    publisher = driver.publisher("/arm/joint_states", "string")
    assert wait_until(lambda: publisher.subscribers() == 2)
    publisher.publish(new("string", data="before"))
    assert delivered.wait_for(1) and seen.wait_for(1)
    assert not bridge.is_shutdown()
    bridge.shutdown("test")
    assert bridge.is_shutdown()
    assert not any(thread.is_alive() for thread in bridge._threads)
    for data in ("after", "later"):
        publisher.publish(new("string", data=data))
    assert seen.wait_for(3)  # the witness got both: they were on the wire
    assert [m.data for m in delivered.messages] == ["before"]
