"""Frames of an mp4 at given times, decoded with PyAV (threaded), for the video-based sources."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robopolicy.datasets.convert.run import SkipEpisode


def decode_at(path: Path, times: np.ndarray, tolerance: float, size: Sequence[int] | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB: for each time (seconds on the video's clock, ascending) the frame shown
    then, which must lie within `tolerance` of it; `size` = (height, width) resizes.

    Raises SkipEpisode naming the first time without a frame (a dropped frame or a short video)."""
    import av

    if not path.is_file():
        raise SkipEpisode(f"video {path} is missing")
    times = np.asarray(times, dtype=np.float64)
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if times[0] > 0:  # a file holding several episodes: start at the keyframe before this one
                container.seek(int(max(0.0, times[0] - 1.0) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is None or frame.time < times[len(frames)] - tolerance:
                    continue
                if frame.time > times[len(frames)] + tolerance:
                    break
                if size is not None:
                    frame = frame.reformat(width=int(size[1]), height=int(size[0]))
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == len(times):
                    break
    except av.error.FFmpegError as error:
        raise SkipEpisode(f"video {path} cannot be decoded ({error})") from error
    if len(frames) < len(times):
        raise SkipEpisode(f"video {path} has no frame within {1000 * tolerance:.1f} ms of {times[len(frames)]:.4f} s "
                          f"(row {len(frames)} of {len(times)}): a dropped frame or a video shorter than its rows")
    return np.stack(frames)
