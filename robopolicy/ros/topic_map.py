"""The topic map: which ROS topic feeds each store key the policy reads, and where actions go.

A YAML file in the `robot/` config group (see `configs/robot/`), checked on load with errors
that name the file, the key and the fix, and checked against an artifact's inputs and action
size before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from robopolicy.settings import CONFIG_DIR

OBSERVATION_TYPES = ("image", "compressed_image", "joint_state", "pose", "point_cloud", "string")
TEXT_TYPES = ("string",)  # std_msgs/String: an instruction, which has no capture time and holds until replaced
COMMAND_TYPES = ("joint_trajectory", "pose")
POSE_PARTS = ("position", "orientation", "pose", "rot6d")  # rot6d: the orientation as the policy layout
POSE_ACTION_WIDTHS = (7, 9)  # xyz + quaternion xyzw, xyz + rot6d
CONTROL_TOPICS = ("start", "stop", "reset", "estop")  # std_msgs/Empty under control_prefix
CAMERA_TYPES = ("image", "compressed_image", "point_cloud")
OBSERVATION_QOS = ("default", "sensor_data", "latched")  # latched: an instruction published before the bridge ran


@dataclass(frozen=True)
class ObservationTopic:
    """One store key fed by one topic."""

    key: str
    topic: str
    type: str
    sensor: str = ""  # latency group; default "camera" for images and clouds, "operator" for text, "arm" otherwise
    joints: tuple[str, ...] = ()  # joint_state: the names, in the order the policy expects
    field: str = "position"  # joint_state: position | velocity | effort; pose: one of POSE_PARTS
    crop: tuple[int, int, int, int] | None = None  # images: top, left, height, width, before resizing
    resize: tuple[int, int] | None = None  # images: (height, width)
    point_fields: tuple[str, ...] = ("x", "y", "z")
    qos: str = "default"  # ROS 2: default (reliable) | sensor_data (best effort, as camera drivers publish)


@dataclass(frozen=True)
class CommandTopic:
    """Action dims [start, stop) sent on one topic."""

    topic: str
    type: str
    action_dims: tuple[int, int]
    joints: tuple[str, ...] = ()  # joint_trajectory: joint names for the dims, in order
    frame_id: str = ""


@dataclass(frozen=True)
class TopicMap:
    """A robot's topics: observations by store key, commands by action dims, control and diagnostics."""

    name: str
    observations: dict[str, ObservationTopic]
    commands: tuple[CommandTopic, ...]
    control_prefix: str = "/robopolicy"  # <prefix>/start, /stop, /reset, /estop in; <prefix>/state out
    diagnostics: str = "/robopolicy/diagnostics"  # diagnostic_msgs/DiagnosticArray, once a second

    def control(self, name: str) -> str:
        return f"{self.control_prefix.rstrip('/')}/{name}"

    def by_topic(self) -> dict[str, list[ObservationTopic]]:
        """Observation bindings grouped by topic (one message can feed several keys)."""
        topics: dict[str, list[ObservationTopic]] = {}
        for binding in self.observations.values():
            topics.setdefault(binding.topic, []).append(binding)
        return topics

    def sensed_topics(self) -> dict[str, list[ObservationTopic]]:
        """by_topic without an instruction topic: the topics the robot's sensors publish, each with a capture time."""
        return {topic: bindings for topic, bindings in self.by_topic().items() if bindings[0].type not in TEXT_TYPES}

    def check_artifact(self, meta: Mapping[str, Any], where: str) -> None:
        """Every observation the artifact reads has a topic, and the commands cover every action dim once."""
        sources = {spec["source"] for spec in meta["inputs"]
                   if spec["name"] not in ("noise", "prefix", "prefix_mask") and spec.get("type") != "text"}
        missing = sorted(sources - set(self.observations))  # an instruction may come from instruction= instead
        if missing:
            raise ValueError(f"{where}: the policy reads {missing}, which the topic map does not bind; add them "
                             f"under observations: (it binds {sorted(self.observations)})")
        action_dim = meta["output"]["shape"][-1]
        covered = sorted(d for c in self.commands for d in range(*c.action_dims))
        if covered != list(range(action_dim)):
            raise ValueError(f"{where}: commands must cover action dims 0..{action_dim - 1} once each; they cover "
                             f"{covered}. Fix the action_dims of the commands: entries")


def _build(cls: type, values: Any, where: str, **extra: Any) -> Any:
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping of settings, got {values!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown settings {unknown}; known: {sorted(known - set(extra))}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**converted, **extra)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from error


def _observation(key: str, values: Any, where: str) -> ObservationTopic:
    topic = _build(ObservationTopic, values, f"{where}: observations.{key}", key=key)
    if topic.type not in OBSERVATION_TYPES:
        raise ValueError(f"{where}: observations.{key}.type is {topic.type!r}; use one of {OBSERVATION_TYPES}")
    if topic.type == "joint_state" and not topic.joints:
        raise ValueError(f"{where}: observations.{key} reads a JointState: list its joints: [names, in order]")
    if topic.type == "pose" and topic.field not in POSE_PARTS:
        raise ValueError(f"{where}: observations.{key}.field must be one of {list(POSE_PARTS)} for a pose")
    if topic.qos not in OBSERVATION_QOS:
        raise ValueError(f"{where}: observations.{key}.qos is {topic.qos!r}; use one of {OBSERVATION_QOS} "
                         "(sensor_data for topics the robot publishes best effort)")
    if topic.qos == "latched" and topic.type not in TEXT_TYPES:
        raise ValueError(f"{where}: observations.{key}.qos latched is for an instruction topic (type string): a "
                         "sensor's old message must not stand for a new one")
    sensor = topic.sensor or ("camera" if topic.type in CAMERA_TYPES else "operator" if topic.type in TEXT_TYPES
                              else "arm")
    return ObservationTopic(**{**topic.__dict__, "sensor": sensor})


def _command(index: int, values: Any, where: str) -> CommandTopic:
    command = _build(CommandTopic, values, f"{where}: commands[{index}]")
    if command.type not in COMMAND_TYPES:
        raise ValueError(f"{where}: commands[{index}].type is {command.type!r}; use one of {COMMAND_TYPES}")
    start, stop = command.action_dims
    if command.type == "joint_trajectory" and len(command.joints) != stop - start:
        raise ValueError(f"{where}: commands[{index}] sends action dims [{start}, {stop}) as a JointTrajectory: "
                         f"give {stop - start} joint names, got {list(command.joints)}")
    if command.type == "pose" and stop - start not in POSE_ACTION_WIDTHS:
        raise ValueError(f"{where}: commands[{index}] sends action dims [{start}, {stop}) as a pose: a pose takes 9 "
                         "dims (xyz + rot6d) or 7 (xyz + quaternion xyzw)")
    return command


def topic_map_path(name_or_path: str | Path) -> Path:
    """The file of a topic map given by config name (configs/robot/<name>.yaml) or by path."""
    path = Path(name_or_path)
    return CONFIG_DIR / "robot" / f"{name_or_path}.yaml" if not path.suffix else path


def load_topic_map(name_or_path: str | Path) -> TopicMap:
    """A topic map by config name (configs/robot/<name>.yaml) or by path."""
    path = topic_map_path(name_or_path)
    if not path.is_file():
        shipped = sorted(p.stem for p in (CONFIG_DIR / "robot").glob("*.yaml"))
        raise FileNotFoundError(f"topic map {path} not found; give a YAML path or one of {shipped}")
    raw = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    for required in ("observations", "commands"):
        if required not in raw:
            raise ValueError(f"{where}: no {required}: section (see configs/robot/ for an example)")
    observations = {key: _observation(key, values, where) for key, values in raw["observations"].items()}
    commands = tuple(_command(i, values, where) for i, values in enumerate(raw["commands"]))
    extra = {k: raw[k] for k in ("control_prefix", "diagnostics") if k in raw}
    unknown = sorted(set(raw) - {"name", "observations", "commands", *extra})
    if unknown:
        raise ValueError(f"{where}: unknown sections {unknown}; known: name, observations, commands, control_prefix, "
                         "diagnostics")
    topic_map = TopicMap(name=raw.get("name", path.stem), observations=observations, commands=commands, **extra)
    for topic, bindings in topic_map.by_topic().items():
        for setting, plural in (("type", "types"), ("qos", "qos profiles")):
            if len({getattr(b, setting) for b in bindings}) > 1:
                raise ValueError(f"{where}: topic {topic} is bound with several {plural} "
                                 f"({ {b.key: getattr(b, setting) for b in bindings} }); give its keys one {setting}")
    return topic_map

