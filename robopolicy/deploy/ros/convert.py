"""ROS messages <-> numpy, by field names only, so ROS 1 (rospy) and ROS 2 (rclpy) messages both work.

Readers take any object with the standard fields of sensor_msgs / geometry_msgs; builders take
the message classes to fill (`MessageTypes`), so this module imports no ROS library. Stamps are
seconds as float: ROS 1 times have `secs`/`nsecs`, ROS 2 times `sec`/`nanosec`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# sensor_msgs/Image encodings -> (dtype, channels); rgb/bgr order is handled by the reader
ENCODINGS = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
             "mono8": (np.uint8, 1), "16UC1": (np.uint16, 1), "32FC1": (np.float32, 1)}
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
    """The classes builders fill, from the transport: ROS 1 or ROS 2 messages and their time types."""

    image: type
    joint_state: type
    joint_trajectory: type
    joint_trajectory_point: type
    pose_stamped: type
    time: Any  # seconds -> a header stamp
    duration: Any  # seconds -> a Duration


def array_to_image(types: MessageTypes, array: np.ndarray, stamp: float, frame_id: str = "") -> Any:
    """(H, W, 3) uint8 -> rgb8 Image, or (H, W) float32 metres -> 32FC1 Image."""
    msg = types.image()
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
    msg = types.joint_state()
    msg.header.stamp = types.time(stamp)
    msg.name, msg.position = list(names), [float(v) for v in positions]
    return msg


def joint_trajectory(types: MessageTypes, names: Sequence[str], times: np.ndarray, positions: np.ndarray) -> Any:
    """Timed points (absolute seconds) -> JointTrajectory stamped at the first time, times from there."""
    msg = types.joint_trajectory()
    start = float(times[0]) if len(times) else 0.0
    msg.header.stamp, msg.joint_names = types.time(start), list(names)
    for time, values in zip(times, positions, strict=True):
        point = types.joint_trajectory_point()
        point.positions = [float(v) for v in values]
        point.time_from_start = types.duration(float(time) - start)
        msg.points.append(point)
    return msg


def trajectory_to_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """JointTrajectory -> (absolute times (N,), positions (N, joints))."""
    start = stamp_seconds(msg.header.stamp)
    times = np.array([start + stamp_seconds(p.time_from_start) for p in msg.points])
    return times, np.array([p.positions for p in msg.points], dtype=np.float64).reshape(len(times), -1)
