"""ROS message conversion both ways, on ROS 1's real message classes (Debian's packages) and on ROS 2's (the DDS
structs of ros2_messages.py): every test takes the `types` fixture (tests/ros/conftest.py) and runs on both."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy.spatial.transform import Rotation

from robopolicy.geometry import matrix_to_rot6d
from robopolicy.ros.binding import read_topic, topic_message
from robopolicy.ros.convert import (
    action_to_pose,
    array_to_compressed_image,
    array_to_image,
    array_to_point_cloud,
    compressed_image_to_array,
    crop_resize,
    image_to_array,
    joint_state,
    joint_state_to_array,
    joint_trajectory,
    point_cloud_to_array,
    pose_part,
    pose_stamped,
    pose_to_action,
    pose_to_array,
    stamp_seconds,
    trajectory_to_arrays,
)
from robopolicy.ros.topic_map import load_topic_map


def new(types, kind: str, **values):
    """A message of `kind` filled by attribute assignment (ROS 2's structs and ROS 1's classes both take it)."""
    msg = types.new(kind)
    for name, value in values.items():
        setattr(msg, name, value)
    return msg


def over_the_wire(msg):
    """`msg` as a subscriber gets it: serialized and read back (genpy for ROS 1, plain CDR for ROS 2)."""
    if hasattr(msg, "_type"):  # a genpy message (ROS 1)
        buffer = io.BytesIO()
        msg.serialize(buffer)
        return type(msg)().deserialize(buffer.getvalue())
    return type(msg).deserialize(msg.serialize(use_version_2=False))


def test_images_round_trip_and_bgr_mono_depth_are_read_as_rgb_and_metres(types):
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    msg = array_to_image(types, rgb, stamp=12.25, frame_id="agentview")
    assert isinstance(msg, types.classes["image"]) and msg.encoding == "rgb8"
    assert stamp_seconds(msg.header.stamp) == 12.25 and msg.header.frame_id == "agentview"
    np.testing.assert_array_equal(image_to_array(msg), rgb)
    np.testing.assert_array_equal(image_to_array(over_the_wire(msg)), rgb)
    bgr = new(types, "image", height=4, width=5, encoding="bgr8", step=16,
              data=np.pad(rgb[..., ::-1].reshape(4, 15), ((0, 0), (0, 1))).tobytes())
    np.testing.assert_array_equal(image_to_array(bgr), rgb)  # rows padded to a 16-byte step
    mono = new(types, "image", height=4, width=5, encoding="mono8", step=5, data=rgb[..., 0].tobytes())
    np.testing.assert_array_equal(image_to_array(mono), np.repeat(rgb[..., :1], 3, axis=2))
    millimetres = np.array([[1000, 250], [0, 65535]], dtype=">u2")
    depth = new(types, "image", height=2, width=2, encoding="16UC1", is_bigendian=1, step=4, data=millimetres.tobytes())
    np.testing.assert_allclose(image_to_array(depth), [[1.0, 0.25], [0.0, 65.535]])
    metres = array_to_image(types, np.array([[0.5, 1.5]], np.float32), stamp=0.0)
    assert metres.encoding == "32FC1" and image_to_array(metres).tolist() == [[0.5, 1.5]]
    assert image_to_array(over_the_wire(metres)).tolist() == [[0.5, 1.5]]
    with pytest.raises(ValueError, match="yuv422"):
        image_to_array(new(types, "image", encoding="yuv422"))


def test_compressed_images_decode_to_rgb(types):
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[:, :4] = [255, 0, 0]
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="PNG")
    msg = new(types, "compressed_image", format="png", data=buffer.getvalue())
    np.testing.assert_array_equal(compressed_image_to_array(msg), rgb)


def test_joint_states_follow_the_configured_joint_order(types):
    msg = joint_state(types, ["elbow", "shoulder", "wrist"], np.array([0.5, -1.0, 2.0]), stamp=3.0)
    assert isinstance(msg, types.classes["joint_state"])
    assert joint_state_to_array(msg, ["shoulder", "elbow"]).tolist() == [-1.0, 0.5]
    with pytest.raises(KeyError, match="gripper"):
        joint_state_to_array(msg, ["gripper"])


def test_pose_stamped_gives_position_and_xyzw_quaternion(types):
    msg = types.new("pose")
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = 0.1, 0.2, 0.3
    msg.pose.orientation.z, msg.pose.orientation.w = np.sin(0.25), np.cos(0.25)
    np.testing.assert_allclose(pose_to_array(msg), [0.1, 0.2, 0.3, 0, 0, np.sin(0.25), np.cos(0.25)], rtol=1e-6)


def test_point_clouds_read_xyz_and_drop_invalid_points(types):
    points = np.array([(1.0, 2.0, 3.0, 7), (np.nan, 0.0, 0.0, 8), (4.0, 5.0, 6.0, 9)],
                      dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    fields = [new(types, "point_field", name=n, offset=4 * i, datatype=7 if n != "rgb" else 6, count=1)
              for i, n in enumerate(["x", "y", "z", "rgb"])]
    msg = new(types, "point_cloud", height=1, width=3, fields=fields, is_bigendian=False, point_step=16, row_step=48,
              data=points.tobytes(), is_dense=False)
    np.testing.assert_array_equal(point_cloud_to_array(msg), [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(KeyError, match="normal_x"):
        point_cloud_to_array(msg, ("x", "normal_x"))


def test_trajectories_carry_the_runtimes_execution_times(types):
    times = 100.0 + np.array([0.0, 0.05, 0.1])
    positions = np.arange(6, dtype=float).reshape(3, 2)
    msg = joint_trajectory(types, ["a", "b"], times, positions)
    assert stamp_seconds(msg.header.stamp) == 100.0 and msg.joint_names == ["a", "b"]
    assert [stamp_seconds(p.time_from_start) for p in msg.points] == pytest.approx([0.0, 0.05, 0.1], abs=2e-9)
    for received in (msg, over_the_wire(msg)):
        back_times, back_positions = trajectory_to_arrays(received)
        np.testing.assert_allclose(back_times, times)
        np.testing.assert_array_equal(back_positions, positions)


def test_pose_commands_and_readings_convert_between_rot6d_and_quaternions(types):
    rotation = Rotation.from_euler("xyz", [0.3, -0.2, 1.1])
    action = np.concatenate([[0.1, -0.2, 0.9], matrix_to_rot6d(rotation.as_matrix())])
    position, quat = action_to_pose(action)
    msg = pose_stamped(types, position, quat, stamp=5.0, frame_id="world")
    assert isinstance(msg, types.classes["pose"]) and msg.header.frame_id == "world"
    np.testing.assert_allclose(pose_to_action(msg, 9), action, atol=1e-6)
    np.testing.assert_allclose(pose_part(msg, "rot6d"), action[3:], atol=1e-6)
    np.testing.assert_allclose(np.abs(pose_part(msg, "orientation") @ rotation.as_quat()), 1.0, atol=1e-6)
    np.testing.assert_allclose(pose_to_action(msg, 7), [*action[:3], *quat], atol=1e-6)
    with pytest.raises(ValueError, match="9 action dims"):
        action_to_pose(action[:5])


def test_images_are_cropped_then_resized_and_compressed_images_and_clouds_round_trip(types):
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:30, 20:40] = 200
    np.testing.assert_array_equal(crop_resize(image, (10, 20, 20, 20), (10, 10)), np.full((10, 10, 3), 200))
    assert crop_resize(np.ones((40, 60), np.float32), None, (20, 30)).shape == (20, 30)
    with pytest.raises(ValueError, match="does not fit a 40x60 image"):
        crop_resize(image, (30, 0, 20, 10), None)
    png = array_to_compressed_image(types, image, stamp=1.0, image_format="png")
    assert isinstance(png, types.classes["compressed_image"]) and png.format == "png"
    np.testing.assert_array_equal(compressed_image_to_array(png), image)
    np.testing.assert_array_equal(compressed_image_to_array(over_the_wire(png)), image)
    points = np.array([[1.0, 2.0, 3.0, 0.5], [4.0, 5.0, 6.0, 0.25]], np.float32)
    cloud = array_to_point_cloud(types, points, ("x", "y", "z", "intensity"), stamp=2.0)
    np.testing.assert_array_equal(point_cloud_to_array(cloud, ("x", "y", "z", "intensity")), points)
    np.testing.assert_array_equal(point_cloud_to_array(over_the_wire(cloud), ("x", "y", "z", "intensity")), points)


def test_a_topic_map_binding_reads_back_what_the_driver_side_builds(types):
    topics = load_topic_map("sim_lift")
    values = {"robot0_eef_pos": np.array([0.1, 0.0, 1.0], np.float32),
              "robot0_eef_rot6d": np.array([1, 0, 0, 0, -1, 0], np.float32),
              "robot0_gripper_qpos": np.array([0.02, -0.02], np.float32),
              "object": np.arange(10, dtype=np.float32)}
    for topic, bindings in topics.by_topic().items():
        msg = over_the_wire(topic_message(types, bindings, values, stamp=7.5))  # as the bridge receives it
        assert stamp_seconds(msg.header.stamp) == 7.5
        for sensor, read in read_topic(bindings, msg).items():
            assert sensor == bindings[0].sensor
            for key, value in read.items():
                np.testing.assert_allclose(value, values[key], atol=1e-6, err_msg=f"{topic}: {key}")
