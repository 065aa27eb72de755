"""A simulated arm with real latency: a task env stepped in wall-clock time in its own process.

The simulator process steps its env every control period. At each step the queued commands due
before the next step go out to the actuators (a later `send` replaces only commands not yet gone
out), and each takes effect at the step nearest to `actuation_latency` after its send time, as on
a real arm; with no new command it keeps the last
one, and on hold or stop it commands the observed pose at once. Each step's observation shows the
state one period after the step began (its capture time), and is split by sensor and delivered
after that sensor's latency plus random jitter (half-normal, `jitter` seconds scale). Times are
`time.monotonic()`, which both processes share. Status messages report success, steps and, per
step, when each command was applied against when it was planned to take effect.
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing as mp
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robopolicy.robots.interface import Reading, TimedAction


@dataclass
class SimRobotConfig:
    """The env (as `robopolicy eval` takes it), the sensors it is read through and the injected latencies."""

    env: dict[str, Any]
    sensors: dict[str, list[str]] = field(default_factory=dict)  # sensor -> store keys; other keys: "arm"
    latency: dict[str, float] = field(default_factory=dict)  # seconds per sensor
    actuation_latency: float = 0.0
    jitter: float = 0.0
    control_hz: float = 20.0

    def sensor_of(self, key: str) -> str:
        for sensor, keys in self.sensors.items():
            if key in keys:
                return sensor
        return "arm"


SIM_OPTIONS = ("env", "sensors", "latency", "actuation_latency", "jitter")


def sensor_latencies(options: Mapping[str, Any]) -> dict[str, float]:
    """latency.<sensor>=SECONDS of a verb's options, as floats (not removed): what the simulated arm injects and
    the runtime or a recording compensates."""
    return {sensor: float(seconds) for sensor, seconds in (options.get("latency") or {}).items()}


def sim_robot_config(options: MutableMapping[str, Any], control_hz: float, what: str,
                     env_base: Mapping[str, Any] | None = None,
                     sensors: Mapping[str, list[str]] | None = None) -> SimRobotConfig:
    """The simulated arm from the options every verb takes, popped from `options`: env.* (over `env_base`; env.name
    is required), sensors.<sensor>=[keys] (over `sensors`), latency.<sensor>, actuation_latency and jitter
    (seconds). `what` names the verb in the error for a missing simulator."""
    env = {**(env_base or {}), **(options.pop("env", None) or {})}
    if "name" not in env:
        raise ValueError(f"{what} needs its simulator: env.name=robosuite env.task=Lift (and env.* options)")
    latency = sensor_latencies(options)
    options.pop("latency", None)
    return SimRobotConfig(env=env, sensors=dict(options.pop("sensors", None) or sensors or {}), latency=latency,
                          actuation_latency=float(options.pop("actuation_latency", 0.0)),
                          jitter=float(options.pop("jitter", 0.0)), control_hz=float(control_hz))


def open_sim_robot(options: MutableMapping[str, Any], robot_options: Mapping[str, Any], control_hz: float,
                   client: str) -> SimRobot:
    """robot=sim for a verb that records or calibrates: the arm from `options` (see sim_robot_config), scenes that
    do not end on their own."""
    if robot_options:
        raise ValueError(f"robot.{sorted(robot_options)[0]} is an option of robot=ros; robot=sim takes none")
    return SimRobot(sim_robot_config(options, control_hz, client, env_base={"max_steps": 10**6}))


def _simulate(config: SimRobotConfig, conn: Any) -> None:
    """The simulator process: commands in, delayed readings and status out, until "close"."""
    from robopolicy.envs.registry import make_env

    env = make_env(config.env)
    task = env.unwrapped
    dt = 1.0 / config.control_hz
    rng = np.random.default_rng(0)
    queue: list[tuple[float, np.ndarray]] = []  # commands not yet gone out, by send time
    in_flight: list[tuple[float, np.ndarray]] = []  # gone out, waiting for the actuation latency
    pending: list[tuple[float, int, str, dict[str, np.ndarray]]] = []
    order = itertools.count()
    obs = command = None
    running, stopped, steps = False, False, 0
    conn.send(("ready",))
    next_tick = time.monotonic()
    while True:
        while conn.poll():
            message = conn.recv()
            kind = message[0]
            if kind == "close":
                env.close()
                return
            if kind == "reset":
                obs, info = env.reset(seed=message[1])
                command, queue, in_flight, pending = task.hold_action(obs, None), [], [], []
                running, stopped, steps = True, False, 0
                rng = np.random.default_rng(message[1])
                conn.send(("reset", time.monotonic()))
                next_tick = time.monotonic()
            elif kind == "send" and not stopped:
                queue = [(t, np.asarray(v, dtype=np.float32)) for t, v in message[1]]
            elif kind in ("hold", "stop") and obs is not None:
                queue, in_flight, command = [], [], task.hold_action(obs, command)
                stopped = stopped or kind == "stop"
        while pending and pending[0][0] <= time.monotonic():  # before stepping: a step's compute must not delay them
            _, _, sensor, values = heapq.heappop(pending)
            conn.send(("reading", sensor, time.monotonic(), values))
        now = time.monotonic()
        if running and now >= next_tick:
            applied_plan = None
            while queue and queue[0][0] < now + dt:
                in_flight.append(queue.pop(0))
            while in_flight and in_flight[0][0] + config.actuation_latency <= now + dt / 2:
                send_time, command = in_flight.pop(0)
                applied_plan = send_time + config.actuation_latency
            obs, _, _, truncated, info = env.step(command)
            steps += 1
            captured = next_tick + dt  # the state after a step of simulated time: one period after its slot
            by_sensor: dict[str, dict[str, np.ndarray]] = {}
            for key, value in obs.items():
                by_sensor.setdefault(config.sensor_of(key), {})[key] = value
            for sensor, values in by_sensor.items():
                delay = config.latency.get(sensor, 0.0) + abs(rng.normal(0.0, config.jitter))
                heapq.heappush(pending, (captured + delay, next(order), sensor, values))
            done = bool(info["is_success"]) or bool(truncated)
            conn.send(("status", {"steps": steps, "is_success": bool(info["is_success"]), "done": done,
                                  "applied": now, "planned": applied_plan}))
            running = not done
            next_tick += dt
        wake = min([next_tick if running else now + dt] + [p[0] for p in pending[:1]])
        time.sleep(max(0.0, min(wake - time.monotonic(), dt)))


class SimRobot:
    """RobotInterface over a simulator process; `reset(seed)` starts an episode, `status` tells how it goes."""

    def __init__(self, config: SimRobotConfig, start_timeout: float = 120.0):
        self.config = config
        context = mp.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_simulate, args=(config, child), daemon=True, name="sim-robot")
        self._process.start()
        try:
            self._expect("ready", start_timeout)
        except BaseException:
            self.close()
            raise
        self.status: dict[str, Any] = {"steps": 0, "is_success": False, "done": False}
        self.executed: list[tuple[float, float]] = []  # (applied, planned) per newly applied command
        self._readings: list[Reading] = []

    def _expect(self, kind: str, timeout: float) -> tuple:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._conn.poll(0.05):
                message = self._conn.recv()
                if message[0] == kind:
                    return message
                self._file(message)
            elif not self._process.is_alive():
                raise RuntimeError(f"the simulator process died (exit code {self._process.exitcode})")
        raise TimeoutError(f"the simulator did not answer {kind!r} within {timeout} s")

    def _file(self, message: tuple) -> None:
        if message[0] == "reading":
            self._readings.append(Reading(message[1], message[2], message[3]))
        elif message[0] == "status":
            self.status = message[1]
            if message[1]["planned"] is not None:
                self.executed.append((message[1]["applied"], message[1]["planned"]))

    def executed_errors(self) -> np.ndarray:
        """|applied - planned| in seconds for every command applied this episode (call poll() first)."""
        return np.abs([applied - planned for applied, planned in self.executed])

    def reset(self, seed: int) -> None:
        """Start an episode from `seed`; readings and statuses of the last one are dropped."""
        self._conn.send(("reset", int(seed)))
        self._expect("reset", 60.0)
        self._readings, self.executed = [], []
        self.status = {"steps": 0, "is_success": False, "done": False}

    def now(self) -> float:
        return time.monotonic()

    def poll(self, timeout: float = 0.0) -> Sequence[Reading]:
        """Readings received since the last poll, oldest first; waits up to `timeout` s when none is queued."""
        if timeout > 0 and not self._readings:
            self._conn.poll(timeout)
        while self._conn.poll():
            self._file(self._conn.recv())
        readings, self._readings = self._readings, []
        return readings

    def send(self, actions: Sequence[TimedAction]) -> None:
        self._conn.send(("send", [(a.time, np.asarray(a.value)) for a in actions]))

    def hold(self) -> None:
        self._conn.send(("hold",))

    def stop(self) -> None:
        self._conn.send(("stop",))

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("close",))
                self._process.join(10.0)
            except (BrokenPipeError, OSError):
                pass  # the simulator is gone or going: terminate below
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5.0)
        self._conn.close()

    def __enter__(self) -> SimRobot:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

