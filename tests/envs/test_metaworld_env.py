"""MetaWorld task envs: observations against shape_meta and spaces, point-cloud geometry, seeding, experts."""

from __future__ import annotations

import numpy as np
import pytest

from tests.needs import require

require("sim")
pytestmark = pytest.mark.sim

import mujoco

from robopolicy.datasets.pointcloud import depth_to_points
from robopolicy.datasets.shape_meta import parse_shape_meta
from robopolicy.envs import registry
from robopolicy.envs.metaworld_tasks import (
    DIFFICULTY,
    DP3_CROP_ANGLES_DEG,
    DP3_CROP_HIGH,
    DP3_CROP_LOW,
    OBS_TYPES,
    TASKS,
    camera_to_world,
    make_env,
    make_expert,
)
from robopolicy.training.config import compose_config


@pytest.fixture
def envs():
    """Builds envs through make_env and closes them (and their render contexts) after the test."""
    built = []

    def build(*args, **kwargs):
        built.append(make_env(*args, **kwargs))
        return built[-1]

    yield build
    for env in built:
        env.close()


def run_expert(env, seed: int) -> tuple[bool, int]:
    """Roll the task's expert until success or the horizon: (solved, steps)."""
    obs, info = env.reset(seed=seed)
    expert = make_expert(env, np.random.default_rng(seed))
    expert.reset(obs, info)
    for _ in range(env.max_episode_steps):
        obs, _, terminated, _, info = env.step(expert.act(obs, info))
        assert not terminated
        if info["is_success"]:
            break
    return info["is_success"], env.sim.curr_path_length


def test_unknown_task_raises_with_close_names():
    with pytest.raises(ValueError, match="did you mean 'pick-place-v3'"):
        make_env("pick-place-v2")
    with pytest.raises(ValueError, match="'reach-v3'"):
        make_env("reach")
    with pytest.raises(ValueError, match="obs_type"):
        make_env("reach-v3", obs_type="pointcloud")


def test_difficulty_groups_are_dp3s_and_cover_all_50_tasks():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    sizes = {group: len(tasks) for group, tasks in DIFFICULTY.items()}
    assert sizes == {"easy": 28, "medium": 11, "hard": 6, "very_hard": 5}
    assert len(TASKS) == 50 and set(TASKS) == set(ALL_V3_ENVIRONMENTS)


@pytest.mark.parametrize("obs_type", OBS_TYPES)
def test_observations_conform_to_space_and_info_contract(envs, obs_type):
    env = envs("pick-place-v3", obs_type=obs_type)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert set(obs) == set(env.observation_space.spaces)
    assert info == {"is_success": False, "score": 0.0}
    obs, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert env.observation_space.contains(obs)
    assert isinstance(info["is_success"], bool) and info["score"] in (0.0, 1.0)
    assert not terminated and not truncated and np.isfinite(reward)
    assert env.action_space.shape == (4,) and env.metadata["render_fps"] == pytest.approx(80.0)
    hand, right, left = obs["agent_pos"].reshape(3, 3)
    np.testing.assert_allclose(hand, obs["state"][:3], atol=1e-6)
    assert 0.0 < np.linalg.norm(right - left) < 0.15  # fingertips, a gripper's width apart


def test_env_from_task_config_matches_its_shape_meta():
    task = compose_config(["task=metaworld_pointcloud", "task.env.task=push-v3"])["task"]
    assert task["dataset"]["path"] == "runs/data/metaworld_push-v3_pointcloud.zarr"
    env = registry.make_env(task["env"])
    try:
        obs, _ = env.reset(seed=1)
        for key, spec in parse_shape_meta(task["shape_meta"]).obs.items():
            assert obs[spec.source].shape == spec.shape and obs[spec.source].dtype == np.float32, key
        assert env.action_space.shape == tuple(task["shape_meta"]["action"]["shape"])
    finally:
        env.close()


def test_point_cloud_is_inside_the_crop_box_and_sees_the_object(envs):
    env = envs("pick-place-v3", obs_type="point_cloud", n_points=2048)
    obs, _ = env.reset(seed=3)
    cloud = obs["point_cloud"]
    assert cloud.shape == (2048, 6) and cloud.dtype == np.float32
    in_crop = cloud[:, :3] @ env.world_to_crop[:3, :3].T + env.world_to_crop[:3, 3]
    assert np.all(in_crop >= np.array(DP3_CROP_LOW) - 1e-4) and np.all(in_crop <= np.array(DP3_CROP_HIGH) + 1e-4)
    assert cloud[:, 3:].min() >= 0.0 and cloud[:, 3:].max() <= 1.0
    puck = obs["state"][4:7]  # the object's true centre (a puck of radius 0.02 m on the table)
    near = np.linalg.norm(cloud[:, :3] - puck, axis=1) < 0.03
    assert near.sum() >= 3
    assert np.unique(np.round(cloud[:, :3], 4), axis=0).shape[0] > 1500  # distinct points, not padding


def test_point_cloud_colours_skip_shadows_and_its_points_stay_where_they_were(envs):
    env = envs("pick-place-v3", obs_type="point_cloud")
    unshadowed = env.reset(seed=5)[0]["point_cloud"]
    env._obs_renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 1
    shadowed = env.reset(seed=5)[0]["point_cloud"]
    np.testing.assert_array_equal(unshadowed[:, :3], shadowed[:, :3])
    darker = shadowed[:, 3:].sum(axis=1) < unshadowed[:, 3:].sum(axis=1) - 0.05
    assert darker.mean() > 0.05  # the robot and objects cast shadows on the table only when asked to


def test_crop_keeps_exactly_the_pixels_dp3s_pipeline_keeps(envs):
    env = envs("pick-place-v3", obs_type="depth")
    depth = env.reset(seed=2)[0]["depth"]
    # DP3: camera-frame points with the principal point at (W/2, H/2), y and z flipped, then its
    # rotation (written as in DP3: about x by -61.4 degrees, about y by -7), then its box.
    ax, ay = np.deg2rad(DP3_CROP_ANGLES_DEG)
    turn = np.array([[1, 0, 0], [0, np.cos(ax), np.sin(ax)], [0, -np.sin(ax), np.cos(ax)]]) @ np.array(
        [[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    dp3_k = env.intrinsics.copy()
    dp3_k[:2, 2] = 64.0
    dp3 = depth_to_points(depth, dp3_k) @ (turn @ np.diag([1.0, -1.0, -1.0])).T
    ours = depth_to_points(depth, env.intrinsics, env.world_to_crop @ camera_to_world(env.sim.data, env.camera_id))
    near = depth.ravel() < 3.0
    np.testing.assert_allclose(ours[near], dp3[near], atol=1e-5)
    kept_dp3 = np.all((dp3 > DP3_CROP_LOW) & (dp3 < DP3_CROP_HIGH), axis=1)
    kept_ours = np.all((ours >= DP3_CROP_LOW) & (ours <= DP3_CROP_HIGH), axis=1)
    assert 1000 < kept_dp3.sum() < 0.5 * depth.size and np.array_equal(kept_dp3, kept_ours)


def test_depth_is_metres_along_the_optical_axis(envs):
    env = envs("pick-place-v3", obs_type="depth")
    obs, _ = env.reset(seed=4)
    depth = obs["depth"]
    assert depth.shape == (128, 128) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and 0.3 < depth.min() < 1.0  # the camera is ~0.8 m from the table
    # Project the puck's top into the image with the env's intrinsics and pose; depth there is its z.
    top = np.append(obs["state"][4:7] + [0.0, 0.0, 0.02], 1.0)
    x, y, z = (np.linalg.inv(camera_to_world(env.sim.data, env.camera_id)) @ top)[:3]
    u, v = (env.intrinsics @ [x / z, y / z, 1.0])[:2]
    assert 0 <= u < 128 and 0 <= v < 128
    row, col = np.rint([v, u]).astype(int)
    assert depth[row, col] == pytest.approx(z, abs=0.01)


def test_same_seed_same_scene_and_different_seeds_differ(envs):
    env, twin = envs("push-v3", obs_type="lowdim"), envs("push-v3", obs_type="lowdim")
    first = env.reset(seed=7)[0]["state"]
    np.testing.assert_array_equal(first, env.reset(seed=7)[0]["state"])
    np.testing.assert_array_equal(first, twin.reset(seed=7)[0]["state"])
    scenes = np.stack([env.reset(seed=s)[0]["state"][np.r_[4:7, 36:39]] for s in range(5)])
    assert np.unique(scenes.round(5), axis=0).shape[0] == 5  # object and goal positions vary by seed


def test_truncates_at_horizon_without_terminating(envs):
    env = envs("reach-v3", obs_type="lowdim", max_steps=5)
    env.reset(seed=0)
    flags = [env.step(np.zeros(4))[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]
    assert envs("reach-v3", obs_type="lowdim").max_episode_steps == 200  # DP3's horizon


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expert_solves_an_easy_task(envs, seed):
    solved, steps = run_expert(envs("reach-v3", obs_type="lowdim"), seed)
    assert solved and steps < 150


@pytest.mark.slow
@pytest.mark.parametrize("task", ["basketball-v3", "pick-place-v3"])
def test_expert_solves_from_point_cloud_env_and_renders(envs, task):
    env = envs(task, obs_type="point_cloud")
    solved, _ = run_expert(env, seed=0)
    assert solved
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8 and frame.std() > 10
