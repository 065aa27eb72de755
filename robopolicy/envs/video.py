"""MP4 files from rollout frames, written with PyAV (H.264, playable in browsers)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np


def write_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: float, crf: int | None = None,
              pix_fmt: str = "yuv420p") -> Path:
    """Encode (H, W, 3) uint8 frames to an H.264 mp4 atomically (temp file, then rename); frame k is
    shown at k / fps. `crf` sets the quality (0: lossless in yuv444p), default x264's."""
    if not len(frames):
        raise ValueError(f"no frames to write to {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    height, width = height - height % 2, width - width % 2  # yuv420p needs even sizes
    partial = path.with_name(f".{path.name}.partial")
    with av.open(str(partial), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)),
                                      options={} if crf is None else {"crf": str(crf)})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for frame in frames:
            image = np.ascontiguousarray(frame[:height, :width, :3], dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    os.replace(partial, path)
    return path
