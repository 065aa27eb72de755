"""robosuite task envs: observations against the task configs, upright images and depth, point
clouds in the world frame, absolute actions, per-seed placement, and the scripted experts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.needs import require

require("sim")
pytestmark = pytest.mark.sim

import mujoco

import robopolicy
from robopolicy.datasets.shape_meta import parse_shape_meta
from robopolicy.envs import registry
from robopolicy.envs.robosuite_tasks import camera_intrinsics, make_env, make_expert
from robopolicy.geometry import (
    matrix_to_rot6d,
    quat_xyzw_to_matrix,
    rot6d_to_matrix,
)

TASK_DIR = Path(robopolicy.__file__).parent / "configs" / "task"
LIFT_CONFIGS = ("lift_lowdim", "lift_image", "lift_pointcloud")


@pytest.fixture(scope="module")
def envs():
    """One Lift env per (obs_type, controller), built on first use and shared by the module."""
    cache = {}

    def get(obs_type: str = "lowdim", controller: str = "absolute"):
        if (obs_type, controller) not in cache:
            cache[obs_type, controller] = make_env("Lift", obs_type=obs_type, controller=controller)
        return cache[obs_type, controller]

    yield get
    for env in cache.values():
        env.close()


def task_config(name: str) -> dict:
    return yaml.safe_load((TASK_DIR / f"{name}.yaml").read_text())


def hold_action(obs: dict[str, np.ndarray], gripper: float = -1.0) -> np.ndarray:
    """The absolute action that targets the pose the observation reports."""
    rotation = quat_xyzw_to_matrix(obs["robot0_eef_quat"])
    return np.concatenate([obs["robot0_eef_pos"], matrix_to_rot6d(rotation), [gripper]]).astype(np.float32)


def cube_pixel(env, camera: str) -> tuple[tuple[int, int], float]:
    """(row, col) of the cube centre in the upright image of `camera`, and its depth along the axis."""
    from robosuite.utils.camera_utils import get_camera_extrinsic_matrix

    cube, _ = env.unwrapped.object_pose()
    world_to_camera = np.linalg.inv(get_camera_extrinsic_matrix(env.unwrapped.sim, camera))
    in_camera = world_to_camera[:3, :3] @ cube + world_to_camera[:3, 3]
    u, v, w = camera_intrinsics(env.unwrapped.sim, camera, env.unwrapped.image_size) @ in_camera
    return (int(round(v / w)), int(round(u / w))), float(in_camera[2])


def test_unknown_options_name_the_allowed_values():
    with pytest.raises(ValueError, match=r"'Lyft'.*did you mean 'Lift'.*PickPlaceCan.*NutAssemblySquare"):
        make_env(task="Lyft")
    with pytest.raises(ValueError, match=r"obs_type 'rgb'.*'lowdim', 'image', 'depth', 'point_cloud'"):
        make_env(obs_type="rgb")
    with pytest.raises(ValueError, match=r"controller 'relative'.*'absolute', 'delta'"):
        make_env(controller="relative")
    with pytest.raises(ValueError, match="n_points"):
        make_env(n_points=0)


@pytest.mark.parametrize("config_name", LIFT_CONFIGS)
def test_observations_conform_to_the_task_config_and_space(config_name):
    config = task_config(config_name)
    meta = parse_shape_meta(config["shape_meta"])
    env = registry.make_env(config["env"])
    try:
        obs, _ = env.reset(seed=0)
        obs, *_ = env.step(hold_action(obs))
        assert env.observation_space.contains(obs), {k: (v.shape, v.dtype) for k, v in obs.items()}
        assert env.action_space.shape == meta.action_shape
        for key, spec in meta.obs.items():
            value = obs[spec.source]
            shape = (value.shape[2], *value.shape[:2]) if spec.type == "rgb" else value.shape
            assert shape == spec.shape, key
            assert value.dtype == (np.uint8 if spec.type == "rgb" else np.float32), key
    finally:
        env.close()


def test_object_vector_is_pose_then_offset_from_the_grip_site(envs):
    env = envs()
    obs, _ = env.reset(seed=5)
    obs, _, _, _, _ = env.step(hold_action(obs))
    raw = env.suite_env.observation_spec()
    np.testing.assert_allclose(obs["object"][:3], raw["cube_pos"], atol=1e-6)
    np.testing.assert_allclose(obs["object"][3:7], raw["cube_quat"], atol=1e-6)
    np.testing.assert_allclose(obs["object"][7:], raw["gripper_to_cube_pos"], atol=1e-6)


@pytest.mark.parametrize("camera", ["agentview", "robot0_eye_in_hand"])
def test_images_and_depth_are_upright_and_metric(envs, camera):
    env = envs("depth")
    obs, _ = env.reset(seed=1)
    image, depth = obs[f"{camera}_image"], obs[f"{camera}_depth"]
    (row, col), cube_depth = cube_pixel(env, camera)
    assert 0 <= row < image.shape[0] and 0 <= col < image.shape[1]
    red, green, blue = image[row, col].astype(int)
    assert red > 1.8 * green and red > 1.8 * blue, f"cube pixel {(row, col)} is {image[row, col]}, not red"
    # The cube's near face is up to its half-diagonal (~3 cm) in front of its centre.
    assert cube_depth - 0.04 < depth[row, col] < cube_depth
    flipped = env.sim.render(camera_name=camera, width=84, height=84)
    red, green, _ = flipped[row, col].astype(int)
    assert not red > 1.8 * green, "robosuite's raw frame should be upside down at that pixel"


def test_agentview_depth_has_the_table_below_the_background(envs):
    depth = envs("depth").reset(seed=2)[0]["agentview_depth"]
    assert np.median(depth[-10:]) < 1.0 < np.median(depth[:10])


def test_point_cloud_lies_in_the_workspace_and_covers_the_cube(envs):
    env = envs("point_cloud")
    obs, _ = env.reset(seed=3)
    cloud = obs["point_cloud"]
    low, high = env.workspace
    assert cloud.shape == (512, 6) and cloud.dtype == np.float32
    assert (cloud[:, :3] >= low).all() and (cloud[:, :3] <= high).all()
    assert (cloud[:, 3:] >= 0).all() and (cloud[:, 3:] <= 1).all()
    cube, _ = env.object_pose()
    near = np.linalg.norm(cloud[:, :3] - cube, axis=1) < 0.035  # within the cube's half-diagonal
    assert near.sum() >= 3
    red = (cloud[:, 3] > 0.3) & (cloud[:, 3] > 1.8 * cloud[:, 4])
    assert np.linalg.norm(cloud[red, :3].mean(axis=0) - cube) < 0.03
    assert near.sum() >= 40, "with the table top cropped away, the cube should get a good share of the points"


def test_an_env_still_renders_after_another_in_the_process_closes(envs):
    """Closing an env frees its EGL context and left none current: the next env's depth came back outside [0, 1]."""
    env = envs("depth")
    before = env.reset(seed=5)[0]["agentview_depth"]
    make_env("Lift").close()
    np.testing.assert_array_equal(env.reset(seed=5)[0]["agentview_depth"], before)


def test_point_cloud_renders_without_reflections_and_its_depth_is_unchanged(envs):
    env = envs("point_cloud")
    env.reset(seed=4)
    flags = env.sim._render_context_offscreen.scn.flags
    camera = env.task_spec.cloud_cameras[0]
    flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 1
    _, reflected_depth = env._render_camera(camera, env.image_size, depth=True)
    env.step(env.hold_action(env.reset(seed=4)[0], None))  # an observation switches reflections off
    assert flags[mujoco.mjtRndFlag.mjRND_REFLECTION] == 0
    env.reset(seed=4)
    _, depth = env._render_camera(camera, env.image_size, depth=True)
    np.testing.assert_array_equal(depth, reflected_depth)


def test_absolute_action_at_the_current_pose_holds_still_and_others_move(envs):
    env = envs()
    obs, _ = env.reset(seed=4)
    start, rotation = obs["robot0_eef_pos"].copy(), quat_xyzw_to_matrix(obs["robot0_eef_quat"])
    action = hold_action(obs)
    for _ in range(20):
        obs, *_ = env.step(action)
    assert np.linalg.norm(obs["robot0_eef_pos"] - start) < 1e-3
    turn = rotation.T @ quat_xyzw_to_matrix(obs["robot0_eef_quat"])
    assert np.arccos(np.clip((np.trace(turn) - 1) / 2, -1, 1)) < np.deg2rad(0.5)
    action[:3] += [0.05, 0.0, -0.05]
    for _ in range(20):
        obs, *_ = env.step(action)
    np.testing.assert_allclose(obs["robot0_eef_pos"], action[:3], atol=0.01)


def test_delta_controller_takes_robosuites_seven_numbers(envs):
    env = envs(controller="delta")
    obs, _ = env.reset(seed=0)
    assert env.action_space.shape == (7,)
    start = obs["robot0_eef_pos"].copy()
    for _ in range(10):
        obs, *_ = env.step(np.array([0, 0, 0.5, 0, 0, 0, -1], np.float32))
    assert obs["robot0_eef_pos"][2] > start[2] + 0.05
    with pytest.raises(ValueError, match=r"expected \(7,\)"):
        env.step(np.zeros(10))


def test_same_seed_same_placement_across_instances(envs):
    env = envs()
    first = env.reset(seed=7)[0]["object"][:7]
    other = env.reset(seed=8)[0]["object"][:7]
    again = env.reset(seed=7)[0]["object"][:7]
    np.testing.assert_array_equal(first, again)
    assert np.abs(first[:2] - other[:2]).max() > 1e-3
    fresh = make_env("Lift")
    try:
        np.testing.assert_array_equal(fresh.reset(seed=7)[0]["object"][:7], first)
    finally:
        fresh.close()


def test_info_render_and_horizon():
    env = make_env("Lift", max_steps=3, render_size=64, control_freq=10)
    try:
        obs, info = env.reset(seed=0)
        assert info == {"is_success": False, "score": 0.0}
        assert env.metadata["render_fps"] == 10 and env.max_episode_steps == 3
        truncated = [env.step(hold_action(obs))[3] for _ in range(3)]
        assert truncated == [False, False, True]
        frame = env.render()
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    finally:
        env.close()
    can = make_env("PickPlaceCan", control_freq=10)
    can.close()
    assert can.max_episode_steps == 200, "400 steps at 20 Hz are 200 at 10 Hz"


def test_rot6d_round_trips_and_orthonormalizes():
    from scipy.spatial.transform import Rotation

    rotations = Rotation.random(16, random_state=0).as_matrix()
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(rotations)), rotations, atol=1e-12)
    noisy = rot6d_to_matrix(matrix_to_rot6d(rotations) * 3.0 + 0.05)
    np.testing.assert_allclose(noisy @ np.swapaxes(noisy, -1, -2), np.broadcast_to(np.eye(3), noisy.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(noisy), 1.0)


def test_square_runs_on_the_pinned_mujoco():
    env = make_env("NutAssemblySquare")
    try:
        obs, info = env.reset(seed=0)
        placed = obs["object"][2]
        hold = np.concatenate([obs["robot0_eef_pos"] + [0.0, 0.0, 0.05], obs["robot0_eef_rot6d"], [-1.0]])
        heights = []
        for _ in range(20):
            obs, _, _, _, info = env.step(hold)
            heights.append(obs["object"][2])
        assert env.observation_space.contains(obs) and not info["is_success"]
        # placed above the table, the nut drops onto it and then rests there
        assert heights[-1] < placed - 0.03 and np.ptp(heights[-5:]) < 1e-3
    finally:
        env.close()


def run_expert(env, seed: int) -> bool:
    """One expert episode; True when the task's own check passes within the horizon."""
    expert = make_expert(env, np.random.default_rng(seed))
    obs, info = env.reset(seed=seed)
    expert.reset(obs, info)
    for _ in range(env.max_episode_steps):
        action = expert.act(obs, info)
        assert env.action_space.shape == action.shape
        obs, _, _, _, info = env.step(action)
        if info["is_success"]:
            return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("controller", ["absolute", "delta"])
def test_lift_expert_succeeds(envs, controller):
    env = envs(controller=controller)
    assert all(run_expert(env, seed) for seed in range(5))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["PickPlaceCan", "NutAssemblySquare"])
def test_pick_place_and_nut_assembly_experts_succeed(task):
    env = make_env(task)
    try:
        assert all(run_expert(env, seed) for seed in range(3))
    finally:
        env.close()
