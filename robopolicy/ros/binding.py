"""Topic-map bindings <-> messages: one topic's message to the store values it feeds, and back.

The bridge reads (`read_topic`); the simulated driver builds (`topic_message`) from the same
topic map, so both ends of the chain agree on fields, joint order and units by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robopolicy.ros.convert import (
    MessageTypes,
    action_to_pose,
    array_to_compressed_image,
    array_to_image,
    array_to_point_cloud,
    compressed_image_to_array,
    crop_resize,
    image_to_array,
    joint_state,
    joint_state_to_array,
    point_cloud_to_array,
    pose_part,
    pose_stamped,
)
from robopolicy.ros.topic_map import ObservationTopic


def read_binding(binding: ObservationTopic, msg: Any) -> np.ndarray | str:
    """The value one binding takes from a message of its topic, in the store's layout (an instruction's text)."""
    if binding.type == "string":
        return str(msg.data)
    if binding.type == "image":
        return crop_resize(image_to_array(msg), binding.crop, binding.resize)
    if binding.type == "compressed_image":
        return crop_resize(compressed_image_to_array(msg), binding.crop, binding.resize)
    if binding.type == "joint_state":
        return joint_state_to_array(msg, binding.joints, binding.field)
    if binding.type == "pose":
        return pose_part(msg, binding.field)
    return point_cloud_to_array(msg, binding.point_fields)


def read_topic(bindings: Sequence[ObservationTopic], msg: Any) -> dict[str, dict[str, np.ndarray]]:
    """{sensor: {store key: value}} for every binding of one topic."""
    by_sensor: dict[str, dict[str, np.ndarray]] = {}
    for binding in bindings:
        by_sensor.setdefault(binding.sensor, {})[binding.key] = read_binding(binding, msg)
    return by_sensor


def _pose_from_parts(parts: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(position, quaternion xyzw) from the pose parts a topic's keys hold."""
    if "pose" in parts:
        return parts["pose"][:3], parts["pose"][3:]
    if "position" not in parts or not ({"orientation", "rot6d"} & set(parts)):
        raise ValueError(f"a pose topic needs a position and an orientation (or rot6d) key; it has {sorted(parts)}")
    if "orientation" in parts:
        return parts["position"], parts["orientation"]
    return action_to_pose(np.concatenate([parts["position"], parts["rot6d"]]))


def topic_message(types: MessageTypes, bindings: Sequence[ObservationTopic], values: Mapping[str, np.ndarray],
                  stamp: float) -> Any:
    """The message a driver publishes on one topic from the store values its bindings name."""
    kind = bindings[0].type
    if kind == "joint_state":
        names = [name for b in bindings for name in b.joints]
        return joint_state(types, names, np.concatenate([values[b.key] for b in bindings]), stamp)
    if kind == "pose":
        return pose_stamped(types, *_pose_from_parts({b.field: values[b.key] for b in bindings}), stamp)
    (binding,) = bindings
    if kind == "image":
        return array_to_image(types, values[binding.key], stamp)
    if kind == "compressed_image":
        return array_to_compressed_image(types, values[binding.key], stamp)
    return array_to_point_cloud(types, values[binding.key], binding.point_fields, stamp)
