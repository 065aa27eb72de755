"""Episode stores -> one episode store: the demos of several tasks (or sessions) merged for one policy.

The source is one store or a directory of them (`*.zarr`, `*.zarr.zip`, merged in name order); every
episode is copied with its timestamps and its task string, so a multi-task store keeps which task each
episode shows. `task=TEXT` names the task of episodes whose store records none (a store of one task
recorded by another tool). Stores made by Diffusion Policy, UMI or DP3 are read as robopolicy reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.datasets.convert.run import Episode
from robopolicy.datasets.errors import DataError
from robopolicy.datasets.store import EpisodeStore
from robopolicy.datasets.zarr_io import looks_like_zarr_directory

KEPT_ATTRS = ("fps", "env")  # store attributes kept where every merged store has the same value


def _store_paths(path: Path) -> list[Path]:
    """The store at `path`, or the stores directly inside the directory `path`, in name order."""
    if looks_like_zarr_directory(str(path)) or path.name.endswith(".zarr.zip"):
        return [path]
    found = sorted(p for p in path.iterdir() if p.name.endswith((".zarr", ".zarr.zip"))) if path.is_dir() else []
    if not found:
        raise DataError(str(path), "is no episode store and holds none (*.zarr, *.zarr.zip)",
                        fix="give a store or a directory of stores")
    return found


class StoresSource:
    """Every episode of one store or of a directory of stores, as `<store name>/<episode index>`."""

    format = "zarr"
    lossy_video = False
    splits: dict[str, list[str]] = {}

    def __init__(self, path: str | Path, task: str | None = None):
        self.location = str(Path(path).resolve())
        self.stores = {p.name: EpisodeStore.open(p) for p in _store_paths(Path(path))}
        self._task = task
        self.attrs: dict[str, Any] = {}
        for key in KEPT_ATTRS:
            values = [store.attrs.get(key) for store in self.stores.values()]
            if values[0] is not None and all(value == values[0] for value in values):
                self.attrs[key] = values[0]
        fps = {name: store.fps for name, store in self.stores.items() if store.fps is not None}
        if len(set(fps.values())) > 1:
            raise DataError(self.location, f"the stores were recorded at different rates {fps}",
                            fix="merge stores of one rate (resample the others first)")

    def episode_ids(self) -> list[str]:
        return [f"{name}/{index}" for name, store in self.stores.items() for index in range(store.n_episodes)]

    def read(self, episode_id: str) -> Episode:
        name, _, index = episode_id.rpartition("/")
        store, episode = self.stores[name], int(index)
        rows = store.episode_slice(episode)
        data = {key: store.read(key, rows.start, rows.stop) for key in store.keys}
        timestamps = {key: np.asarray(stamps[rows.start : rows.stop]) for key in store.keys
                      if (stamps := store.timestamps(key)) is not None}
        return Episode(data, timestamps, store.episode_tasks[episode] or self._task)

