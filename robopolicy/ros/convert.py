"""ROS messages <-> numpy, by field names only, so ROS 1 (rospy) and ROS 2 (rclpy) messages both work.

Readers take any object with the standard fields of sensor_msgs / geometry_msgs; builders take
the message classes to fill (`MessageTypes`), so this module imports no ROS library. Stamps are
seconds as float: ROS 1 times have `secs`/`nsecs`, ROS 2 times `sec`/`nanosec`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from robopolicy.geometry import (
    matrix_to_rot6d,
    quat_xyzw_to_matrix,
    rot6d_to_matrix,
)

# sensor_msgs/Image encodings -> (dtype, channels); rgb/bgr order is handled by the reader
ENCODINGS = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
             "mono8": (np.uint8, 1), "16UC1": (np.uint16, 1), "32FC1": (np.float32, 1)}
# the message kinds a transport provides: kind -> ROS package/type
KINDS = {"image": "sensor_msgs/Image", "compressed_image": "sensor_msgs/CompressedImage",
         "joint_state": "sensor_msgs/JointState", "point_cloud": "sensor_msgs/PointCloud2",
         "point_field": "sensor_msgs/PointField", "pose": "geometry_msgs/PoseStamped",
         "joint_trajectory": "trajectory_msgs/JointTrajectory",
         "joint_trajectory_point": "trajectory_msgs/JointTrajectoryPoint", "empty": "std_msgs/Empty",
         "string": "std_msgs/String", "diagnostics": "diagnostic_msgs/DiagnosticArray",
         "diagnostic_status": "diagnostic_msgs/DiagnosticStatus", "key_value": "diagnostic_msgs/KeyValue"}
# sensor_msgs/PointField datatypes -> numpy
POINT_FIELD_TYPES = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32, 6: np.uint32,
                     7: np.float32, 8: np.float64}


def stamp_seconds(stamp: Any) -> float:
    """A ROS 1 or ROS 2 time as float seconds."""
    if hasattr(stamp, "secs"):
        return stamp.secs + stamp.nsecs * 1e-9
    return stamp.sec + stamp.nanosec * 1e-9


def image_to_array(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB for colour, (H, W) float32 metres for depth (16UC1 is mm)."""
    if msg.encoding not in ENCODINGS:
        raise ValueError(f"image encoding {msg.encoding!r} is not supported; use one of {sorted(ENCODINGS)}")
    dtype, channels = ENCODINGS[msg.encoding]
    item = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, : msg.width * channels * item.itemsize].copy().view(item).reshape(msg.height, msg.width, channels)
    if msg.encoding == "16UC1":
        return pixels[..., 0].astype(np.float32) / 1000.0
    if msg.encoding == "32FC1":
        return pixels[..., 0].astype(np.float32)
    if msg.encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if msg.encoding.startswith("bgr"):
        pixels = pixels[..., 2::-1]
    return np.ascontiguousarray(pixels[..., :3])


def compressed_image_to_array(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> (H, W, 3) uint8 RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(bytes(msg.data))) as image:
        return np.asarray(image.convert("RGB"))


def joint_state_to_array(msg: Any, names: Sequence[str], field: str = "position") -> np.ndarray:
    """sensor_msgs/JointState -> (len(names),) values of `field` in the order of `names`."""
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [name for name in names if name not in index]
    if missing:
        raise KeyError(f"JointState lacks joints {missing}; it has {list(msg.name)}")
    values = getattr(msg, field)
    return np.array([values[index[name]] for name in names], dtype=np.float32)


def pose_to_array(msg: Any) -> np.ndarray:
    """geometry_msgs/PoseStamped or Pose -> (7,) position xyz and quaternion xyzw."""
    pose = getattr(msg, "pose", msg)
    p, q = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float32)


def point_cloud_to_array(msg: Any, fields: Sequence[str] = ("x", "y", "z")) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> (N, len(fields)) float32, rows with a non-finite value dropped."""
    layout = {f.name: f for f in msg.fields}
    missing = [name for name in fields if name not in layout]
    if missing:
        raise KeyError(f"PointCloud2 lacks fields {missing}; it has {sorted(layout)}")
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({"names": list(fields),
                      "formats": [np.dtype(POINT_FIELD_TYPES[layout[n].datatype]).newbyteorder(order) for n in fields],
                      "offsets": [layout[n].offset for n in fields], "itemsize": msg.point_step})
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.row_step)
    points = rows[:, : msg.width * msg.point_step].copy().view(dtype).reshape(-1)
    array = np.stack([points[name].astype(np.float32) for name in fields], axis=1)
    return array[np.isfinite(array).all(axis=1)]


@dataclass(frozen=True)
class MessageTypes:
    """The message classes builders fill, by kind (see `KINDS`), and the time types, from the transport."""

    classes: Mapping[str, type]
    time: Callable[[float], Any]  # seconds -> a header stamp
    duration: Callable[[float], Any]  # seconds -> a Duration

    def new(self, kind: str) -> Any:
        return self.classes[kind]()


def array_to_image(types: MessageTypes, array: np.ndarray, stamp: float, frame_id: str = "") -> Any:
    """(H, W, 3) uint8 -> rgb8 Image, or (H, W) float32 metres -> 32FC1 Image."""
    msg = types.new("image")
    msg.header.stamp, msg.header.frame_id = types.time(stamp), frame_id
    array = np.ascontiguousarray(array)
    if array.ndim == 3:
        msg.encoding, channels = "rgb8", 3
        array = array.astype(np.uint8)
    else:
        msg.encoding, channels = "32FC1", 1
        array = array.astype("<f4")
    msg.height, msg.width = array.shape[:2]
    msg.is_bigendian = 0
    msg.step = msg.width * channels * array.itemsize
    msg.data = array.tobytes()
    return msg


def joint_state(types: MessageTypes, names: Sequence[str], positions: np.ndarray, stamp: float) -> Any:
    msg = types.new("joint_state")
    msg.header.stamp = types.time(stamp)
    msg.name, msg.position = list(names), [float(v) for v in positions]
    return msg


def joint_trajectory(types: MessageTypes, names: Sequence[str], times: np.ndarray, positions: np.ndarray) -> Any:
    """Timed points (absolute seconds) -> JointTrajectory stamped at the first time, times from there."""
    msg = types.new("joint_trajectory")
    start = float(times[0]) if len(times) else 0.0
    msg.header.stamp, msg.joint_names = types.time(start), list(names)
    for time, values in zip(times, positions, strict=True):
        point = types.new("joint_trajectory_point")
        point.positions = [float(v) for v in values]
        point.time_from_start = types.duration(float(time) - start)
        msg.points.append(point)
    return msg


def trajectory_to_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """JointTrajectory -> (absolute times (N,), positions (N, joints))."""
    start = stamp_seconds(msg.header.stamp)
    times = np.array([start + stamp_seconds(p.time_from_start) for p in msg.points])
    return times, np.array([p.positions for p in msg.points], dtype=np.float64).reshape(len(times), -1)


def pose_part(msg: Any, part: str) -> np.ndarray:
    """One part of a PoseStamped: position (3), orientation (4, xyzw), pose (7) or rot6d (6, the policy layout)."""
    pose = pose_to_array(msg)
    if part == "position":
        return pose[:3]
    if part == "orientation":
        return pose[3:]
    if part == "rot6d":
        return matrix_to_rot6d(quat_xyzw_to_matrix(pose[3:])).astype(np.float32)
    return pose


def pose_stamped(types: MessageTypes, position: np.ndarray, quat_xyzw: np.ndarray, stamp: float,
                 frame_id: str = "") -> Any:
    msg = types.new("pose")
    msg.header.stamp, msg.header.frame_id = types.time(stamp), frame_id
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in position)
    q.x, q.y, q.z, q.w = (float(v) for v in quat_xyzw)
    return msg


def action_to_pose(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pose action, xyz + rot6d (9) or xyz + quaternion xyzw (7) -> (position, unit quaternion xyzw)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 9:
        quat = Rotation.from_matrix(rot6d_to_matrix(values[3:])).as_quat()
    elif len(values) == 7:
        quat = values[3:] / np.linalg.norm(values[3:])
    else:
        raise ValueError(f"a pose command takes 9 action dims (xyz + rot6d) or 7 (xyz + quaternion), got {len(values)}")
    return values[:3], quat


def pose_to_action(msg: Any, width: int) -> np.ndarray:
    """PoseStamped -> the pose action layout of `width` dims (9: xyz + rot6d, 7: xyz + quaternion xyzw)."""
    pose = pose_to_array(msg)
    if width == 7:
        return pose
    return np.concatenate([pose[:3], pose_part(msg, "rot6d")]).astype(np.float32)


def crop_resize(array: np.ndarray, crop: Sequence[int] | None, resize: Sequence[int] | None) -> np.ndarray:
    """Crop (top, left, height, width) then resize to (height, width), bilinear; images or depth maps."""
    if crop is not None:
        top, left, height, width = crop
        if top + height > array.shape[0] or left + width > array.shape[1]:
            raise ValueError(f"crop {list(crop)} does not fit a {array.shape[0]}x{array.shape[1]} image")
        array = array[top: top + height, left: left + width]
    if resize is None or tuple(array.shape[:2]) == tuple(resize):
        return array
    from PIL import Image

    size = (int(resize[1]), int(resize[0]))
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize(size, Image.BILINEAR))
    return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize(size, Image.BILINEAR))


def array_to_compressed_image(types: MessageTypes, array: np.ndarray, stamp: float, frame_id: str = "",
                              image_format: str = "jpeg") -> Any:
    """(H, W, 3) uint8 RGB -> CompressedImage (jpeg or png)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format=image_format.upper())
    msg = types.new("compressed_image")
    msg.header.stamp, msg.header.frame_id = types.time(stamp), frame_id
    msg.format, msg.data = image_format, buffer.getvalue()
    return msg


def array_to_point_cloud(types: MessageTypes, points: np.ndarray, fields: Sequence[str], stamp: float,
                         frame_id: str = "") -> Any:
    """(N, len(fields)) -> an unorganized little-endian float32 PointCloud2."""
    points = np.ascontiguousarray(points, dtype="<f4")
    if points.ndim != 2 or points.shape[1] != len(fields):
        raise ValueError(f"points of shape {points.shape} do not match fields {list(fields)}")
    msg = types.new("point_cloud")
    msg.header.stamp, msg.header.frame_id = types.time(stamp), frame_id
    for i, name in enumerate(fields):
        field = types.new("point_field")
        field.name, field.offset, field.datatype, field.count = name, 4 * i, 7, 1
        msg.fields.append(field)
    msg.height, msg.width, msg.is_bigendian, msg.is_dense = 1, len(points), 0, 1
    msg.point_step = 4 * len(fields)
    msg.row_step = msg.point_step * len(points)
    msg.data = points.tobytes()
    return msg
