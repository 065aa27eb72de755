"""Relative trajectories: the frame conversions round-trip, are invariant to where the arm is, and are declared in
shape_meta with errors that name the key to set."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from robopolicy.datasets.relative import (
    action_to_absolute,
    action_to_relative,
    matrix_to_rot6d,
    obs_to_relative,
    rot6d_to_matrix,
)
from robopolicy.datasets.shape_meta import parse_shape_meta

LIFT_META = {
    "obs": {"eef_pos": {"shape": [3], "source": "robot0_eef_pos"}, "eef_rot6d": {"shape": [6]},
            "object": {"shape": [10]}},
    "action": {"shape": [10], "frame": "relative"},
}


def poses(rng: np.random.Generator, batch: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, 3) positions and (B, T, 6) rotations, float64."""
    position = torch.from_numpy(rng.normal(0.0, 0.5, (batch, steps, 3)))
    matrix = Rotation.random(batch * steps, random_state=rng).as_matrix().reshape(batch, steps, 3, 3)
    return position, matrix_to_rot6d(torch.from_numpy(matrix))


def lift_batch(seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    rng = np.random.default_rng(seed)
    position, rotation = poses(rng, 4, 2)
    obs = {"eef_pos": position, "eef_rot6d": rotation, "object": torch.from_numpy(rng.normal(size=(4, 2, 10)))}
    action_position, action_rotation = poses(rng, 4, 16)
    gripper = torch.from_numpy(rng.uniform(-1, 1, (4, 16, 1)))
    return obs, torch.cat([action_position, action_rotation, gripper], dim=-1)


def test_the_default_pose_is_the_end_effector_keys_and_the_first_nine_action_dims():
    frame = parse_shape_meta(LIFT_META).action_frame
    assert (frame.position, frame.rotation, frame.action_position, frame.action_rotation) == (
        "eef_pos", "eef_rot6d", 0, 3)
    assert parse_shape_meta(parse_shape_meta(LIFT_META).to_dict()).action_frame == frame  # as checkpoints keep it


def test_actions_round_trip_to_1e_6_and_the_gripper_is_untouched():
    frame = parse_shape_meta(LIFT_META).action_frame
    obs, action = lift_batch()
    relative = action_to_relative(frame, action, obs)
    assert torch.equal(relative[..., 9], action[..., 9])
    assert (relative[..., :9] - action[..., :9]).abs().max() > 0.1  # it did convert
    back = action_to_absolute(frame, relative, obs)
    assert (back - action).abs().max() < 1e-6


def test_the_latest_observed_pose_becomes_the_identity_and_history_is_relative_to_it():
    frame = parse_shape_meta(LIFT_META).action_frame
    obs, _ = lift_batch(1)
    relative = obs_to_relative(frame, obs)
    assert relative["eef_pos"][:, -1].abs().max() < 1e-12
    assert (relative["eef_rot6d"][:, -1] - torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=torch.float64)).abs().max() < 1e-12
    assert torch.equal(relative["object"], obs["object"])
    distance = (obs["eef_pos"][:, 0] - obs["eef_pos"][:, 1]).norm(dim=-1)  # a rigid change keeps distances
    assert torch.allclose(relative["eef_pos"][:, 0].norm(dim=-1), distance)


def test_relative_values_do_not_change_when_the_whole_scene_moves_rigidly():
    """UMI's point: the same motion started elsewhere is the same relative trajectory."""
    frame = parse_shape_meta(LIFT_META).action_frame
    obs, action = lift_batch(2)
    turn = torch.from_numpy(Rotation.from_euler("zyx", [0.7, -0.3, 1.1]).as_matrix())
    shift = torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64)

    def moved_pose(position: torch.Tensor, rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return position @ turn.T + shift, matrix_to_rot6d(turn @ rot6d_to_matrix(rotation))

    moved_obs = dict(obs)
    moved_obs["eef_pos"], moved_obs["eef_rot6d"] = moved_pose(obs["eef_pos"], obs["eef_rot6d"])
    moved_action = action.clone()
    moved_action[..., :3], moved_action[..., 3:9] = moved_pose(action[..., :3], action[..., 3:9])
    for key in ("eef_pos", "eef_rot6d"):
        assert (obs_to_relative(frame, moved_obs)[key] - obs_to_relative(frame, obs)[key]).abs().max() < 1e-9
    difference = action_to_relative(frame, moved_action, moved_obs) - action_to_relative(frame, action, obs)
    assert difference.abs().max() < 1e-9


def test_position_only_frames_convert_positions_and_nothing_else():
    meta = {"obs": {"agent_pos": {"shape": [3]}},
            "action": {"shape": [4], "frame": "relative", "pose": {"position": "agent_pos"}}}
    frame = parse_shape_meta(meta).action_frame
    assert (frame.rotation, frame.action_rotation) == (None, None)
    obs = {"agent_pos": torch.tensor([[[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]]], dtype=torch.float64)}
    action = torch.tensor([[[3.0, 3.0, 3.0, 0.5]]], dtype=torch.float64)
    assert action_to_relative(frame, action, obs).tolist() == [[[1.0, 1.0, 1.0, 0.5]]]


@pytest.mark.parametrize("action, message", [
    ({"shape": [10], "frame": "umi"}, "action.frame must be one of"),
    ({"shape": [10], "pose": {"position": "eef_pos"}}, "pose is for action.frame: relative"),
    ({"shape": [10], "frame": "relative", "pose": {"position": "object"}},
     "pose.position must name a low_dim obs key of shape [3]"),
    ({"shape": [4], "frame": "relative"}, "action.pose.action_rotation (3) leaves no 6 action dimensions"),
    ({"shape": [10], "frame": "relative", "pose": {"position": "eef_pos", "rotation": "eef_rot6d", "axis": 1}},
     "unknown entries ['axis']"),
])
def test_bad_frames_are_refused_naming_the_key(action, message):
    with pytest.raises(ValueError) as error:
        parse_shape_meta({**LIFT_META, "action": action})
    assert message in str(error.value)


def test_a_store_without_an_end_effector_key_asks_for_the_pose():
    meta = {"obs": {"state": {"shape": [3]}}, "action": {"shape": [3], "frame": "relative"}}
    with pytest.raises(ValueError, match="set action.pose"):
        parse_shape_meta(meta)
