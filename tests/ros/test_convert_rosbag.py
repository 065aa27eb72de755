"""ROS bags become episode stores through a robot topic map: a ROS 2 bag written with rosbags, and a
ROS 1 bag recorded by Debian's `rosbag record` from a real roscore. Message k (every 50 ms) carries
k in every field, so each tick's values name the message they came from."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from robopolicy.cli import main
from robopolicy.datasets.convert.formats import open_source
from robopolicy.datasets.convert.run import CONVERTED_ATTR, convert_source
from robopolicy.datasets.errors import DataError
from robopolicy.datasets.store import EpisodeStore

PERIOD = 0.05
T0 = 1000.0
TOPIC_MAP = {
    "name": "bag_arm",
    "observations": {
        "robot0_eef_pos": {"topic": "/arm/eef_pose", "type": "pose", "field": "position"},
        "robot0_gripper_qpos": {"topic": "/arm/joint_states", "type": "joint_state",
                                "joints": ["finger_left", "finger_right"]},
        "front_image": {"topic": "/camera/front", "type": "image", "resize": [3, 4]},
    },
    "commands": [{"topic": "/arm/target_pose", "type": "pose", "action_dims": [0, 9]},
                 {"topic": "/gripper/command", "type": "joint_trajectory", "action_dims": [9, 10],
                  "joints": ["gripper"]}],
}
# the ROS 2 bag also has a PNG-compressed wrist camera
ROS2_MAP = {**TOPIC_MAP, "observations": {**TOPIC_MAP["observations"],
                                          "wrist_image": {"topic": "/camera/wrist", "type": "compressed_image"}}}


ROS2_TOPICS = ("/arm/eef_pose", "/arm/joint_states", "/camera/front", "/arm/target_pose", "/gripper/command",
               "/episode", "/camera/wrist")


@pytest.fixture
def topic_map(tmp_path) -> Path:
    path = tmp_path / "bag_arm.yaml"
    path.write_text(yaml.safe_dump(TOPIC_MAP))
    return path


@pytest.fixture
def ros2_map(tmp_path) -> Path:
    path = tmp_path / "bag_arm_ros2.yaml"
    path.write_text(yaml.safe_dump(ROS2_MAP))
    return path


def assert_ticks_follow_messages(store: EpisodeStore, index: int, first: int, step: int, count: int) -> None:
    """Tick i carries message first + step * i of every topic; the gripper follows its trajectory points."""
    values = store.episode(index)
    k = first + step * np.arange(count)
    assert store.episode_lengths[index] == count
    np.testing.assert_allclose(values["robot0_eef_pos"][:, 0], k)
    np.testing.assert_allclose(values["robot0_gripper_qpos"], np.stack([k, -k], axis=1))
    assert values["front_image"].shape == (count, 3, 4, 3)
    np.testing.assert_array_equal(values["front_image"][:, 0, 0, 0], k)
    np.testing.assert_allclose(values["action"][:, 0], k + 0.5)
    np.testing.assert_allclose(values["action"][:, 3:9], np.tile([1, 0, 0, 0, 1, 0], (count, 1)), atol=1e-6)
    np.testing.assert_allclose(values["action"][:, 9], 0.01 * k, atol=1e-6)
    stamps = store.timestamps("action")[store.episode_slice(index)]
    np.testing.assert_allclose(np.diff(stamps), step * PERIOD, atol=1e-6)


# ---------------------------------------------------------------- ROS 2, written with rosbags
def write_ros2_bag(path: Path, n: int, gap: range = range(0), storage: str = "sqlite3",
                   only: Sequence[str] | None = None, commands_from: int = 0) -> None:
    """n messages per topic from T0; a marker on /episode at message 0 and n // 2; no joint states
    for the messages in `gap`; no commands before message `commands_from`; only the topics in `only` when it
    is given."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types

    def header(t: float):
        return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](
            sec=int(t), nanosec=int(round((t - int(t)) * 1e9))), frame_id="world")

    def pose(t: float, x: float):
        point = types["geometry_msgs/msg/Point"](x=float(x), y=0.0, z=1.0)
        quat = types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)
        return types["geometry_msgs/msg/PoseStamped"](header=header(t), pose=types["geometry_msgs/msg/Pose"](
            position=point, orientation=quat))

    def png(k: int) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(np.full((4, 6, 3), [k, 255 - k, 7], np.uint8)).save(buffer, format="PNG")
        return np.frombuffer(buffer.getvalue(), np.uint8)

    empty = np.zeros(0, np.float64)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        topics = {"/arm/eef_pose": "geometry_msgs/msg/PoseStamped", "/arm/joint_states": "sensor_msgs/msg/JointState",
                  "/camera/front": "sensor_msgs/msg/Image", "/arm/target_pose": "geometry_msgs/msg/PoseStamped",
                  "/gripper/command": "trajectory_msgs/msg/JointTrajectory", "/episode": "std_msgs/msg/String",
                  "/camera/wrist": "sensor_msgs/msg/CompressedImage"}
        topics = {topic: kind for topic, kind in topics.items() if only is None or topic in only}
        connections = {topic: writer.add_connection(topic, kind, typestore=store) for topic, kind in topics.items()}
        for k in range(n):
            t = T0 + k * PERIOD
            messages = {"/arm/eef_pose": pose(t, k), "/arm/target_pose": pose(t, k + 0.5),
                        "/camera/front": types["sensor_msgs/msg/Image"](
                            header=header(t), height=6, width=8, encoding="rgb8", is_bigendian=0, step=24,
                            data=np.full(6 * 8 * 3, k, np.uint8)),
                        "/camera/wrist": types["sensor_msgs/msg/CompressedImage"](
                            header=header(t), format="png", data=png(k))}
            if k not in gap:
                messages["/arm/joint_states"] = types["sensor_msgs/msg/JointState"](
                    header=header(t), name=["finger_right", "finger_left"], position=np.array([-k, k], float),
                    velocity=empty, effort=empty)
            if k % 4 == 0:  # a trajectory of 4 points every 4 periods
                points = [types["trajectory_msgs/msg/JointTrajectoryPoint"](
                    positions=np.array([0.01 * (k + j)]), velocities=empty, accelerations=empty, effort=empty,
                    time_from_start=types["builtin_interfaces/msg/Duration"](sec=0, nanosec=int(j * PERIOD * 1e9)))
                    for j in range(4)]
                messages["/gripper/command"] = types["trajectory_msgs/msg/JointTrajectory"](
                    header=header(t), joint_names=["gripper"], points=points)
            if k in (0, n // 2):
                messages["/episode"] = types["std_msgs/msg/String"](data="start")
            for topic, msg in messages.items():
                if topic not in topics or (k < commands_from and topic in ("/arm/target_pose", "/gripper/command")):
                    continue
                writer.write(connections[topic], int(t * 1e9), store.serialize_cdr(msg, topics[topic]))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_ros2_bag_becomes_one_episode_sampled_at_the_target_rate(tmp_path, ros2_map, storage):
    write_ros2_bag(tmp_path / "demo", n=40, storage=storage)
    source = open_source("rosbag", tmp_path / "demo", {"map": str(ros2_map), "rate": 10})
    summary = convert_source(source, tmp_path / "out.zarr")
    assert summary["episodes"] == 1 and summary["dropped"] == []
    store = EpisodeStore.open(tmp_path / "out.zarr")
    assert store.fps == 10
    assert_ticks_follow_messages(store, 0, first=0, step=2, count=20)
    wrist = store.episode(0)["wrist_image"]  # PNG-compressed frames decoded
    assert wrist.shape == (20, 4, 6, 3)
    np.testing.assert_array_equal(wrist[:, 2, 3], np.stack([2 * np.arange(20), 255 - 2 * np.arange(20),
                                                            np.full(20, 7)], axis=1))


def test_ticks_before_the_first_command_are_trimmed(tmp_path, ros2_map):
    """A bag recorder started before the teleoperation: the episode begins at the first command of every command
    topic (the gripper's trajectories come every 4th message, so from message 8)."""
    write_ros2_bag(tmp_path / "demo", n=40, commands_from=6)
    summary = convert_source(open_source("rosbag", tmp_path / "demo", {"map": str(ros2_map)}), tmp_path / "out.zarr")
    assert summary["episodes"] == 1 and summary["dropped"] == []
    assert_ticks_follow_messages(EpisodeStore.open(tmp_path / "out.zarr"), 0, first=8, step=1, count=32)


def test_episodes_split_by_a_topic_and_a_data_gap_drops_its_episode(tmp_path, topic_map):
    write_ros2_bag(tmp_path / "demo", n=40, gap=range(29, 33))
    source = open_source("rosbag", tmp_path / "demo", {"map": str(topic_map), "split_topic": "/episode",
                                                       "max_age": 0.12})
    summary = convert_source(source, tmp_path / "out.zarr")
    assert summary["episodes"] == 1 and len(summary["dropped"]) == 1
    assert summary["dropped"][0]["episode"] == "demo#1"
    # joint states pause after message 28 (1.40 s): the tick at 1.55 s is the first more than 0.12 s past it
    assert "/arm/joint_states has no message in the 0.12 s before 1001.550 s" in summary["dropped"][0]["reason"]
    # every reference message is a tick when no rate is given
    assert_ticks_follow_messages(EpisodeStore.open(tmp_path / "out.zarr"), 0, first=0, step=1, count=20)


JOINTS_ONLY = {"name": "joints_only", "commands": [],
               "observations": {"robot0_gripper_qpos": {"topic": "/arm/joint_states", "type": "joint_state",
                                                        "joints": ["finger_left", "finger_right"]},
                                "front_image": {"topic": "/camera/front", "type": "image"}}}


def test_a_bag_of_joint_states_takes_its_actions_from_the_next_step(tmp_path):
    write_ros2_bag(tmp_path / "demo", n=12, only=["/arm/joint_states", "/camera/front"])
    path = tmp_path / "joints_only.yaml"
    path.write_text(yaml.safe_dump(JOINTS_ONLY))
    with pytest.raises(DataError, match=f"(?s){path}.*has no commands.*action_from=KEY.*robot0_gripper_qpos"):
        open_source("rosbag", tmp_path / "demo", {"map": str(path)})
    with pytest.raises(DataError, match="(?s)action_from='front_image'.*not a low-dim value.*robot0_gripper_qpos"):
        open_source("rosbag", tmp_path / "demo", {"map": str(path), "action_from": "front_image"})
    source = open_source("rosbag", tmp_path / "demo", {"map": str(path), "action_from": "robot0_gripper_qpos"})
    summary = convert_source(source, tmp_path / "out.zarr")
    assert summary["episodes"] == 1 and summary["dropped"] == []
    store = EpisodeStore.open(tmp_path / "out.zarr")
    values = store.episode(0)
    k = np.arange(12)
    np.testing.assert_allclose(values["robot0_gripper_qpos"], np.stack([k, -k], axis=1))
    following = np.minimum(k + 1, 11)  # the next tick's joint positions; the last tick keeps its own
    np.testing.assert_allclose(values["action"], np.stack([following, -following], axis=1))
    assert values["action"].dtype == np.float32 and store.attrs["action_from"] == "robot0_gripper_qpos"


def test_a_conversion_that_keeps_no_episode_fails_naming_each_reason_and_leaves_no_store(tmp_path, capsys):
    write_ros2_bag(tmp_path / "demo", n=8)
    absent = {**TOPIC_MAP, "commands": [{**TOPIC_MAP["commands"][0], "topic": "/arm/absent_target"},
                                        TOPIC_MAP["commands"][1]]}
    path = tmp_path / "absent.yaml"
    path.write_text(yaml.safe_dump(absent))
    code = main(["dataset", "convert", "--from", "rosbag", str(tmp_path / "demo"), str(tmp_path / "out.zarr"),
                 f"map={path}"])
    error = capsys.readouterr().err
    assert code == 2
    assert "no episode of rosbag" in error and "demo#0: demo has no ['/arm/absent_target']" in error
    assert not (tmp_path / "out.zarr").exists()  # the empty store this call created is removed
    # a store that was there before (an earlier run stopped before its first episode) is kept
    source = open_source("rosbag", tmp_path / "demo", {"map": str(path)})
    EpisodeStore.create(tmp_path / "kept.zarr", attrs={CONVERTED_ATTR: {"format": "rosbag", "source": source.location,
                                                                         "episodes": []}})
    with pytest.raises(DataError, match="(?s)demo#0: demo has no.*absent_target"):
        convert_source(source, tmp_path / "kept.zarr")
    assert EpisodeStore.open(tmp_path / "kept.zarr").n_episodes == 0


# ---------------------------------------------------------------- ROS 1, recorded with rosbag record
PUBLISHER = """
import sys, time, numpy as np, rospy
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
rospy.init_node("demo_publisher")
pubs = {t: rospy.Publisher(t, c, queue_size=50) for t, c in [("/arm/eef_pose", PoseStamped),
        ("/arm/joint_states", JointState), ("/camera/front", Image), ("/arm/target_pose", PoseStamped),
        ("/gripper/command", JointTrajectory)]}
while any(p.get_num_connections() == 0 for p in pubs.values()):
    time.sleep(0.05)
time.sleep(0.5)
t0 = rospy.get_time()
def pose(t, x):
    msg = PoseStamped(); msg.header.stamp = rospy.Time.from_sec(t)
    msg.pose.position.x, msg.pose.position.z, msg.pose.orientation.w = x, 1.0, 1.0
    return msg
for k in range(40):
    t = t0 + 0.05 * k
    pubs["/arm/eef_pose"].publish(pose(t, k))
    pubs["/arm/target_pose"].publish(pose(t, k + 0.5))
    js = JointState(name=["finger_right", "finger_left"], position=[-k, k]); js.header.stamp = rospy.Time.from_sec(t)
    pubs["/arm/joint_states"].publish(js)
    image = Image(height=6, width=8, encoding="rgb8", step=24, data=bytes([k]) * 144)
    image.header.stamp = rospy.Time.from_sec(t)
    pubs["/camera/front"].publish(image)
    if k % 4 == 0:
        traj = JointTrajectory(joint_names=["gripper"], points=[JointTrajectoryPoint(
            positions=[0.01 * (k + j)], time_from_start=rospy.Duration.from_sec(0.05 * j)) for j in range(4)])
        traj.header.stamp = rospy.Time.from_sec(t)
        pubs["/gripper/command"].publish(traj)
    time.sleep(max(0.0, t + 0.05 - rospy.get_time()))
time.sleep(0.5)
"""


@pytest.mark.slow
@pytest.mark.ros
def test_a_ros1_bag_recorded_with_rosbag_record_converts(tmp_path, topic_map):
    from tests.ros_graph import running_roscore

    topics = ["/arm/eef_pose", "/arm/joint_states", "/camera/front", "/arm/target_pose", "/gripper/command"]
    with running_roscore() as env:
        recorder = subprocess.Popen(["rosbag", "record", "-O", str(tmp_path / "demo.bag"), *topics], env=env,
                                    cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
        try:
            subprocess.run([sys.executable, "-c", PUBLISHER], env=env, check=True, timeout=120)
        finally:
            os.killpg(recorder.pid, signal.SIGINT)
            recorder.wait(30)
    deadline = time.monotonic() + 10
    while not (tmp_path / "demo.bag").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    source = open_source("rosbag", tmp_path / "demo.bag", {"map": str(topic_map), "rate": 10})
    summary = convert_source(source, tmp_path / "out.zarr")
    assert summary["episodes"] == 1, summary
    assert_ticks_follow_messages(EpisodeStore.open(tmp_path / "out.zarr"), 0, first=0, step=2, count=20)


def test_an_instruction_topic_names_each_episodes_task_and_is_no_sensor(tmp_path):
    """The operator's instruction (a std_msgs/String, here the bag's two /episode messages) becomes the episode's
    task string; it is published once, not at a sensor's rate, so it is neither a data key nor checked for age."""
    spoken = {**TOPIC_MAP, "observations": {**TOPIC_MAP["observations"],
                                            "instruction": {"topic": "/episode", "type": "string"}}}
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(spoken))
    write_ros2_bag(tmp_path / "demo", n=40)
    summary = convert_source(open_source("rosbag", tmp_path / "demo", {"map": str(tmp_path / "map.yaml")}),
                             tmp_path / "out.zarr")
    assert summary["episodes"] == 1 and summary["dropped"] == []
    store = EpisodeStore.open(tmp_path / "out.zarr")
    assert store.episode_tasks == ["start"] and "instruction" not in store.keys
    assert_ticks_follow_messages(store, 0, first=0, step=1, count=40)
    # a bag recorded without the instruction topic still converts, its task unknown
    write_ros2_bag(tmp_path / "silent", n=40, only=[t for t in ROS2_TOPICS if t != "/episode"])
    summary = convert_source(open_source("rosbag", tmp_path / "silent", {"map": str(tmp_path / "map.yaml")}),
                             tmp_path / "silent.zarr")
    assert summary["episodes"] == 1 and EpisodeStore.open(tmp_path / "silent.zarr").episode_tasks == [None]
