"""LiftConveyor, the dynamic task: the belt carries the cube at its set speed until it is grasped, the scripted
expert picks it off the belt, and the speed is a checked task setting."""

from __future__ import annotations

import numpy as np
import pytest

from tests.needs import require

require("sim")
pytestmark = pytest.mark.sim

from robopolicy.envs.robosuite_tasks import BELT_START_Y, make_env, make_expert  # noqa: E402


def hold_still(env, obs) -> np.ndarray:
    return env.hold_action(obs, None)


@pytest.mark.parametrize("speed", [0.0, 0.1])
def test_the_belt_carries_the_resting_cube_at_its_speed(speed):
    env = make_env("LiftConveyor", belt_speed=speed)
    try:
        obs, _ = env.reset(seed=3)
        assert BELT_START_Y[0] <= obs["object"][1] <= BELT_START_Y[1]
        for _ in range(5):  # robosuite places the cube 1 cm above the table: let it land
            obs, *_ = env.step(hold_still(env, obs))
        start = obs["object"][:3].copy()
        for _ in range(20):  # one second at 20 Hz, the arm holding its pose above the table
            obs, _, _, _, info = env.step(hold_still(env, obs))
        moved = obs["object"][:3] - start
        assert moved[1] == pytest.approx(speed * 1.0, abs=0.004)
        assert abs(moved[0]) < 0.002 and abs(moved[2]) < 0.002 and not info["is_success"]
    finally:
        env.close()


@pytest.mark.parametrize("speed", [0.05, 0.1])
def test_the_scripted_expert_picks_the_cube_off_the_moving_belt(speed):
    """Three seeds per speed: each is lifted, and once grasped the cube rides with the gripper, not the belt."""
    env = make_env("LiftConveyor", belt_speed=speed)
    try:
        for seed in range(3):
            obs, info = env.reset(seed=seed)
            expert = make_expert(env, np.random.default_rng(seed))
            expert.reset(obs, info)
            for _ in range(env.max_episode_steps):
                obs, _, _, _, info = env.step(expert.act(obs, info))
                if info["is_success"]:
                    break
            assert info["is_success"], f"seed {seed} at {speed} m/s"
            grip_to_cube = obs["object"][7:]
            assert np.linalg.norm(grip_to_cube) < 0.03  # in the fingers
            assert not env._belt_on
    finally:
        env.close()


def test_belt_speed_is_checked():
    with pytest.raises(ValueError, match="belt_speed is a setting of"):
        make_env("Lift", belt_speed=0.1)
    with pytest.raises(ValueError, match=r"expected metres per second in \[0, 0.5\]"):
        make_env("LiftConveyor", belt_speed=-0.1)
