"""The runtime against the simulated arm: executed action times match the plan under injected latency,
a silent sensor makes the robot hold, and the emergency stop works from another thread."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from robopolicy.cli import main
from robopolicy.datasets.store import EpisodeStore
from robopolicy.robots.interface import Reading, TimedAction
from robopolicy.robots.sim import SimRobot, SimRobotConfig
from robopolicy.runtime.loop import Runtime, RuntimeConfig
from robopolicy.runtime.timing import ActionPlan

pytestmark = [pytest.mark.slow, pytest.mark.sim]
LATENCY = {"camera": 0.15}
ACTUATION = 0.1


@pytest.fixture(scope="module")
def robot(lift_artifact):
    config = SimRobotConfig(env={**lift_artifact.meta["env"], "max_steps": 400}, sensors={"camera": ["object"]},
                            latency=LATENCY, actuation_latency=ACTUATION, jitter=0.005,
                            control_hz=lift_artifact.meta["control_hz"])
    with SimRobot(config) as sim:
        yield sim


def run(lift_artifact, robot, seconds: float, **settings) -> tuple[Runtime, object]:
    robot.reset(0)
    runtime = Runtime(lift_artifact, robot, RuntimeConfig(sensor_latency=LATENCY, actuation_latency=ACTUATION, **settings))
    return runtime, runtime.run(seconds)


@pytest.mark.realtime
def test_executed_action_times_match_the_plan_under_injected_latency(lift_artifact, robot):
    runtime, stats = run(lift_artifact, robot, 3.0)
    errors = np.array([applied - planned for applied, planned in robot.executed])
    assert stats.chunks >= 3 and stats.sent > 20 and len(errors) > 20
    # the simulator steps on its own 50 ms grid: a command takes effect at the step nearest its time
    assert np.abs(errors).max() < runtime.dt and np.percentile(np.abs(errors), 90) <= runtime.dt / 2 + 0.01
    ages = np.array([t["obs_age"] for t in stats.ticks[5:]])
    # obs times are capture times, not receive times (a reading may land a moment after the tick's clock read)
    assert np.nanmin(ages) >= LATENCY["camera"] - 0.005


@pytest.mark.realtime
def test_without_latency_matching_observations_look_fresh(lift_artifact, robot):
    _, stats = run(lift_artifact, robot, 1.5, match_latency=False)
    ages = np.array([t["obs_age"] for t in stats.ticks[5:]])
    assert np.nanmedian(ages) < LATENCY["camera"]


class SilentCamera:
    """The simulated arm with its camera going silent after `after` seconds."""

    def __init__(self, robot: SimRobot, after: float):
        self.robot, self.until = robot, robot.now() + after

    def __getattr__(self, name):
        return getattr(self.robot, name)

    def poll(self) -> Sequence[Reading]:
        readings = self.robot.poll()
        if self.robot.now() > self.until:
            return [r for r in readings if r.sensor != "camera"]
        return readings


def test_a_silent_sensor_makes_the_robot_hold(lift_artifact, robot):
    robot.reset(1)
    config = RuntimeConfig(sensor_latency=LATENCY, actuation_latency=ACTUATION, safety={"max_obs_age": 0.4})
    Runtime(lift_artifact, robot, config).warm_up()
    silent = SilentCamera(robot, after=1.0)
    stats = Runtime(lift_artifact, silent, config).run(3.0)
    assert stats.holds.get("stale_observation", 0) >= 10
    applied = np.array([applied for applied, _ in robot.executed])
    assert (applied < silent.until).sum() >= 5  # it moved while the camera spoke
    assert applied.max() < robot.now() - 0.5  # and executed nothing in the last half second


class NaNCamera(SilentCamera):
    """The simulated arm whose camera reports NaN in the object pose from `after` for `lasting` seconds; every
    action sent is recorded."""

    def __init__(self, robot: SimRobot, after: float, lasting: float):
        super().__init__(robot, after)
        self.recovers, self.sent = self.until + lasting, []

    def poll(self) -> Sequence[Reading]:
        readings = list(self.robot.poll())
        if self.until < self.robot.now() < self.recovers:
            readings = [Reading(r.sensor, r.received, {**r.values, "object": np.full_like(r.values["object"], np.nan)})
                        if r.sensor == "camera" else r for r in readings]
        return readings

    def send(self, actions: Sequence[TimedAction]) -> None:
        self.sent.extend((a.time, np.asarray(a.value)) for a in actions)
        self.robot.send(actions)


def test_nan_from_a_sensor_holds_the_arm_and_it_resumes_when_readings_are_finite(lift_artifact, robot):
    robot.reset(6)
    config = RuntimeConfig(sensor_latency=LATENCY, actuation_latency=ACTUATION)
    Runtime(lift_artifact, robot, config).warm_up()
    faulty = NaNCamera(robot, after=1.0, lasting=1.0)
    stats = Runtime(lift_artifact, faulty, config).run(3.5)
    assert stats.holds.get("non_finite_observation", 0) >= 5 and stats.non_finite_observations["object"] >= 5, stats.holds
    sent_times = np.array([t for t, _ in faulty.sent])
    assert np.isfinite(np.stack([v for _, v in faulty.sent])).all()
    # nothing planned during the fault (after the actuation lead) and actions again after it
    assert not ((sent_times > faulty.until + 0.4) & (sent_times < faulty.recovers)).any()
    assert (sent_times > faulty.recovers).sum() >= 5


class NaNArtifact:
    """The Lift artifact whose every other chunk has NaN in one action (a policy gone out of its domain)."""

    def __init__(self, artifact):
        self.artifact, self.calls = artifact, 0

    def __getattr__(self, name):
        return getattr(self.artifact, name)

    def run(self, inputs):
        chunk = self.artifact.run(inputs)
        self.calls += 1
        if self.calls % 2 == 0:
            chunk[:, 3, 1] = np.nan
        return chunk


def test_non_finite_actions_are_dropped_counted_and_the_arm_holds(lift_artifact, robot):
    robot.reset(7)
    recorder = NaNCamera(robot, after=1e9, lasting=0.0)  # no sensor fault: records what is sent
    runtime = Runtime(NaNArtifact(lift_artifact), recorder, RuntimeConfig(sensor_latency=LATENCY,
                                                                         actuation_latency=ACTUATION))
    stats = runtime.run(3.0)
    assert stats.non_finite_actions >= 2 and stats.holds.get("non_finite_action", 0) >= 2, stats.summary()
    assert stats.chunks >= 4 and recorder.sent
    assert np.isfinite(np.stack([v for _, v in recorder.sent])).all()


def test_emergency_stop_from_another_thread_stops_the_run_and_the_robot(lift_artifact, robot):
    robot.reset(2)
    runtime = Runtime(lift_artifact, robot, RuntimeConfig(sensor_latency=LATENCY, actuation_latency=ACTUATION))
    runtime.warm_up()
    threading.Timer(1.0, runtime.estop.trigger, args=("operator pressed stop",)).start()
    started = robot.now()
    stats = runtime.run(30.0)
    assert stats.stopped == "operator pressed stop" and robot.now() - started < 5.0
    threading.Event().wait(0.3)
    robot.poll()  # statuses of steps taken before the stop arrived
    executed = len(robot.executed)
    robot.send([TimedAction(robot.now() + 0.05, np.zeros(10, np.float32))])  # ignored until the next reset
    threading.Event().wait(0.5)
    robot.poll()
    assert len(robot.executed) == executed


def test_deploy_cli_runs_episodes_and_writes_results_and_a_run_log(lift_artifact, tmp_path, capsys):
    out = tmp_path / "deploy"
    code = main(["deploy", str(lift_artifact.directory), "episodes=2", "seed_start=5", "latency.camera=0.15",
                 "actuation_latency=0.1", "sensors.camera=[object]", "env.max_steps=30", f"out={out}"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    results = json.loads((out / "results.json").read_text())
    assert printed["success_rate"] == results["success_rate"] and [r["seed"] for r in results["runs"]] == [5, 6]
    assert results["completed"] == 2  # results.json is rewritten after every episode
    assert all(r["steps"] == 30 for r in results["runs"] if not r["success"])
    assert results["settings"]["sim"]["latency"] == {"camera": 0.15}
    log = EpisodeStore.open(out / "run_log.zarr")
    assert log.n_episodes == 2 and {"jitter", "obs_age", "sent", "dropped", "held"} <= set(log.keys)
    assert sum(r["sent"] for r in results["runs"]) == int(np.asarray(log["sent"][:]).sum()) > 0


def test_inpainting_holds_the_actions_sent_before_the_new_chunk_lands(lift_artifact, robot):
    runtime = Runtime(lift_artifact, robot, RuntimeConfig(actuation_latency=ACTUATION, blending="inpaint", replan_steps=8))
    runtime.latency_estimate, dt, t_ref = 0.12, runtime.dt, 100.0
    plan = ActionPlan(t_ref + np.arange(10) * dt, np.arange(10, dtype=float)[:, None] * np.ones((1, 10)))
    (actions, mask), held_until = runtime._prefix(plan, t_ref, now=t_ref + 0.05)
    # rows i execute at t_ref + (i - 1) dt; an async chunk is picked up at the tick after 0.12 s (0.15 s),
    # so it lands at 100.05 + 0.15 + 0.1 + margin = 100.305: rows whose time is before that are held
    assert mask.tolist() == [0, 1, 1, 1, 1, 1, 1, 1] + [0] * 8 and held_until == pytest.approx(t_ref + 6 * dt)
    np.testing.assert_allclose(actions[1:8, 0], np.arange(7))
    assert runtime._prefix(None, t_ref, t_ref) == (None, None)
    robot.reset(3)
    stats = runtime.run(2.0)
    assert stats.chunks >= 3 and stats.sent > 0 and stats.jumps


def test_a_latency_no_chunk_can_cover_is_refused_with_the_fix(lift_artifact, robot):
    robot.reset(4)
    runtime = Runtime(lift_artifact, robot, RuntimeConfig(sensor_latency={"camera": 0.8}, actuation_latency=ACTUATION))
    with pytest.raises(ValueError, match="no action can be on time.*n_latency_steps >= "):
        runtime.warm_up()
