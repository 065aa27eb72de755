"""rosbags (ROS 1 `.bag`, ROS 2 `.db3` / `.mcap` bag directories) -> episode store, via the pure-Python
`rosbags` library.

The topics and fields come from a robot topic map (`configs/robot/`, the bridge's): each
observation binding gives a store key, and the commands give `action` (a pose target becomes
xyz + rot6d or quaternion, a JointTrajectory the position of its point active at that time).
One frame per tick: every message of the `reference` topic (default: the first observation
topic), or ticks at `rate` Hz from its first message. Every other topic is sampled at its
newest message at or before the tick (by header.stamp, else the time it was logged), which must
be at most `max_age` old (commands: the newest one stands until the next); ticks before every
topic, commands included, has spoken are trimmed, and a later gap drops
the episode with the topic and time named. Episodes are bags (a directory of bags gives one
each), or, with `split_topic`, the spans between that topic's messages.
A bag that recorded no commands (only joint states, say) takes `action_from=KEY`, a low-dim
observation key of the map: the action of tick t is that key's value at tick t + 1, and the last
tick's action is its own value (as the raw-video source derives actions from the next pose); the
map's commands are then not read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.datasets.convert.run import Episode, SkipEpisode
from robopolicy.datasets.errors import DataError
from robopolicy.ros.binding import read_binding
from robopolicy.ros.convert import (
    pose_to_action,
    stamp_seconds,
    trajectory_to_arrays,
)
from robopolicy.ros.topic_map import CommandTopic, TopicMap, load_topic_map, topic_map_path

log = logging.getLogger(__name__)
ACTION_FROM_TYPES = ("joint_state", "pose")  # observation types whose values can be actions
EPSILON = 1e-6  # seconds: a stamp this close after a tick counts as at it (float sums of stamps and durations)


@dataclass
class Stream:
    """One topic's messages in time order."""

    times: np.ndarray
    messages: list[Any]

    def newest(self, ticks: np.ndarray) -> np.ndarray:
        """Index of the newest message at or before each tick (-1: none yet)."""
        return np.searchsorted(self.times, np.asarray(ticks) + EPSILON, side="right") - 1


def _message_time(msg: Any, logged_ns: int) -> float:
    header = getattr(msg, "header", None)
    stamp = stamp_seconds(header.stamp) if header is not None else 0.0
    return stamp if stamp > 0 else logged_ns / 1e9


def _is_bag(path: Path) -> bool:
    return path.suffix == ".bag" or (path.is_dir() and (path / "metadata.yaml").is_file())


def _check_action_source(topic_map: TopicMap, where: str, action_from: str | None) -> None:
    """Actions come from the map's commands or from an observation key (action_from); refuse neither or a bad key."""
    low_dim = sorted(k for k, b in topic_map.observations.items() if b.type in ACTION_FROM_TYPES)
    if action_from is None:
        if not topic_map.commands:
            raise DataError(where, "has no commands, so the bag gives no actions", key="commands",
                            fix="list the topics that carried the robot's targets under commands:, or pass "
                                "action_from=KEY to take each step's action from the next step's KEY "
                                f"(one of {low_dim})")
        return
    binding = topic_map.observations.get(action_from)
    if binding is None or binding.type not in ACTION_FROM_TYPES:
        problem = "binds no such key" if binding is None else f"binds it to a {binding.type}, not a low-dim value"
        raise DataError(where, f"action_from={action_from!r}: the map {problem}", key=f"observations.{action_from}",
                        fix=f"give one of its joint_state or pose keys: {low_dim}")
    if topic_map.commands:
        log.info("action_from=%s: actions are %s one tick later; the map's commands are not read", action_from,
                 action_from)


def next_step(values: np.ndarray) -> np.ndarray:
    """(T, D) -> each step's next value as float32 actions; the last step keeps its own."""
    following = np.minimum(np.arange(len(values)) + 1, len(values) - 1)
    return np.asarray(values[following], dtype=np.float32)


class RosbagSource:
    """Episodes from ROS 1 / ROS 2 bags through a topic map."""

    format = "rosbag"
    lossy_video = False

    def __init__(self, path: str | Path, map: str, rate: float | None = None, reference: str | None = None,
                 max_age: float = 0.1, split_topic: str | None = None, action_from: str | None = None):
        self.path = Path(path)
        self.location = str(self.path.resolve())
        self.map = load_topic_map(map)
        _check_action_source(self.map, str(topic_map_path(map)), action_from)
        self.action_from = action_from
        self.commands = () if action_from else self.map.commands
        self.bags = [self.path] if _is_bag(self.path) else sorted(p for p in self.path.glob("*") if _is_bag(p))
        if not self.bags:
            raise DataError(str(self.path), "is not a bag and holds none",
                            fix="give a ROS 1 .bag file, a ROS 2 bag directory (metadata.yaml), or a directory of them")
        self.rate, self.max_age, self.split_topic = rate, max_age, split_topic
        self.sensed = self.map.sensed_topics()
        self.spoken = sorted(set(self.map.by_topic()) - set(self.sensed))  # instruction topics
        self.reference = reference or next(iter(self.sensed))
        self.topics = sorted({*self.map.by_topic(), *(c.topic for c in self.commands), self.reference})
        self.attrs = {"topic_map": asdict(self.map), **({"fps": rate} if rate else {}),
                      **({"action_from": action_from} if action_from else {})}
        self.splits: dict[str, list[str]] = {}
        self._spans = {bag.name: self._episode_spans(bag) for bag in self.bags}
        self._ids = [f"{bag.name}#{part}" for bag in self.bags for part in range(len(self._spans[bag.name]))]
        self._last: tuple[Path, dict[str, Stream]] | None = None  # a split bag is read once for all its episodes

    def _read(self, bag: Path, topics: Sequence[str]) -> dict[str, Stream]:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        try:
            with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
                present = {c.topic for c in reader.connections}
                missing = sorted(set(topics) - present - set(self.spoken))  # an instruction topic is optional
                if missing:
                    raise SkipEpisode(f"{bag.name} has no {missing} (it has {sorted(present)})")
                rows: dict[str, list[tuple[float, Any]]] = {topic: [] for topic in topics}
                connections = [c for c in reader.connections if c.topic in rows]
                for connection, logged, raw in reader.messages(connections=connections):
                    msg = reader.deserialize(raw, connection.msgtype)
                    rows[connection.topic].append((_message_time(msg, logged), msg))
        except SkipEpisode:
            raise
        except Exception as error:  # noqa: BLE001 - rosbags raises many types for a bad file
            raise SkipEpisode(f"{bag.name} cannot be read ({error!r})") from error
        streams = {}
        for topic, items in rows.items():
            items.sort(key=lambda item: item[0])
            streams[topic] = Stream(np.array([t for t, _ in items]), [m for _, m in items])
        return streams

    def _episode_spans(self, bag: Path) -> list[tuple[float, float]]:
        """[start, end) of each episode in the bag: the whole bag, or between split-topic messages."""
        if self.split_topic is None:
            return [(-np.inf, np.inf)]
        try:
            marks = self._read(bag, [self.split_topic])[self.split_topic].times
        except SkipEpisode as reason:
            raise DataError(str(bag), str(reason), key=self.split_topic, fix="check split_topic") from reason
        return list(zip(marks, [*marks[1:], np.inf], strict=True))

    def episode_ids(self) -> list[str]:
        return self._ids

    def read(self, episode_id: str) -> Episode:
        name, _, part = episode_id.rpartition("#")
        bag = next(b for b in self.bags if b.name == name)
        start, end = self._spans[name][int(part)]
        if self._last is None or self._last[0] != bag:
            self._last = (bag, self._read(bag, self.topics))
        streams = self._last[1]
        ticks = self._ticks(streams[self.reference], start, end)
        chosen = {topic: streams[topic].newest(ticks) for topic in self.topics}
        fresh = {topic: self._fresh(streams[topic], chosen[topic], ticks) for topic in self.sensed}
        # a recording usually starts before the first command: those ticks have no action yet
        commanded = [] if self.action_from else [chosen[c.topic] >= 0 for c in self.commands]
        every = np.all([*fresh.values(), *commanded], axis=0)
        if not every.any():
            after = "" if self.action_from else " after the first command"
            raise SkipEpisode(f"no tick in {episode_id} has a fresh message of every topic (max_age {self.max_age} s)"
                              f"{after}")
        first = int(np.argmax(every))  # ticks before every topic (commands included) has spoken are trimmed
        for topic, ok in fresh.items():
            if not ok[first:].all():
                tick = ticks[first + int(np.argmin(ok[first:]))]
                raise SkipEpisode(f"{topic} has no message in the {self.max_age} s before {tick:.3f} s")
        ticks = ticks[first:]
        data = {}
        for topic, bindings in self.sensed.items():
            messages = [streams[topic].messages[i] for i in chosen[topic][first:]]
            for binding in bindings:
                try:
                    data[binding.key] = np.stack([read_binding(binding, msg) for msg in messages])
                except (AttributeError, KeyError, ValueError) as error:
                    raise SkipEpisode(f"{topic} does not read as a {binding.type} for {binding.key}: {error!r}") from error
        if self.action_from:
            data["action"] = next_step(data[self.action_from])
        else:
            parts = [self._command(command, streams[command.topic], ticks) for command in self.commands]
            data["action"] = np.concatenate(parts, axis=1)
        return Episode(data, {key: ticks for key in data}, self._instruction(streams, ticks))

    def _instruction(self, streams: dict[str, Stream], ticks: np.ndarray) -> str | None:
        """The episode's task: the newest message of the map's instruction topic (type string) by its last tick."""
        for topic in self.spoken:
            index = int(streams[topic].newest(ticks[-1:])[0])
            if index >= 0:
                return str(streams[topic].messages[index].data)
        return None

    def _ticks(self, reference: Stream, start: float, end: float) -> np.ndarray:
        times = reference.times[(reference.times >= start) & (reference.times < end)]
        if len(times) == 0:
            raise SkipEpisode(f"no {self.reference} message in this episode")
        if self.rate is None:
            return times
        count = int(np.floor((times[-1] - times[0]) * self.rate + 1e-6)) + 1
        return times[0] + np.arange(count) / self.rate  # offsets first: stamps near 1.8e9 s have 0.2 us steps

    def _fresh(self, stream: Stream, chosen: np.ndarray, ticks: np.ndarray) -> np.ndarray:
        if not len(stream.times):
            return np.zeros(len(ticks), bool)
        return (chosen >= 0) & (ticks - stream.times[np.maximum(chosen, 0)] <= self.max_age)

    def _command(self, command: CommandTopic, stream: Stream, ticks: np.ndarray) -> np.ndarray:
        """(T, dims) action part of one command topic at each tick."""
        start, stop = command.action_dims
        chosen = stream.newest(ticks)
        if (chosen < 0).any():
            first = ticks[int(np.argmax(chosen < 0))]
            raise SkipEpisode(f"{command.topic} has no command before {first:.3f} s")
        if command.type == "pose":
            return np.stack([pose_to_action(stream.messages[i], stop - start) for i in chosen])
        plans = [(i, trajectory_to_arrays(msg)) for i, msg in enumerate(stream.messages) if msg.points]
        if not plans:  # only "stop here" messages: nothing was commanded
            raise SkipEpisode(f"{command.topic} carries no trajectory points")
        stream = Stream(stream.times[[i for i, _ in plans]], [plan for _, plan in plans])
        chosen = np.maximum(stream.newest(ticks), 0)
        rows = []
        for tick, index in zip(ticks, chosen, strict=True):
            times, positions = stream.messages[index]
            active = max(0, int(np.searchsorted(times, tick + EPSILON, side="right")) - 1)
            rows.append(positions[active])
        return np.asarray(rows, dtype=np.float32)
