"""Latency calibration: estimate a robot's actuation latency from commanded and measured motion.

The robot is driven around its current pose by a pseudo-random step sequence on the position
dims (each axis switches between -amplitude and +amplitude every few periods). A step in the
commanded position makes the arm accelerate as soon as the command takes effect, however slowly
it then moves, so the measured acceleration (second differences of the positions) is
cross-correlated with the command steps on a fine grid: the lag of the strongest correlation is
the pure delay from command to motion (plus any latency of the position sensor beyond the one
configured). Position or velocity would add the arm's response time, which the demonstrations
already contain and the runtime must not compensate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from robopolicy.robots.interface import RobotInterface, TimedAction
from robopolicy.robots.sim import SimRobot, sim_robot_config
from robopolicy.settings import build_settings, parse_overrides

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationConfig:
    """Which readings give the pose, how to build an action from it, and the excitation."""

    position_key: str  # store key of the measured position, e.g. robot0_eef_pos
    action_keys: tuple[str, ...]  # store keys whose values, concatenated, are the action that holds the pose
    action_tail: tuple[float, ...] = ()  # constant action dims after them (e.g. the gripper command)
    control_hz: float = 20.0
    seconds: float = 8.0
    amplitude: float = 0.02  # position units (metres for robosuite)
    switch_every: int = 4  # periods between possible switches of each axis
    max_lag: float = 0.6  # seconds: the search range
    sensor_latency: float = 0.0  # configured latency of the position sensor, removed from its times
    seed: int = 0


def excitation(n_steps: int, dims: int, amplitude: float, switch_every: int, seed: int) -> np.ndarray:
    """(n_steps, dims) offsets: per axis, +-amplitude redrawn every `switch_every` steps."""
    rng = np.random.default_rng(seed)
    blocks = -(-n_steps // switch_every)
    signs = rng.choice([-1.0, 1.0], size=(blocks, dims))
    return amplitude * np.repeat(signs, switch_every, axis=0)[:n_steps]


def estimate_lag(command_times: np.ndarray, commands: np.ndarray, measured_times: np.ndarray, measured: np.ndarray,
                 max_lag: float, resolution: float = 0.002) -> tuple[float, float]:
    """(lag in seconds, peak normalized correlation) of the measured acceleration behind the command steps."""
    times, values = np.asarray(measured_times, float), np.asarray(measured, float)
    for _ in range(2):  # derivatives at the midpoints of the samples
        values = np.diff(values, axis=0) / np.diff(times)[:, None]
        times = (times[1:] + times[:-1]) / 2
    start, stop = max(command_times[0], times[0]), min(command_times[-1], times[-1])
    if stop - start < 4 * max_lag:
        raise ValueError(f"only {stop - start:.2f} s of overlapping command and measurement; calibrate for longer")
    grid = np.arange(start, stop, resolution)
    held = np.searchsorted(command_times, grid, side="right") - 1  # commands hold until the next one
    command = np.diff(commands[held], axis=0)
    response = np.stack([np.interp(grid, times, values[:, d]) for d in range(values.shape[1])], axis=1)[1:]
    lags = np.arange(int(max_lag / resolution) + 1)
    n = len(command) - lags[-1]
    scores = []
    for lag in lags:
        a, b = command[:n], response[lag : lag + n]
        scores.append(float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    best = int(np.argmax(scores))
    return float(lags[best] * resolution), scores[best]


def calibrate_actuation(robot: RobotInterface, settings: CalibrationConfig,
                        sleep: Callable[[float], None] = time.sleep) -> dict[str, float]:
    """Drive the excitation, record the response, and estimate the command-to-motion latency.

    Time is `robot.now()`; `sleep(seconds)` waits between polls (a robot on a virtual clock passes its own).
    """
    dt = 1.0 / settings.control_hz
    pose = _first_values(robot, settings.action_keys + (settings.position_key,), timeout=10.0, sleep=sleep)
    base = np.concatenate([np.ravel(pose[k]) for k in settings.action_keys] + [np.asarray(settings.action_tail)])
    dims = len(np.ravel(pose[settings.position_key]))
    steps = int(settings.seconds * settings.control_hz)
    offsets = excitation(steps, dims, settings.amplitude, settings.switch_every, settings.seed)
    start = robot.now() + 0.3
    times = start + dt * np.arange(steps)
    actions = np.repeat(base[None], steps, axis=0)
    actions[:, :dims] += offsets
    robot.send([TimedAction(float(t), a.astype(np.float32)) for t, a in zip(times, actions, strict=True)])
    measured_times, measured = [], []
    while robot.now() < times[-1] + settings.max_lag + 0.3:
        for reading in robot.poll():
            if settings.position_key in reading.values:
                measured_times.append(reading.received - settings.sensor_latency)
                measured.append(np.ravel(reading.values[settings.position_key]))
        sleep(dt / 4)
    robot.hold()
    lag, score = estimate_lag(times, actions[:, :dims], np.array(measured_times), np.array(measured), settings.max_lag)
    return {"actuation_latency": lag, "correlation": score, "samples": len(measured)}


def _first_values(robot: RobotInterface, keys: Sequence[str], timeout: float,
                  sleep: Callable[[float], None] = time.sleep) -> dict[str, np.ndarray]:
    """The latest value of each key, waiting until every key has been read once."""
    values: dict[str, np.ndarray] = {}
    deadline = robot.now() + timeout
    while robot.now() < deadline:
        for reading in robot.poll():
            values.update({k: np.asarray(v) for k, v in reading.values.items() if k in keys})
        if all(k in values for k in keys):
            return values
        sleep(0.01)
    raise TimeoutError(f"no reading of {sorted(set(keys) - set(values))} within {timeout} s")


ROBOSUITE_CALIBRATION = {"position_key": "robot0_eef_pos", "action_keys": ["robot0_eef_pos", "robot0_eef_rot6d"],
                         "action_tail": [-1.0]}


def calibrate(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """`robopolicy robot calibrate env.name=robosuite env.task=Lift actuation_latency=0.1 ...`.

    The simulated arm gets the injected latencies (actuation_latency, jitter, latency.<sensor>);
    the estimate comes from its motion alone. CalibrationConfig fields are options too; for
    robosuite's absolute controller the pose keys default to the grip site's.
    """
    options = parse_overrides(overrides)
    if options.pop("robot", "sim") != "sim":
        raise ValueError("calibration runs on robot=sim here (a ROS robot is calibrated through its bridge)")
    sim = sim_robot_config(options, float(options.get("control_hz", CalibrationConfig.control_hz)), "calibrate",
                           env_base={"max_steps": 10**6})
    robosuite_absolute = sim.env["name"] == "robosuite" and sim.env.get("controller", "absolute") == "absolute"
    values = {**(ROBOSUITE_CALIBRATION if robosuite_absolute else {}), **options}
    for key in ("action_keys", "action_tail"):
        if key in values:
            values[key] = tuple(values[key])
    settings = build_settings(CalibrationConfig, values, "calibrate")
    injected = {"actuation_latency": sim.actuation_latency, "jitter": sim.jitter, "latency": sim.latency}
    with SimRobot(sim) as robot:
        robot.reset(settings.seed)
        estimate = calibrate_actuation(robot, settings)
    log.info("actuation latency %.0f ms (injected %.0f ms)", 1000 * estimate["actuation_latency"],
             1000 * sim.actuation_latency)
    return {**estimate, "injected": injected, "settings": asdict(settings)}
