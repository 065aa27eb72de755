"""LeRobot datasets (format v2.0 / v2.1 and v3.0) -> episode store.

v2.x: `meta/info.json`, `meta/episodes.jsonl`, one parquet per episode
(`data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet`) and one mp4 per episode
and camera. v3.0: parquet and mp4 files hold many episodes; `meta/episodes/*/*.parquet` gives
each episode's data file and, per camera, its video file and from/to timestamps. The paths come
from info.json's templates. Tabular features become low-dim keys (float32, or their dtype),
`video` features uint8 (T, H, W, 3) image keys decoded with PyAV, `image` features (PNG/JPEG
bytes in the parquet) likewise; every key gets the parquet `timestamp` as capture times. Each
video frame must lie within `tolerance_s` of its row's time (video start + timestamp); an
episode whose video is missing, short, or has dropped frames is reported and skipped.
Feature names are kept as store keys (e.g. `observation.state`); point shape_meta `source:` at them.
Each episode's task string is the first of its metadata's `tasks` list (v2.x `meta/episodes.jsonl`,
v3.0 `meta/episodes/*/*.parquet`: the task strings themselves, as `meta/tasks.*` lists them).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.datasets.convert.run import Episode, SkipEpisode
from robopolicy.datasets.convert.video import decode_at
from robopolicy.datasets.errors import DataError

log = logging.getLogger(__name__)
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
VERSIONS = ("v2.0", "v2.1", "v3.0")


def _column(table: Any, name: str, dtype: str) -> np.ndarray:
    """A parquet column of scalars or fixed-length lists -> (T,) or (T, D) numpy."""
    import pyarrow as pa

    column = table.column(name).combine_chunks()
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(dtype)
    return column.to_numpy(zero_copy_only=False).astype(dtype).reshape(len(column), -1)


def _decode_images(cells: list[Any], size: Sequence[int] | None) -> np.ndarray:
    """LeRobot `image` cells ({"bytes": PNG/JPEG, ...}) -> (T, H, W, 3) uint8."""
    from PIL import Image

    frames = []
    for cell in cells:
        with Image.open(io.BytesIO(cell["bytes"])) as image:
            image = image.convert("RGB")
            if size is not None:
                image = image.resize((int(size[1]), int(size[0])), Image.BILINEAR)
            frames.append(np.asarray(image))
    return np.stack(frames)


class LeRobotSource:
    """Episodes of a LeRobot dataset directory."""

    format = "lerobot"

    def __init__(self, root: str | Path, resize: Sequence[int] | None = None, tolerance_s: float | None = None):
        self.root = Path(root)
        self.location = str(self.root.resolve())
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DataError(str(self.root), "has no meta/info.json", key="meta/info.json",
                            fix="give the root of a LeRobot dataset (meta/, data/, videos/)")
        self.info = json.loads(info_path.read_text())
        self.version = self.info.get("codebase_version")
        if self.version not in VERSIONS:
            raise DataError(str(info_path), f"codebase_version {self.version!r} is not supported",
                            key="codebase_version", fix=f"convert it with LeRobot to one of {VERSIONS}")
        self.fps = float(self.info["fps"])
        self.resize = tuple(resize) if resize else None
        self.tolerance = tolerance_s if tolerance_s is not None else 0.1 / self.fps
        features = self.info["features"]
        self.videos = [k for k, f in features.items() if f["dtype"] == "video"]
        self.images = [k for k, f in features.items() if f["dtype"] == "image"]
        self.tabular = {k: f["dtype"] for k, f in features.items()
                        if f["dtype"] not in ("video", "image", "string") and k not in BOOKKEEPING}
        self.lossy_video = bool(self.videos) and not self.images  # PNG `image` features are lossless
        self.episodes = self._episode_table()
        self._last_table: tuple[Path, Any] | None = None
        self.attrs = {"fps": self.fps, "lerobot": {k: self.info.get(k) for k in
                                                   ("codebase_version", "robot_type", "features")}}
        self.splits = self._splits()

    def _episode_table(self) -> dict[str, dict[str, Any]]:
        """Each episode's metadata row by id (its episode_index)."""
        if self.version == "v3.0":
            import pyarrow.parquet as pq

            files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
            if not files:
                raise DataError(str(self.root), "has no episode metadata", key="meta/episodes/*/*.parquet",
                                fix="a v3.0 dataset lists its episodes there")
            rows = [row for path in files for row in pq.read_table(path).to_pylist()]
        else:
            path = self.root / "meta" / "episodes.jsonl"
            if not path.is_file():
                raise DataError(str(self.root), "has no episode list", key="meta/episodes.jsonl",
                                fix="a v2.x dataset lists its episodes there")
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return {str(row["episode_index"]): row for row in sorted(rows, key=lambda r: r["episode_index"])}

    def _splits(self) -> dict[str, list[str]]:
        """info.json's splits ("train": "0:40") as episode ids."""
        splits = {}
        for name, span in (self.info.get("splits") or {}).items():
            start, _, stop = str(span).partition(":")
            splits[name] = [i for i in self.episodes if int(start) <= int(i) < int(stop)]
        return splits

    def episode_ids(self) -> list[str]:
        return list(self.episodes)

    def _task(self, episode_id: str) -> str | None:
        """The episode's task string: the first its metadata lists (LeRobot keeps one per episode in practice)."""
        tasks = self.episodes[episode_id].get("tasks")
        tasks = [tasks] if isinstance(tasks, str) else [t for t in tasks or [] if isinstance(t, str) and t]
        if len(tasks) > 1:
            log.info("lerobot episode %s lists %d tasks; its first, %r, is kept", episode_id, len(tasks), tasks[0])
        return tasks[0] if tasks else None

    def _rows(self, episode_id: str) -> Any:
        """The episode's parquet rows, in frame order."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        meta, index = self.episodes[episode_id], int(episode_id)
        if self.version == "v3.0":
            path = self.root / self.info["data_path"].format(chunk_index=meta["data/chunk_index"],
                                                             file_index=meta["data/file_index"])
        else:
            path = self.root / self.info["data_path"].format(episode_chunk=index // self.info["chunks_size"],
                                                             episode_index=index)
        if not path.is_file():
            raise SkipEpisode(f"data file {path} is missing")
        if self._last_table is None or self._last_table[0] != path:  # v3.0 files hold many episodes: read once
            try:
                self._last_table = (path, pq.read_table(path))
            except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
                raise SkipEpisode(f"data file {path} cannot be read ({error})") from error
        table = self._last_table[1]
        table = table.filter(pc.equal(table.column("episode_index"), index))
        table = table.take(pc.sort_indices(table, [("frame_index", "ascending")]))
        if len(table) == 0:
            raise SkipEpisode(f"{path} has no rows of episode {index}")
        if "length" in meta and len(table) != meta["length"]:
            raise SkipEpisode(f"{path} has {len(table)} rows of episode {index}, its metadata says {meta['length']}")
        return table

    def _video(self, episode_id: str, key: str) -> tuple[Path, float]:
        """(mp4 path, time of the episode's first frame in it)."""
        meta, index = self.episodes[episode_id], int(episode_id)
        if self.version == "v3.0":
            path = self.info["video_path"].format(video_key=key, chunk_index=meta[f"videos/{key}/chunk_index"],
                                                  file_index=meta[f"videos/{key}/file_index"])
            return self.root / path, float(meta[f"videos/{key}/from_timestamp"])
        path = self.info["video_path"].format(episode_chunk=index // self.info["chunks_size"], video_key=key,
                                              episode_index=index)
        return self.root / path, 0.0

    def read(self, episode_id: str) -> Episode:
        table = self._rows(episode_id)
        times = table.column("timestamp").to_numpy().astype(np.float64)
        if np.any(np.diff(times) <= 0):
            raise SkipEpisode("its timestamps do not increase")
        data = {key: _column(table, key, "float32" if dtype.startswith("float") else dtype)
                for key, dtype in self.tabular.items()}
        for key in self.images:
            data[key] = _decode_images(table.column(key).to_pylist(), self.resize)
        for key in self.videos:
            path, start = self._video(episode_id, key)
            data[key] = decode_at(path, start + times, self.tolerance, self.resize)
        return Episode(data, {key: times for key in data}, task=self._task(episode_id))
