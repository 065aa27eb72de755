"""The ROS 2 messages the bridge, the driver and the recorder use, as Cyclone DDS IDL structs.

ROS 2 puts each `pkg/msg/Type` on the wire as the DDS type `pkg::msg::dds_::Type_`, final
extensibility, plain CDR (XCDR1); the structs below carry those names and the fields of the
Humble / Jazzy message definitions in their order, so their bytes are what ROS 2 nodes send
(tests/ros/test_ros2_wire.py checks them against `rosbags`' serializer). Every field has a
default, so converters build messages field by field as they do with ROS 1's classes.
`uint8[] data` is declared sequence<uint8> (what DDS type matching sees) and travels as one
`bytes` object (`_octets_as_bytes`): the same CDR, 30x faster for a 640x480 image than a list of
ints. No `from __future__ import annotations` here: cyclonedds reads the field types at run time.
"""

import math
from dataclasses import dataclass, field

import cyclonedds.idl.annotations as annotate
from cyclonedds.idl import IdlStruct
from cyclonedds.idl._machinery import BytesMachine
from cyclonedds.idl.types import byte, float64, int32, sequence, uint8, uint32

from robopolicy.ros.convert import KINDS, MessageTypes


@dataclass
@annotate.final
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
@annotate.final
class Duration(IdlStruct, typename="builtin_interfaces::msg::dds_::Duration_"):
    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
@annotate.final
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
@annotate.final
class Empty(IdlStruct, typename="std_msgs::msg::dds_::Empty_"):
    structure_needs_at_least_one_member: uint8 = 0  # what rosidl adds to an empty message


@dataclass
@annotate.final
class String(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    data: str = ""


@dataclass
@annotate.final
class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header = field(default_factory=Header)
    height: uint32 = 0
    width: uint32 = 0
    encoding: str = ""
    is_bigendian: uint8 = 0
    step: uint32 = 0
    data: sequence[uint8] = b""


@dataclass
@annotate.final
class CompressedImage(IdlStruct, typename="sensor_msgs::msg::dds_::CompressedImage_"):
    header: Header = field(default_factory=Header)
    format: str = ""
    data: sequence[uint8] = b""


@dataclass
@annotate.final
class JointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header = field(default_factory=Header)
    name: sequence[str] = field(default_factory=list)
    position: sequence[float64] = field(default_factory=list)
    velocity: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)


@dataclass
@annotate.final
class PointField(IdlStruct, typename="sensor_msgs::msg::dds_::PointField_"):
    name: str = ""
    offset: uint32 = 0
    datatype: uint8 = 0
    count: uint32 = 0


@dataclass
@annotate.final
class PointCloud2(IdlStruct, typename="sensor_msgs::msg::dds_::PointCloud2_"):
    header: Header = field(default_factory=Header)
    height: uint32 = 0
    width: uint32 = 0
    fields: sequence[PointField] = field(default_factory=list)
    is_bigendian: bool = False
    point_step: uint32 = 0
    row_step: uint32 = 0
    data: sequence[uint8] = b""
    is_dense: bool = False


@dataclass
@annotate.final
class Point(IdlStruct, typename="geometry_msgs::msg::dds_::Point_"):
    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@dataclass
@annotate.final
class Quaternion(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0
    w: float64 = 1.0  # ROS 2's default: the identity rotation


@dataclass
@annotate.final
class Pose(IdlStruct, typename="geometry_msgs::msg::dds_::Pose_"):
    position: Point = field(default_factory=Point)
    orientation: Quaternion = field(default_factory=Quaternion)


@dataclass
@annotate.final
class PoseStamped(IdlStruct, typename="geometry_msgs::msg::dds_::PoseStamped_"):
    header: Header = field(default_factory=Header)
    pose: Pose = field(default_factory=Pose)


@dataclass
@annotate.final
class JointTrajectoryPoint(IdlStruct, typename="trajectory_msgs::msg::dds_::JointTrajectoryPoint_"):
    positions: sequence[float64] = field(default_factory=list)
    velocities: sequence[float64] = field(default_factory=list)
    accelerations: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)
    time_from_start: Duration = field(default_factory=Duration)


@dataclass
@annotate.final
class JointTrajectory(IdlStruct, typename="trajectory_msgs::msg::dds_::JointTrajectory_"):
    header: Header = field(default_factory=Header)
    joint_names: sequence[str] = field(default_factory=list)
    points: sequence[JointTrajectoryPoint] = field(default_factory=list)


@dataclass
@annotate.final
class KeyValue(IdlStruct, typename="diagnostic_msgs::msg::dds_::KeyValue_"):
    key: str = ""
    value: str = ""


@dataclass
@annotate.final
class DiagnosticStatus(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticStatus_"):
    level: byte = 0
    name: str = ""
    message: str = ""
    hardware_id: str = ""
    values: sequence[KeyValue] = field(default_factory=list)


@dataclass
@annotate.final
class DiagnosticArray(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticArray_"):
    header: Header = field(default_factory=Header)
    status: sequence[DiagnosticStatus] = field(default_factory=list)


def _octets_as_bytes(cls: type[IdlStruct]) -> type[IdlStruct]:
    """Serialize `cls.data` (sequence<uint8>) from and to `bytes` in one copy. cyclonedds' own machine for it packs
    and unpacks one Python int per byte (60 ms per 640x480 image); its bytes machine writes the same CDR (4-aligned
    uint32 length, then the octets) but is not usable in a type declaration, so it replaces the built one."""
    idl = cls.__idl__
    idl.populate()
    for machine in (idl.v1_machine, idl.v2_machine):
        machine.members_machines["data"] = BytesMachine()
    return cls


for _with_octets in (Image, CompressedImage, PointCloud2):
    _octets_as_bytes(_with_octets)

CLASSES: dict[str, type[IdlStruct]] = {
    "image": Image, "compressed_image": CompressedImage, "joint_state": JointState, "point_cloud": PointCloud2,
    "point_field": PointField, "pose": PoseStamped, "joint_trajectory": JointTrajectory,
    "joint_trajectory_point": JointTrajectoryPoint, "empty": Empty, "string": String,
    "diagnostics": DiagnosticArray, "diagnostic_status": DiagnosticStatus, "key_value": KeyValue}


def _split_seconds(seconds: float) -> tuple[int, int]:
    """Seconds -> (whole seconds, nanoseconds 0..1e9-1), rounded to the nanosecond."""
    whole = math.floor(seconds)
    nanoseconds = round((seconds - whole) * 1e9)
    if nanoseconds >= 1_000_000_000:
        whole, nanoseconds = whole + 1, nanoseconds - 1_000_000_000
    return whole, nanoseconds


def ros2_time(seconds: float) -> Time:
    """Seconds since the epoch -> builtin_interfaces/Time."""
    return Time(*_split_seconds(seconds))


def ros2_duration(seconds: float) -> Duration:
    """Seconds (>= 0 here: trajectory points from the first one) -> builtin_interfaces/Duration."""
    return Duration(*_split_seconds(seconds))


def ros2_types() -> MessageTypes:
    """MessageTypes for ROS 2: the structs above, Time and Duration."""
    return MessageTypes(classes=CLASSES, time=ros2_time, duration=ros2_duration)


def type_name(kind: str) -> str:
    """The ROS 2 name of a kind's message, e.g. sensor_msgs/msg/JointState (the name bags store)."""
    package, message = KINDS[kind].split("/")
    return f"{package}/msg/{message}"
