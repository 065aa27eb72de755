"""One conversion loop for every source format: resumable, with a progress bar and a drop report.

A source lists its episodes in a fixed order and reads one at a time. Each episode is appended
to the store atomically and then recorded in the store's `converted_from` attribute (appended
with its store index, or dropped with the reason) together with its task string in
`episode_tasks` (one attribute write). A killed conversion resumes: recorded episodes are not
read again, and the one episode an interruption can leave appended but not yet recorded is the
first unrecorded one in the source's order. The options every format takes are handled here once:
`fps` (the recording rate the store keeps), `image_codec` / `image_quality` (a source of frames
decoded from lossy video gets VIDEO_IMAGE_CODEC unless the user names one). A conversion that ends
with no episode in the store is an error listing each episode's drop reason, and a store this
call created is removed then, so no empty store is left behind.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.store import EPISODE_TASKS_ATTR, EpisodeStore
from robopolicy.datasets.zarr_io import looks_like_zarr_directory
from robopolicy.progress import progress

log = logging.getLogger(__name__)
CONVERTED_ATTR = "converted_from"
# image codec and quality for frames decoded from lossy video. bench/codecs.py on a real 480x640 H.264 camera clip:
# 54 KB/frame against blosc's 500 KB, 40.5 dB PSNR to the decoded frames, and the fastest decode (514 frames/s on
# one core against blosc's 171 and JPEG-XL q90's 112: reading frames is training's hot loop)
VIDEO_IMAGE_CODEC = ("jpeg", 90)
REASONS_SHOWN = 20  # drop reasons listed in the error of a conversion that converted nothing


class SkipEpisode(Exception):
    """An episode the source cannot give whole; it is reported with this reason, never padded."""


@dataclass
class Episode:
    """One episode in store layout: (T, ...) arrays by key, (T,) capture times for some keys, and the
    task string the demonstration carries out (for language conditioning) when the source names one."""

    data: dict[str, np.ndarray]
    timestamps: dict[str, np.ndarray] = field(default_factory=dict)
    task: str | None = None


class Source(Protocol):
    """A demonstration source: its episodes by id, and the metadata the store keeps."""

    format: str
    location: str
    attrs: dict[str, Any]  # store attributes: fps, env metadata, ...
    splits: dict[str, list[str]]  # named subsets of episode ids (e.g. train / valid)
    lossy_video: bool  # every image key is decoded from lossy video, so a lossy image codec loses little more

    def episode_ids(self) -> Sequence[str]:
        """Every episode's id, in the order they are converted."""

    def read(self, episode_id: str) -> Episode:
        """The episode in store layout; raises SkipEpisode when it cannot be read whole."""


def image_codec_for(source: Source, image_codec: str | None, image_quality: int | None) -> tuple[str, int | None]:
    """The image codec of a new store: the user's, else VIDEO_IMAGE_CODEC for frames from lossy video, else blosc."""
    if image_codec is not None:
        return image_codec, image_quality
    if source.lossy_video:
        codec, quality = VIDEO_IMAGE_CODEC
        log.info("%s: frames come from lossy video; storing them as %s (quality %s); pass image_codec=blosc to keep "
                 "them lossless", source.location, codec, image_quality or quality)
        return codec, image_quality if image_quality is not None else quality
    return "blosc", image_quality


def _open_or_create(source: Source, out: Path, overwrite: bool, zarr_format: int, image_codec: str | None,
                    image_quality: int | None) -> tuple[EpisodeStore, bool]:
    """The store to convert into, and whether this call created it."""
    if looks_like_zarr_directory(str(out)) and not overwrite:
        store = EpisodeStore.open(out, mode="a")
        record = store.attrs.get(CONVERTED_ATTR)
        if record is None or (record["format"], record["source"]) != (source.format, source.location):
            raise DataError(str(out), f"exists and was not converted from {source.format} {source.location}",
                            fix="choose a new OUT, or pass overwrite=true to replace it")
        return store, False
    attrs = {**source.attrs, CONVERTED_ATTR: {"format": source.format, "source": source.location, "episodes": []}}
    codec, quality = image_codec_for(source, image_codec, image_quality)
    return EpisodeStore.create(out, zarr_format=zarr_format, overwrite=overwrite, attrs=attrs, image_codec=codec,
                               image_quality=quality), True


def _check_fps(fps: Any) -> None:
    """Refuse an fps that is no positive number before anything is written."""
    if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0):
        raise ValueError(f"fps={fps!r}: give the rate the demonstrations were recorded at in frames per second, "
                         "e.g. fps=30")


def _set_fps(store: EpisodeStore, fps: float | None) -> None:
    """Store the user's fps; it wins over one the source records, with a warning when they differ."""
    if fps is None:
        return
    recorded = store.attrs.get("fps")
    if recorded is not None and float(recorded) != float(fps):
        log.warning("%s: the source records %g fps; storing fps=%g as given", store.path, float(recorded), fps)
    if recorded is None or float(recorded) != float(fps):
        store.update_attrs({"fps": float(fps)})


def _recover(store: EpisodeStore, ids: Sequence[str], records: list[dict[str, Any]]) -> str | None:
    """Record the one episode an interruption may have appended after the last record; returns its id."""
    appended = sum(r["index"] is not None for r in records)
    if store.n_episodes == appended:
        return None
    done = {r["id"] for r in records}
    pending = [i for i in ids if i not in done]
    if store.n_episodes != appended + 1 or not pending:
        raise DataError(store.path, f"holds {store.n_episodes} episodes but its conversion record lists {appended}",
                        key=f"attrs/{CONVERTED_ATTR}", fix="convert again with overwrite=true")
    log.info("%s: episode %s was appended before an interruption; recorded now", store.path, pending[0])
    records.append({"id": pending[0], "index": store.n_episodes - 1, "dropped": None})
    return pending[0]


def _recovered_task(source: Source, episode_id: str) -> str | None:
    """The task of an episode appended before an interruption, read again from the source (None if it cannot be)."""
    try:
        return source.read(episode_id).task
    except (SkipEpisode, DataError) as reason:
        log.warning("%s episode %s: its task cannot be read again (%s); recorded as unknown", source.format,
                    episode_id, reason)
        return None


def _save(store: EpisodeStore, records: list[dict[str, Any]], tasks: list[str | None]) -> None:
    """Write the conversion record and, once any episode has one, the task strings (one attribute write)."""
    record = dict(store.attrs[CONVERTED_ATTR])
    record["episodes"] = records
    values: dict[str, Any] = {CONVERTED_ATTR: record}
    if any(task is not None for task in tasks) or EPISODE_TASKS_ATTR in store.attrs:
        values[EPISODE_TASKS_ATTR] = tasks
    store.update_attrs(values)


def convert_source(source: Source, out: str | Path, overwrite: bool = False, zarr_format: int = 3,
                   image_codec: str | None = None, image_quality: int | None = None,
                   fps: float | None = None) -> dict[str, Any]:
    """Convert every episode of `source` not yet in `out` (image keys stored with `image_codec`, see
    EpisodeStore.create; None picks one by source, see image_codec_for); `fps` is stored over the
    source's rate. Returns a summary with what was dropped and why; raises DataError when the store
    holds no episode at the end."""
    out = Path(out)
    if out.resolve().is_relative_to(Path(source.location).resolve()):
        raise DataError(str(out), f"lies inside the source {source.location}, which a conversion reads",
                        fix="write the store outside the source (e.g. next to it)")
    _check_fps(fps)
    store, created = _open_or_create(source, out, overwrite, zarr_format, image_codec, image_quality)
    _set_fps(store, fps)
    ids = list(source.episode_ids())
    records = list(store.attrs[CONVERTED_ATTR]["episodes"])
    tasks = store.episode_tasks
    recovered = _recover(store, ids, records)
    if recovered is not None:
        tasks[-1] = _recovered_task(source, recovered)
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
            tasks.append(episode.task)
            converted += 1
        _save(store, records, tasks)
    if store.n_episodes == 0:
        raise _nothing_converted(source, out, records, removed=created and _remove(out))
    splits = _splits(source.splits, records)
    if splits:
        store.update_attrs({"splits": splits})
    if store.fps is None:
        log.warning("%s: no fps recorded (the source gives none); pass fps=HZ, the rate the demonstrations were "
                    "recorded at, so that training and export know the control rate", out)
    dropped = [{"episode": r["id"], "reason": r["dropped"]} for r in records if r["dropped"]]
    return {"out": str(out), "format": source.format, "source": source.location, "converted": converted,
            "resumed_past": len(ids) - len(todo), "episodes": store.n_episodes, "steps": store.n_steps,
            "fps": store.fps, "dropped": dropped}


def _remove(out: Path) -> bool:
    """Delete an empty store this conversion created; True once it is gone."""
    if not looks_like_zarr_directory(str(out)):
        return False
    shutil.rmtree(out)
    return True


def _nothing_converted(source: Source, out: Path, records: Sequence[Mapping[str, Any]], removed: bool) -> DataError:
    """The error of a conversion that left no episode in the store: each episode's drop reason."""
    reasons = [f"{r['id']}: {r['dropped']}" for r in records if r["dropped"]]
    if len(reasons) > REASONS_SHOWN:
        more = len(reasons) - REASONS_SHOWN
        reasons = [*reasons[:REASONS_SHOWN], f"... and {more} more (each was logged as it was dropped)"]
    problem = (f"no episode of {source.format} {source.location} was converted; "
               + ("the source lists no episodes" if not records else "dropped:\n    " + "\n    ".join(reasons)))
    fix = ("correct what the reasons name (a topic, key or file the source lacks, or an option) and convert again"
           + ("; the empty store this conversion created was removed" if removed else ""))
    return DataError(str(out), problem, fix=fix)


def _splits(by_id: Mapping[str, Sequence[str]], records: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Named episode subsets (e.g. robomimic's filter keys) as store episode indices."""
    index = {r["id"]: r["index"] for r in records if r["index"] is not None}
    return {name: sorted(index[i] for i in ids if i in index) for name, ids in by_id.items()}
