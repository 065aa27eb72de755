"""Raw video demonstrations (e.g. a hand-held gripper's camera) -> episode store.

A directory of episodes: `<name>.mp4` plus `<name>.csv` or `<name>.npz` with timestamped poses.
CSV columns: `timestamp` (seconds on the video's clock), `x y z qx qy qz qw` (the gripper pose),
`gripper_width`, and optionally `action_0 ... action_N`; an NPZ holds `timestamp` (N,), `pose`
(N, 7), `gripper_width` (N,) and optionally `action` (N, Da). Frames are sampled at `rate` Hz
by timestamp (the frame shown at each tick, within half a frame), across the span both the video
and the poses cover; positions and widths are interpolated linearly, rotations by slerp. Store
keys: `image` (T, H, W, 3) uint8, `eef_pos` (3), `eef_rot6d` (6), `gripper_width` (1), `action`.
Without recorded actions, `actions=absolute` makes each action the next tick's pose (xyz +
rot6d) and width, `actions=relative` the next tick's pose in the current pose's frame.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from robopolicy.datasets.convert.run import Episode, SkipEpisode
from robopolicy.datasets.convert.video import decode_at
from robopolicy.datasets.errors import DataError
from robopolicy.geometry import matrix_to_rot6d

POSE_COLUMNS = ("x", "y", "z", "qx", "qy", "qz", "qw")
ACTION_MODES = ("absolute", "relative")


def read_poses(path: Path) -> dict[str, np.ndarray]:
    """{"timestamp", "pose" (N, 7), "gripper_width", optional "action"} from a CSV or NPZ, in time order."""
    if path.suffix == ".npz":
        with np.load(path) as npz:
            table = {key: np.asarray(npz[key], dtype=np.float64) for key in npz.files}
    else:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise SkipEpisode(f"{path.name} has no rows")
        columns = rows[0].keys()
        missing = [c for c in ("timestamp", *POSE_COLUMNS, "gripper_width") if c not in columns]
        if missing:
            raise SkipEpisode(f"{path.name} lacks columns {missing}")
        number = lambda name: np.array([float(row[name]) for row in rows])  # noqa: E731
        table = {"timestamp": number("timestamp"), "pose": np.stack([number(c) for c in POSE_COLUMNS], axis=1),
                 "gripper_width": number("gripper_width")}
        actions = sorted((c for c in columns if c.startswith("action_")), key=lambda c: int(c.split("_")[1]))
        if actions:
            table["action"] = np.stack([number(c) for c in actions], axis=1)
    missing = [key for key in ("timestamp", "pose", "gripper_width") if key not in table]
    if missing:
        raise SkipEpisode(f"{path.name} lacks {missing}")
    order = np.argsort(table["timestamp"], kind="stable")
    return {key: value[order] for key, value in table.items()}


def relative_pose(position: np.ndarray, rotation: Rotation, index_from: np.ndarray,
                  index_to: np.ndarray) -> np.ndarray:
    """Poses `index_to` in the frames of poses `index_from`: (N, 9) xyz + rot6d."""
    inverse = rotation[index_from].inv()
    offset = inverse.apply(position[index_to] - position[index_from])
    return np.concatenate([offset, matrix_to_rot6d((inverse * rotation[index_to]).as_matrix())], axis=1)


class RawVideoSource:
    """Episodes of a directory of mp4 + pose files."""

    format = "video"
    lossy_video = True

    def __init__(self, root: str | Path, rate: float = 10.0, actions: str = "absolute",
                 resize: Sequence[int] | None = None):
        self.root = Path(root)
        self.location = str(self.root.resolve())
        if actions not in ACTION_MODES:
            raise ValueError(f"actions={actions!r}: use one of {ACTION_MODES}")
        videos = sorted(self.root.glob("*.mp4"))
        if not videos:
            raise DataError(str(self.root), "holds no .mp4 files", fix="one <name>.mp4 and <name>.csv/.npz per episode")
        self._episodes = {video.stem: video for video in videos}
        self.rate, self.actions, self.resize = float(rate), actions, tuple(resize) if resize else None
        self.attrs = {"fps": self.rate, "video": {"actions": actions}}
        self.splits: dict[str, list[str]] = {}

    def episode_ids(self) -> list[str]:
        return list(self._episodes)

    def _poses_file(self, name: str) -> Path:
        for suffix in (".npz", ".csv"):
            if (self.root / f"{name}{suffix}").is_file():
                return self.root / f"{name}{suffix}"
        raise SkipEpisode(f"no {name}.csv or {name}.npz beside {name}.mp4")

    def read(self, episode_id: str) -> Episode:
        import av

        video = self._episodes[episode_id]
        table = read_poses(self._poses_file(episode_id))
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate)
            duration = float(stream.frames / stream.average_rate) if stream.frames else float(container.duration / 1e6)
        if self.rate > fps + 1e-6:
            raise SkipEpisode(f"rate {self.rate} Hz is above the video's {fps:.2f} fps")
        start, end = table["timestamp"][0], min(table["timestamp"][-1], duration - 0.5 / fps)
        first = max(start, 0.0)
        ticks = np.minimum(first + np.arange(int(np.floor((end - first) * self.rate + 1e-6)) + 1) / self.rate, end)
        if len(ticks) < 2:
            raise SkipEpisode("the video and the poses overlap by less than two ticks")
        frames = decode_at(video, ticks, 0.5 / fps + 1e-6, self.resize)
        stamps, pose = table["timestamp"], table["pose"]
        position = np.stack([np.interp(ticks, stamps, pose[:, d]) for d in range(3)], axis=1)
        rotation = Slerp(stamps, Rotation.from_quat(pose[:, 3:]))(ticks)
        width = np.interp(ticks, stamps, table["gripper_width"])[:, None]
        data = {"image": frames, "eef_pos": position.astype(np.float32),
                "eef_rot6d": matrix_to_rot6d(rotation.as_matrix()).astype(np.float32),
                "gripper_width": width.astype(np.float32), "action": self._actions(table, ticks, position, rotation,
                                                                                  width)}
        return Episode(data, {key: ticks for key in data})

    def _actions(self, table: dict[str, np.ndarray], ticks: np.ndarray, position: np.ndarray, rotation: Rotation,
                 width: np.ndarray) -> np.ndarray:
        """Recorded actions (newest at or before each tick), else the next tick's pose and width."""
        if "action" in table:
            index = np.maximum(np.searchsorted(table["timestamp"], ticks + 1e-9, side="right") - 1, 0)
            return table["action"][index].astype(np.float32)
        now, following = np.arange(len(ticks)), np.minimum(np.arange(len(ticks)) + 1, len(ticks) - 1)
        if self.actions == "relative":
            target = relative_pose(position, rotation, now, following)
        else:
            target = np.concatenate([position[following], matrix_to_rot6d(rotation[following].as_matrix())], axis=1)
        return np.concatenate([target, width[following]], axis=1).astype(np.float32)
