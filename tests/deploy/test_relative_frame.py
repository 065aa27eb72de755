"""A policy trained on relative trajectories (`action.frame: relative`), exported and run through the runtime: it takes
and gives absolute poses, the artifact records its frame, and the same observed motion started elsewhere gives the
same motion there (what makes relative trajectories robust to where the arm starts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robopolicy.cli import main
from robopolicy.robots.sim import SimRobot, SimRobotConfig
from robopolicy.runtime.artifact import load_artifact
from robopolicy.runtime.inference import ArtifactRunner
from robopolicy.runtime.loop import Runtime, RuntimeConfig
from robopolicy.training.run import train
from tests.tiny_runs import TWO_STEP_UNET

pytestmark = pytest.mark.sim
ARM_KEYS = ("robot0_eef_pos", "robot0_eef_rot6d", "robot0_gripper_qpos")


@pytest.fixture(scope="module")
def relative_artifact(tmp_path_factory) -> Path:
    """Lift demos, a tiny diffusion policy on the arm's own pose (no object key) with relative actions, exported."""
    root = tmp_path_factory.mktemp("relative")
    assert main(["demos", "generate", "env=lift", "obs=lowdim", "n=2", f"out={root / 'demos.zarr'}"]) == 0
    train([f"data={root / 'demos.zarr'}", f"obs=[{','.join(ARM_KEYS)}]", "task.shape_meta.action.frame=relative",
           "task.env={name: robosuite, task: Lift}", *TWO_STEP_UNET, "training.max_steps=20",
           f"run_dir={root / 'run'}"])
    assert main(["export", str(root / "run" / "checkpoints" / "last"), f"out={root / 'artifact'}"]) == 0
    return root / "artifact"


def arm_window(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two observation steps of a gripper pointing down near Lift's cube, store layout (raw units)."""
    position = np.array([[-0.1, 0.02, 1.0], [-0.09, 0.02, 0.99]]) + rng.normal(0, 0.01, (2, 3))
    down = np.array([1.0, 0.0, 0.0, 0.0, -1.0, 0.0])  # rot6d of diag(1, -1, -1)
    return {"robot0_eef_pos": position.astype(np.float32), "robot0_eef_rot6d": np.tile(down, (2, 1)).astype(np.float32),
            "robot0_gripper_qpos": np.full((2, 2), 0.02, np.float32)}


def test_the_artifact_records_the_frame_and_its_safety_range_is_absolute(relative_artifact):
    meta = load_artifact(relative_artifact).meta
    assert meta["action_frame"] == {"frame": "relative", "position": "robot0_eef_pos", "rotation": "robot0_eef_rot6d",
                                    "action_position": 0, "action_rotation": 3}
    low, high = np.array(meta["action_range"]["low"]), np.array(meta["action_range"]["high"])
    assert 0.8 < low[2] < high[2] < 1.3  # Lift's grip heights above the floor, not offsets from the grip site


def test_the_same_motion_started_elsewhere_moves_the_actions_with_it(relative_artifact):
    """Translate the observed arm by 12 cm: every predicted position moves by 12 cm, rotations and gripper stay."""
    runner = ArtifactRunner(load_artifact(relative_artifact), seed=0)
    window = arm_window(np.random.default_rng(0))
    shift = np.array([0.05, -0.11, 0.02], np.float32)
    moved = {**window, "robot0_eef_pos": window["robot0_eef_pos"] + shift}
    here, there = ArtifactRunner(load_artifact(relative_artifact), seed=0)(window), runner(moved)
    np.testing.assert_allclose(there[:, :3] - here[:, :3], np.broadcast_to(shift, here[:, :3].shape), atol=1e-5)
    np.testing.assert_allclose(there[:, 3:], here[:, 3:], atol=1e-5)
    assert np.linalg.norm(here[:, :3] - window["robot0_eef_pos"][-1], axis=1).max() < 0.3  # near the arm: absolute


@pytest.mark.slow
def test_the_runtime_drives_the_simulated_arm_with_absolute_targets_near_it(relative_artifact):
    """The relative policy through the runtime on the simulated Lift arm (100 ms camera, 50 ms actuation latency):
    every target it sends is finite and within reach of where the grip site is."""
    artifact = load_artifact(relative_artifact)
    config = SimRobotConfig(env={**artifact.meta["env"], "max_steps": 400}, latency={"arm": 0.1},
                            actuation_latency=0.05, control_hz=artifact.meta["control_hz"])
    with SimRobot(config) as robot:
        sent, grips, send, poll = [], [], robot.send, robot.poll

        def record_send(actions):
            sent.extend(actions)
            send(actions)

        def record_poll(timeout=0.0):
            readings = poll(timeout)
            grips.extend(r.values["robot0_eef_pos"] for r in readings if "robot0_eef_pos" in r.values)
            return readings

        robot.send, robot.poll = record_send, record_poll
        robot.reset(0)
        runtime = Runtime(artifact, robot, RuntimeConfig(sensor_latency={"arm": 0.1}, actuation_latency=0.05))
        stats = runtime.run(2.0)
    targets = np.array([a.value for a in sent])
    assert stats.chunks >= 2 and len(targets) > 10 and np.isfinite(targets).all()
    assert np.linalg.norm(targets[:, None, :3] - np.array(grips)[None], axis=-1).min(axis=1).max() < 0.3
