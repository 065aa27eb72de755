"""One conversion loop for every source format: resumable, with a progress bar and a drop report.

A source lists its episodes in a fixed order and reads one at a time. Each episode is appended
to the store atomically and then recorded in the store's `converted_from` attribute (appended
with its store index, or dropped with the reason). A killed conversion resumes: recorded
episodes are not read again, and the one episode an interruption can leave appended but not yet
recorded is the first unrecorded one in the source's order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.store import EpisodeStore
from robopolicy.datasets.zarr_io import looks_like_zarr_directory
from robopolicy.progress import progress

log = logging.getLogger(__name__)
CONVERTED_ATTR = "converted_from"


class SkipEpisode(Exception):
    """An episode the source cannot give whole; it is reported with this reason, never padded."""


@dataclass
class Episode:
    """One episode in store layout: (T, ...) arrays by key and (T,) capture times for some keys."""

    data: dict[str, np.ndarray]
    timestamps: dict[str, np.ndarray] = field(default_factory=dict)


class Source(Protocol):
    """A demonstration source: its episodes by id, and the metadata the store keeps."""

    format: str
    location: str
    attrs: dict[str, Any]  # store attributes: fps, env metadata, ...
    splits: dict[str, list[str]]  # named subsets of episode ids (e.g. train / valid)

    def episode_ids(self) -> Sequence[str]:
        """Every episode's id, in the order they are converted."""

    def read(self, episode_id: str) -> Episode:
        """The episode in store layout; raises SkipEpisode when it cannot be read whole."""


def _open_or_create(source: Source, out: Path, overwrite: bool, zarr_format: int, image_codec: str,
                    image_quality: int | None) -> EpisodeStore:
    if looks_like_zarr_directory(str(out)) and not overwrite:
        store = EpisodeStore.open(out, mode="a")
        record = store.attrs.get(CONVERTED_ATTR)
        if record is None or (record["format"], record["source"]) != (source.format, source.location):
            raise DataError(str(out), f"exists and was not converted from {source.format} {source.location}",
                            fix="choose a new OUT, or pass overwrite=true to replace it")
        return store
    attrs = {**source.attrs, CONVERTED_ATTR: {"format": source.format, "source": source.location, "episodes": []}}
    return EpisodeStore.create(out, zarr_format=zarr_format, overwrite=overwrite, attrs=attrs,
                               image_codec=image_codec, image_quality=image_quality)


def _recover(store: EpisodeStore, ids: Sequence[str], records: list[dict[str, Any]]) -> None:
    """Record the one episode an interruption may have appended after the last record."""
    appended = sum(r["index"] is not None for r in records)
    if store.n_episodes == appended:
        return
    done = {r["id"] for r in records}
    pending = [i for i in ids if i not in done]
    if store.n_episodes != appended + 1 or not pending:
        raise DataError(store.path, f"holds {store.n_episodes} episodes but its conversion record lists {appended}",
                        key=f"attrs/{CONVERTED_ATTR}", fix="convert again with overwrite=true")
    log.info("%s: episode %s was appended before an interruption; recorded now", store.path, pending[0])
    records.append({"id": pending[0], "index": store.n_episodes - 1, "dropped": None})


def _save(store: EpisodeStore, records: list[dict[str, Any]]) -> None:
    record = dict(store.attrs[CONVERTED_ATTR])
    record["episodes"] = records
    store.update_attrs({CONVERTED_ATTR: record})


def convert_source(source: Source, out: str | Path, overwrite: bool = False, zarr_format: int = 3,
                   image_codec: str = "blosc", image_quality: int | None = None) -> dict[str, Any]:
    """Convert every episode of `source` not yet in `out` (image keys stored with `image_codec`, see
    EpisodeStore.create); returns a summary with what was dropped and why."""
    out = Path(out)
    store = _open_or_create(source, out, overwrite, zarr_format, image_codec, image_quality)
    ids = list(source.episode_ids())
    records = list(store.attrs[CONVERTED_ATTR]["episodes"])
    _recover(store, ids, records)
    done = {r["id"] for r in records}
    todo = [i for i in ids if i not in done]
    converted = 0
    for episode_id in progress(todo, desc=f"convert {source.format}", total=len(todo)):
        try:
            episode = source.read(episode_id)
            index = store.append_episode(episode.data, episode.timestamps)  # checked whole before any write
        except (SkipEpisode, DataError) as reason:
            problem = reason.problem if isinstance(reason, DataError) else str(reason)
            log.warning("%s episode %s dropped: %s", source.format, episode_id, problem)
            records.append({"id": episode_id, "index": None, "dropped": problem})
        else:
            records.append({"id": episode_id, "index": index, "dropped": None})
            converted += 1
        _save(store, records)
    splits = _splits(source.splits, records)
    if splits:
        store.update_attrs({"splits": splits})
    dropped = [{"episode": r["id"], "reason": r["dropped"]} for r in records if r["dropped"]]
    return {"out": str(out), "format": source.format, "source": source.location, "converted": converted,
            "resumed_past": len(ids) - len(todo), "episodes": store.n_episodes, "steps": store.n_steps,
            "dropped": dropped}


def _splits(by_id: Mapping[str, Sequence[str]], records: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Named episode subsets (e.g. robomimic's filter keys) as store episode indices."""
    index = {r["id"]: r["index"] for r in records if r["index"] is not None}
    return {name: sorted(index[i] for i in ids if i in index) for name, ids in by_id.items()}
