"""Latency calibration recovers the actuation latency of the simulated Lift arm within 8 ms (docs/results/deployment.md).

The logic runs on a virtual clock: `VirtualArm` steps the same robosuite Lift env in-process under the timing rule
of the simulated arm (robopolicy.robots.sim), with time advanced by the calibration's own waits, so an estimate is
exact and repeatable on a loaded machine. One slow test runs the real simulator process in wall-clock time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

import numpy as np
import pytest

from robopolicy.envs.registry import make_env
from robopolicy.robots.calibrate import ROBOSUITE_CALIBRATION, CalibrationConfig, calibrate_actuation
from robopolicy.robots.interface import Reading, TimedAction
from robopolicy.robots.sim import SimRobot, SimRobotConfig

pytestmark = pytest.mark.sim
LIFT = {"name": "robosuite", "task": "Lift", "max_steps": 10**6}
SETTINGS = CalibrationConfig(**{**ROBOSUITE_CALIBRATION, "action_keys": tuple(ROBOSUITE_CALIBRATION["action_keys"]),
                                "action_tail": tuple(ROBOSUITE_CALIBRATION["action_tail"])})  # 20 Hz, 8 s, +-2 cm
CLAIMED = 0.008  # "All within 8 ms" (docs/results/deployment.md, 5 ms jitter)
WALL_CLOCK = 0.05  # one control period: the real simulator's step timing strays by up to ~40 ms on an idle machine


class VirtualArm:
    """The simulated arm's timing on a virtual clock (`now`, advanced only by `sleep`).

    As in robopolicy.robots.sim: the env steps every control period; commands due before the next step go out and
    each takes effect at the step nearest its time plus `actuation_latency`; a step's state is captured one period
    after the step began and delivered `sensor_latency` plus half-normal `jitter` later. Unlike the simulator
    process, whose control grid has whatever phase it started with, this arm shifts its grid at the first `send`
    so that the commands fall `phase` seconds before a step: with phase 0 a command takes effect exactly
    `actuation_latency` after its time (when that is a whole number of periods).
    """

    def __init__(self, env, actuation_latency: float, jitter: float = 0.0, sensor_latency: float = 0.0,
                 phase: float = 0.0, seed: int = 0, control_hz: float = 20.0):
        self.env, self.task, self.dt = env, env.unwrapped, 1.0 / control_hz
        self.latency, self.sensor_latency, self.jitter, self.phase = actuation_latency, sensor_latency, jitter, phase
        self.rng = np.random.default_rng(seed)
        self.obs, _ = env.reset(seed=seed)
        self.command = self.task.hold_action(self.obs, None)
        self.t = self.next_tick = 0.0
        self.locked = False
        self.queue: list[tuple[float, np.ndarray]] = []
        self.in_flight: list[tuple[float, np.ndarray]] = []
        self.pending: list[tuple[float, int, dict]] = []
        self.executed: list[tuple[float, float]] = []  # (applied, planned), as SimRobot.executed
        self.order = itertools.count()

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        end = self.t + seconds
        while self.next_tick <= end:
            self.t = self.next_tick
            self._step()
        self.t = end

    def _step(self) -> None:
        while self.queue and self.queue[0][0] < self.t + self.dt:
            self.in_flight.append(self.queue.pop(0))
        while self.in_flight and self.in_flight[0][0] + self.latency <= self.t + self.dt / 2:
            planned, self.command = self.in_flight.pop(0)
            self.executed.append((self.t, planned + self.latency))
        self.obs = self.env.step(self.command)[0]
        delivered = self.t + self.dt + self.sensor_latency + abs(self.rng.normal(0.0, self.jitter))
        heapq.heappush(self.pending, (delivered, next(self.order), dict(self.obs)))
        self.next_tick += self.dt

    def poll(self) -> Sequence[Reading]:
        readings = []
        while self.pending and self.pending[0][0] <= self.t:
            received, _, values = heapq.heappop(self.pending)
            readings.append(Reading("arm", received, values))
        return readings

    def send(self, actions: Sequence[TimedAction]) -> None:
        self.queue = [(a.time, np.asarray(a.value, np.float32)) for a in actions]
        if actions and not self.locked:
            first = actions[0].time + self.phase
            self.next_tick = first - self.dt * np.floor((first - self.t) / self.dt)
            self.locked = True

    def hold(self) -> None:
        self.queue, self.in_flight = [], []
        self.command = self.task.hold_action(self.obs, self.command)

    def stop(self) -> None:
        self.hold()

    def effective_latency(self) -> float:
        """The delay the arm really gave: the injected latency plus where its steps fell (mean applied - planned)."""
        applied, planned = np.array(self.executed).T
        return self.latency + float(np.mean(applied - planned))


@pytest.fixture(scope="module")
def lift_env():
    env = make_env(LIFT)
    yield env
    env.close()


def calibrate_virtual(env, settings: CalibrationConfig = SETTINGS, **arm) -> tuple[dict, VirtualArm]:
    robot = VirtualArm(env, **arm)
    return calibrate_actuation(robot, settings, sleep=robot.sleep), robot


@pytest.mark.parametrize("injected", [0.0, 0.05, 0.1, 0.2])
def test_calibration_recovers_the_injected_latency_within_the_claimed_8_ms(lift_env, injected):
    estimate, robot = calibrate_virtual(lift_env, actuation_latency=injected, jitter=0.005)
    error = estimate["actuation_latency"] - injected
    # measured +4..+6 ms: the half-normal sensor jitter (mean 4 ms) is delay the configured sensor latency lacks
    assert abs(error) <= CLAIMED, f"estimated {1000 * estimate['actuation_latency']:.0f} ms for {1000 * injected:.0f} ms"
    assert robot.effective_latency() == pytest.approx(injected, abs=1e-9)  # the arm's steps fell on the commands
    assert estimate["samples"] >= 8 * 20 and estimate["correlation"] > 0.1, estimate


def test_without_jitter_the_estimate_is_exact_and_the_configured_sensor_latency_is_removed(lift_env):
    settings = CalibrationConfig(**{**vars(SETTINGS), "sensor_latency": 0.03})
    estimate, _ = calibrate_virtual(lift_env, settings, actuation_latency=0.1, sensor_latency=0.03)
    # exact to the estimator's 2 ms grid (measured: 100 ms)
    assert abs(estimate["actuation_latency"] - 0.1) < 0.001, f"estimated {1000 * estimate['actuation_latency']:.1f} ms"


@pytest.mark.parametrize("phase", [-0.02, 0.02])
def test_the_estimate_is_the_delay_the_arm_gave_when_its_steps_miss_the_command_times(lift_env, phase):
    """A command takes effect at the arm's next step after its time plus the latency: up to a period off it."""
    estimate, robot = calibrate_virtual(lift_env, actuation_latency=0.1, jitter=0.005, phase=phase)
    effective = robot.effective_latency()
    assert abs(effective - 0.1) >= 0.015  # the arm's grid really was out of phase (80 or 120 ms)
    assert abs(estimate["actuation_latency"] - effective) <= CLAIMED, (
        f"estimated {1000 * estimate['actuation_latency']:.0f} ms, the arm gave {1000 * effective:.0f} ms")


@pytest.mark.slow
@pytest.mark.realtime
def test_calibration_in_wall_clock_time_on_the_simulator_process():
    """The real simulator process in wall-clock time, 100 ms injected: within one 50 ms control period. The 8 ms
    claim is the estimator's, checked exactly on the virtual clock above; here the simulator's own timing adds to it.

    Measured here with the machine otherwise idle: 92, 96, 102, 102, 106 and 106 ms, and once 138 ms. The arm's
    own grid applied the commands 12 to 24 ms before their planned times, and its readings arrived about 16 ms
    after their capture (due as the next step starts, sent after it): the two roughly cancel while the simulator
    keeps its steps on time. Under load (2 cores shared) it measured 46 to 224 ms; the virtual-clock tests above
    check the logic exactly."""
    config = SimRobotConfig(env=LIFT, actuation_latency=0.1, jitter=0.005)
    with SimRobot(config) as robot:
        robot.reset(0)
        estimate = calibrate_actuation(robot, SETTINGS)
        robot.poll()
        offsets = np.array([applied - planned for applied, planned in robot.executed])
    assert abs(estimate["actuation_latency"] - 0.1) <= WALL_CLOCK, (
        f"estimated {1000 * estimate['actuation_latency']:.0f} ms for 100 ms injected; the arm applied commands "
        f"{1000 * np.median(offsets):+.0f} ms from their planned times (90% within "
        f"{1000 * np.percentile(np.abs(offsets - np.median(offsets)), 90):.0f} ms of that)")
