"""robomimic HDF5 -> episode store.

Layout read: `data/demo_N/obs/<key>` (T, ...), `actions` (T, Da), `rewards` and `dones` (T,),
the `env_args` attribute of `data` (JSON: env name, type and kwargs) and `mask/<name>` filter
keys (lists of demo names). Store keys: the obs keys as named, `action`, `reward`, `done`; the
store keeps `env_args`, `fps` (the env's control_freq) and the filter keys as `splits`.
Task strings, where the file has them: a demo's `ep_meta` attribute (JSON, its `lang`: RoboCasa,
robomimic 0.5), else `data`'s `problem_info` attribute (JSON, its `language_instruction`: LIBERO).
The env name in `env_args` names a simulator task, not an instruction, and is not used as one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.datasets.convert.run import Episode, SkipEpisode
from robopolicy.datasets.errors import DataError


def _demo_number(name: str) -> int:
    return int(name.rpartition("_")[2])


def _json_attr(attrs: Any, name: str) -> dict[str, Any]:
    """An HDF5 attribute holding a JSON object, as a dict (empty when absent or not a JSON object)."""
    if name not in attrs:
        return {}
    raw = attrs[name]
    try:
        value = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """A non-blank string as a task, anything else as none."""
    return value if isinstance(value, str) and value.strip() else None


class RobomimicSource:
    """Demos of one robomimic HDF5 file, in demo-number order."""

    format = "robomimic"
    lossy_video = False

    def __init__(self, path: str | Path, keys: Sequence[str] | None = None):
        import h5py

        self.location = str(Path(path).resolve())
        try:
            self._file = h5py.File(path, "r")
        except OSError as error:
            raise DataError(str(path), f"not a readable HDF5 file ({error})",
                            fix="give a robomimic .hdf5 file (data/demo_N/obs, actions, ...)") from error
        if "data" not in self._file:
            raise DataError(str(path), "has no data group", key="data", fix="give a robomimic .hdf5 file")
        data = self._file["data"]
        self._demos = sorted((name for name in data if name.startswith("demo_")), key=_demo_number)
        if not self._demos:
            raise DataError(str(path), "has no demos", key="data/demo_N", fix="give a robomimic .hdf5 file")
        env_args = json.loads(data.attrs["env_args"]) if "env_args" in data.attrs else None
        control_freq = (env_args or {}).get("env_kwargs", {}).get("control_freq")
        self.attrs = {k: v for k, v in (("env_args", env_args), ("fps", control_freq)) if v is not None}
        masks = self._file["mask"] if "mask" in self._file else {}
        self.splits = {name: sorted((v.decode() if isinstance(v, bytes) else str(v) for v in masks[name][:]),
                                    key=_demo_number) for name in masks}
        self.keys = list(keys) if keys else None
        self._file_task = _text(_json_attr(data.attrs, "problem_info").get("language_instruction"))

    def episode_ids(self) -> list[str]:
        return self._demos

    def read(self, episode_id: str) -> Episode:
        demo = self._file["data"][episode_id]
        for required in ("obs", "actions"):
            if required not in demo:
                raise SkipEpisode(f"no {required}")
        obs = demo["obs"]
        keys = self.keys or sorted(obs)
        missing = [key for key in keys if key not in obs]
        if missing:
            raise SkipEpisode(f"no obs/{missing[0]} (it has {sorted(obs)})")
        data = {key: np.asarray(obs[key]) for key in keys}
        data["action"] = np.asarray(demo["actions"], dtype=np.float32)
        for name, key in (("rewards", "reward"), ("dones", "done")):
            if name in demo:
                data[key] = np.asarray(demo[name], dtype=np.float32)
        lengths = {key: len(value) for key, value in data.items()}
        if len(set(lengths.values())) != 1:
            raise SkipEpisode(f"arrays of different lengths {lengths}")
        return Episode(data, task=_text(_json_attr(demo.attrs, "ep_meta").get("lang")) or self._file_task)
