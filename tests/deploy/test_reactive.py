"""The fast reactive layer: fitted on the demos its policy learned from, it brings the policy's planned actions closer
to the demos' on held-out episodes; the runtime runs it at the control rate on the simulated arm; an artifact without
one says how to fit it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from robopolicy.deploy.reactive import fit_reactive
from robopolicy.robots.sim import SimRobot, SimRobotConfig
from robopolicy.runtime.artifact import load_artifact
from robopolicy.runtime.loop import Runtime, RuntimeConfig
from robopolicy.runtime.reactive import ReactiveLayer

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def reactive_artifact(lift_artifact, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the tiny Lift artifact with a reactive layer fitted for its checkpoint (2 demos, 1 held out)."""
    directory = tmp_path_factory.mktemp("reactive") / "artifact"
    shutil.copytree(lift_artifact.directory, directory)
    checkpoint = Path(lift_artifact.directory).parent / "run" / "checkpoints" / "last"
    meta = fit_reactive(checkpoint, [f"artifact={directory}", "windows=300", "steps=800", "threads=1"])
    return directory, meta


def test_the_fitted_layer_brings_the_plan_closer_to_the_demos_on_a_held_out_episode(reactive_artifact):
    """The policy trained 2 steps plans far from the demos; the layer, seeing the observations, corrects much of it."""
    _, meta = reactive_artifact
    held_out = meta["errors"]["val"]
    assert held_out["pairs"] > 100
    assert held_out["corrected_rms"] < 0.7 * held_out["plan_rms"]
    assert meta["keys"] == ["eef_pos", "eef_rot6d", "gripper", "object"] and meta["horizon"] == 15


def test_the_exported_layer_is_a_correction_around_the_plan(reactive_artifact):
    """Same inputs, same output; the output moves with the plan (it is the plan plus a correction)."""
    layer = ReactiveLayer(reactive_artifact[0])
    rng = np.random.default_rng(0)
    plan = rng.normal(0, 0.1, (4, 10)).astype(np.float32)
    obs0, newer = (rng.normal(0, 0.1, meta_dim := layer.meta["obs_dim"]).astype(np.float32) for _ in range(2))
    k = np.arange(4, dtype=np.float32)
    first = layer.correct(plan, k, obs0, newer, 1.0)
    assert first.shape == (4, 10) and np.isfinite(first).all() and meta_dim == 21
    np.testing.assert_array_equal(layer.correct(plan, k, obs0, newer, 1.0), first)
    assert np.abs(first - plan).max() > 1e-4  # it corrects


def test_an_artifact_without_a_layer_says_how_to_fit_one(lift_artifact):
    with pytest.raises(FileNotFoundError, match="robopolicy reactive CHECKPOINT artifact="):
        ReactiveLayer(lift_artifact.directory)


@pytest.mark.slow
def test_the_runtime_corrects_planned_actions_at_the_control_rate(reactive_artifact):
    """On the simulated Lift arm with 100 ms camera latency: a correction on most ticks, finite, the tick fast."""
    artifact = load_artifact(reactive_artifact[0])
    config = SimRobotConfig(env={**artifact.meta["env"], "max_steps": 400}, sensors={"camera": ["object"]},
                            latency={"camera": 0.1}, actuation_latency=0.05, control_hz=artifact.meta["control_hz"])
    with SimRobot(config) as robot:
        robot.reset(0)
        runtime = Runtime(artifact, robot, RuntimeConfig(sensor_latency={"camera": 0.1}, actuation_latency=0.05,
                                                         reactive=True))
        stats = runtime.run(2.0)
    summary = stats.summary()
    assert stats.chunks >= 2 and summary["corrections"] > len(stats.ticks) / 2
    assert np.isfinite(summary["mean_correction"]).all()
    assert summary["tick_work_ms"]["p50"] < 20.0
