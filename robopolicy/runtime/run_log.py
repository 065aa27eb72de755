"""The run log of a deployment: one episode store, one episode per run, appended as each run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.datasets.store import EpisodeStore

# per-tick values the runtime reports (RunStats.ticks), each a float64 array stamped with the tick times
TICK_KEYS = ("time", "jitter", "work", "obs_time", "action_time", "obs_age", "planned", "held", "sent", "dropped")


class RunLog:
    """The run log store, one episode per run appended as soon as the run ends (a crash keeps the runs before)."""

    def __init__(self, path: Path, attrs: dict[str, Any]):
        self.store = EpisodeStore.create(path, overwrite=True, attrs=attrs)

    def append(self, ticks: list[dict[str, float]]) -> None:
        """The per-tick arrays of one run, stamped with the tick times."""
        if ticks:
            data = {key: np.array([t[key] for t in ticks], dtype=np.float64) for key in TICK_KEYS}
            self.store.append_episode(data, timestamps={key: data["time"] for key in TICK_KEYS})
