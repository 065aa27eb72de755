"""`robopolicy record`: teleoperated demonstrations from any RobotInterface into an episode store.

Every control period the loop files the robot's new readings, each key with its capture time
(receive time minus its sensor's configured latency), and sends the teleop source's action for
that period. An episode ends when the operator ends it, the simulated task ends, or max_seconds
pass; then the source's verdict decides: keep appends it (atomically: a crash or Ctrl-C loses
at most the episode in progress), discard drops it, redo drops it and records the same seed
again. On save every key is resampled to the control ticks: its newest capture at or before
each tick (ticks before every key has one are trimmed), with that capture's true time kept as
the key's timestamp. Recording into an existing store resumes it: `episodes` is the total.

robot=sim drives the simulated arm (env.*, latency.<sensor>, sensors.<sensor>=[keys],
actuation_latency, jitter); robot=ros a ROS robot through the bridge (robot.map=NAME).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.datasets.store import EPISODE_TASKS_ATTR, EpisodeStore
from robopolicy.progress import progress
from robopolicy.robots.interface import RobotInterface, TimedAction
from robopolicy.robots.kinds import open_robot, split_robot
from robopolicy.robots.sim import sensor_latencies
from robopolicy.robots.teleop import KEYBOARD_HELP, VERDICTS, Teleop, make_teleop
from robopolicy.settings import build_settings, parse_overrides

log = logging.getLogger(__name__)
RECORD_ATTR = "record"


@dataclass
class RecordConfig:
    """What to record and how."""

    out: str = ""
    robot: str = "sim"
    teleop: str = "scripted"
    episodes: int = 1  # total in the store (a resumed store counts its episodes)
    control_hz: float = 20.0
    max_seconds: float = 60.0
    seed_start: int = 0  # robot=sim: the scene of the first episode
    pose_keys: tuple[str, str] = ("robot0_eef_pos", "robot0_eef_rot6d")


Streams = dict[str, list[tuple[float, np.ndarray | str]]]  # an instruction reading holds its text


def _file(robot: RobotInterface, latency: Mapping[str, float], streams: Streams) -> None:
    for reading in robot.poll():
        captured = reading.received - latency.get(reading.sensor, 0.0)
        for key, value in reading.values.items():
            streams.setdefault(key, []).append((captured, value if isinstance(value, str) else np.asarray(value)))


def split_instruction(streams: Streams) -> str | None:
    """Take the instruction out of the streams (a text reading, such as a ROS topic map's `type: string` topic):
    the episode's task is the last one given, and it is no data key."""
    spoken = [key for key, rows in streams.items() if rows and isinstance(rows[-1][1], str)]
    task = None
    for key in spoken:
        task = streams.pop(key)[-1][1]
    return task


def _pose(robot: RobotInterface, latency: Mapping[str, float], streams: Streams, keys: Sequence[str],
          timeout: float = 10.0) -> np.ndarray:
    """The arm's newest pose (xyz + rot6d), waiting for it."""
    deadline = time.monotonic() + timeout
    while not all(streams.get(k) for k in keys):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no reading of {list(keys)} within {timeout} s: set pose_keys to the robot's "
                               f"pose keys (it sends {sorted(streams)})")
        time.sleep(0.005)
        _file(robot, latency, streams)
    return np.concatenate([streams[k][-1][1] for k in keys])


def record_episode(robot: RobotInterface, teleop: Teleop, options: RecordConfig, latency: Mapping[str, float],
                   task_done: Callable[[], bool]) -> tuple[Streams, np.ndarray, np.ndarray]:
    """Drive the robot from the teleop source: (readings by key, tick times, actions)."""
    dt = 1.0 / options.control_hz
    streams: Streams = {}
    teleop.begin(_pose(robot, latency, streams, options.pose_keys))
    ticks, actions = [], []
    start = next_tick = robot.now()
    while not (teleop.finished() or task_done() or robot.now() - start > options.max_seconds):
        _file(robot, latency, streams)
        now = robot.now()
        action = teleop.step(dt)
        robot.send([TimedAction(now, action)])
        ticks.append(now)
        actions.append(action)
        next_tick += dt
        time.sleep(max(0.0, next_tick - robot.now()))
    robot.hold()
    settle = robot.now() + max(latency.values(), default=0.0) + dt  # readings captured before the last tick
    while robot.now() < settle:
        _file(robot, latency, streams)
        time.sleep(0.005)
    _file(robot, latency, streams)
    return streams, np.array(ticks), np.array(actions, dtype=np.float32)


def resample(streams: Streams, ticks: np.ndarray, actions: np.ndarray) -> tuple[dict, dict]:
    """(data, timestamps) at the control ticks: each key's newest capture at or before each tick."""
    chosen = {}
    for key, rows in streams.items():
        times = np.array([t for t, _ in rows])
        order = np.argsort(times, kind="stable")
        times = times[order]
        chosen[key] = (times, [rows[i][1] for i in order], np.searchsorted(times, ticks, side="right") - 1)
    covered = np.all([index >= 0 for _, _, index in chosen.values()], axis=0)
    if not covered.any():
        raise ValueError("no control tick came after a reading of every key")
    first = int(np.argmax(covered))
    data = {key: np.stack([values[i] for i in index[first:]]) for key, (_, values, index) in chosen.items()}
    timestamps = {key: times[index[first:]] for key, (times, _, index) in chosen.items()}
    data["action"], timestamps["action"] = actions[first:], ticks[first:]
    return data, timestamps


def _open_store(options: RecordConfig, settings: dict[str, Any]) -> tuple[EpisodeStore, int]:
    """The store to record into and the next seed: a new one, or an earlier recording to resume."""
    out = Path(options.out)
    if out.exists():
        store = EpisodeStore.open(out, mode="a")
        if RECORD_ATTR not in store.attrs:
            raise ValueError(f"{out} exists and was not written by robopolicy record: choose a new out=")
        return store, int(store.attrs[RECORD_ATTR]["next_seed"])
    attrs = {"fps": options.control_hz, RECORD_ATTR: {**settings, "next_seed": options.seed_start}}
    return EpisodeStore.create(out, attrs=attrs), options.seed_start


def record(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """`robopolicy record out=DIR robot=sim|ros teleop=scripted|keyboard|spacemouse episodes=N ...`."""
    kind, robot_options, rest = split_robot(overrides)
    values = {**parse_overrides(rest), "robot": kind}
    teleop_options = values.pop("teleop_options", None) or {}
    latency = sensor_latencies(values)  # compensated here, and injected by the simulated arm (which takes them)
    options = build_settings(RecordConfig, {k: values.pop(k) for k in list(values)
                                             if k in RecordConfig.__dataclass_fields__}, "record")
    if not options.out:
        raise ValueError("record needs out=DIR: the episode store to write (or to resume)")
    teleop = make_teleop(options.teleop, teleop_options)
    robot = open_robot(kind, values, robot_options, options.control_hz, "record")
    values.pop("latency", None)  # a ROS robot's: compensated only
    try:
        if values:
            raise ValueError(f"unknown record options {sorted(values)}")
        if options.teleop == "keyboard":
            log.info("keyboard teleop: %s", KEYBOARD_HELP)
        return _record_episodes(robot, teleop, options, latency)
    finally:
        getattr(teleop, "close", lambda: None)()
        robot.close()
        if options.robot == "ros":
            robot.transport.shutdown("robopolicy record done")


def _record_episodes(robot: Any, teleop: Teleop, options: RecordConfig, latency: dict[str, float]) -> dict:
    """Episodes until the store holds `options.episodes`; the store's attrs carry the next seed."""
    store, seed = _open_store(options, {**asdict(options), "latency": latency})
    simulated = hasattr(robot, "reset")
    task_done = (lambda: bool(robot.status["done"])) if simulated else (lambda: False)
    verdicts = dict.fromkeys(VERDICTS, 0)
    task = None  # the operator's instruction holds until replaced (a latched topic sends it once)
    bar = progress(None, desc="record", total=options.episodes)
    bar.update(store.n_episodes)
    while store.n_episodes < options.episodes:
        if simulated:
            robot.reset(seed)
        streams, ticks, actions = record_episode(robot, teleop, options, latency, task_done)
        verdict = teleop.verdict()
        verdicts[verdict] += 1
        task = split_instruction(streams) or task
        if verdict == "keep" and len(ticks):
            data, timestamps = resample(streams, ticks, actions)
            store.append_episode(data, timestamps)
            if task is not None or EPISODE_TASKS_ATTR in store.attrs:
                store.update_attrs({EPISODE_TASKS_ATTR: [*store.episode_tasks[:-1], task]})
            bar.update(1)
        seed += verdict != "redo"
        store.update_attrs({RECORD_ATTR: {**store.attrs[RECORD_ATTR], "next_seed": seed}})
        log.info("episode %s (%d ticks); the store has %d", verdict, len(ticks), store.n_episodes)
    return {"out": options.out, "episodes": store.n_episodes, "steps": store.n_steps, "verdicts": verdicts,
            "keys": store.keys}
