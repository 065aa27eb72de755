"""Topic maps load from YAML with errors that name the file, key and fix, and check an artifact's needs."""

from __future__ import annotations

import pytest
import yaml

from robopolicy.ros.topic_map import load_topic_map
from robopolicy.settings import CONFIG_DIR

LIFT_META = {"inputs": [{"name": "eef_pos", "source": "robot0_eef_pos"},
                        {"name": "gripper", "source": "robot0_gripper_qpos"},
                        {"name": "noise", "source": None}],
             "output": {"shape": [16, 10]}}


def test_the_shipped_sim_lift_map_loads_with_sensors_defaulted_by_type():
    topics = load_topic_map("sim_lift")
    assert topics.observations["robot0_eef_pos"].sensor == "arm"
    assert [b.key for b in topics.by_topic()["/arm/eef_pose"]] == ["robot0_eef_pos", "robot0_eef_rot6d"]
    assert topics.observations["object"].sensor == "camera"  # set explicitly: a perception node
    assert topics.observations["robot0_gripper_qpos"].joints == ("finger_left", "finger_right")
    assert [c.action_dims for c in topics.commands] == [(0, 9), (9, 10)]
    topics.check_artifact(LIFT_META, "lift artifact")


def test_the_shipped_image_map_binds_both_cameras_as_camera_sensors():
    topics = load_topic_map("sim_lift_image")
    cameras = {key for key, binding in topics.observations.items() if binding.sensor == "camera"}
    assert cameras == {"agentview_image", "robot0_eye_in_hand_image"}
    meta = {"inputs": [{"name": "front", "source": "agentview_image"}, {"name": "wrist",
                                                                         "source": "robot0_eye_in_hand_image"},
                       {"name": "eef_pos", "source": "robot0_eef_pos"}], "output": {"shape": [16, 10]}}
    topics.check_artifact(meta, "lift image artifact")


def write(tmp_path, content):
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def test_bad_maps_are_refused_naming_the_file_the_key_and_the_fix(tmp_path):
    good = yaml.safe_load((CONFIG_DIR / "robot" / "sim_lift.yaml").read_text())
    cases = [
        ({**good, "observations": {"q": {"topic": "/j", "type": "joint_state"}}}, "observations.q reads a JointState"),
        ({**good, "observations": {"q": {"topic": "/j", "type": "laser"}}}, "observations.q.type is 'laser'"),
        ({**good, "observations": {"q": {"topic": "/p", "type": "pose", "field": "twist"}}}, "field must be one of"),
        ({**good, "observations": {"q": {"topic": "/p", "type": "pose", "rate": 5}}}, "unknown settings \\['rate'\\]"),
        ({**good, "commands": [{"topic": "/t", "type": "joint_trajectory", "action_dims": [0, 2], "joints": ["a"]}]},
         "give 2 joint names"),
        ({**good, "commands": [{"topic": "/t", "type": "pose", "action_dims": [0, 3]}]}, "a pose takes 9 dims"),
        ({**good, "observations": {"a": {"topic": "/x", "type": "pose"},
                                   "b": {"topic": "/x", "type": "joint_state", "joints": ["j"]}}},
         "topic /x is bound with several types"),
        ({**good, "observations": {"q": {"topic": "/p", "type": "pose", "qos": "reliable"}}},
         "observations.q.qos is 'reliable'; use one of \\('default', 'sensor_data', 'latched'\\)"),
        ({**good, "observations": {"q": {"topic": "/p", "type": "pose", "qos": "latched"}}},
         "observations.q.qos latched is for an instruction topic \\(type string\\)"),
        ({**good, "observations": {"a": {"topic": "/p", "type": "pose", "field": "position"},
                                   "b": {"topic": "/p", "type": "pose", "field": "rot6d", "qos": "sensor_data"}}},
         "topic /p is bound with several qos profiles \\({'a': 'default', 'b': 'sensor_data'}\\); "
         "give its keys one qos"),
        ({"observations": good["observations"]}, "no commands: section"),
    ]
    for content, message in cases:
        path = write(tmp_path, content)
        with pytest.raises(ValueError, match=message) as error:
            load_topic_map(path)
        assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="sim_lift"):
        load_topic_map("no_such_robot")


def test_an_artifact_needing_unbound_keys_or_uncovered_dims_is_refused():
    topics = load_topic_map("sim_lift")
    meta = {**LIFT_META, "inputs": [*LIFT_META["inputs"], {"name": "wrist", "source": "robot0_eye_in_hand_image"}]}
    with pytest.raises(ValueError, match="robot0_eye_in_hand_image"):
        topics.check_artifact(meta, "artifact")
    with pytest.raises(ValueError, match="cover action dims 0..6 once each"):
        topics.check_artifact({**LIFT_META, "output": {"shape": [16, 7]}}, "artifact")
