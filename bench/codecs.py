"""Image codecs of the episode store on frames from a real camera video; prints one JSON object.

Decodes the first `--frames` frames of a camera video (any file PyAV reads; 480x640 expected, other
sizes are center-cropped to 4:3 and resized to 480x640, which the output reports), writes them into
an episode store once per codec (EpisodeStore.create(image_codec=..., image_quality=...)), and
reports for each:
  bytes_per_frame   the image array's bytes on disk per frame (shards included)
  ratio             raw frame bytes (480*640*3) over bytes_per_frame
  encode_fps        frames per second appending them (encode + write)
  decode_fps        frames per second reading them back (read + decode)
  psnr_db           PSNR against the decoded source frames (null: identical, lossless)
with torch, OpenMP, blosc and zarr held to one thread, so the rates are one core's.
The video used for the table in the converters' notes is `box.mp4`, a hand-held 640x480 H.264 clip
of a box lifted over a table, shipped in the opencv-python sdist (5.0.0.93) at
opencv/samples/cpp/tutorial_code/calib3d/real_time_pose_estimation/Data/box.mp4
(`pip download --no-deps --no-binary opencv-python opencv-python`, then untar that one file).
Run: .venv/bin/python -m bench.codecs VIDEO [--frames 300]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch load their thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HEIGHT, WIDTH = 480, 640
CODECS = (("blosc", None), ("jpegxl", None), ("jpegxl", 80), ("jpegxl", 90), ("jpegxl", 95), ("jpeg", 90),
          ("jpeg", 95))


def one_thread() -> None:
    """Hold every library that could spread work over cores to one thread."""
    import numcodecs.blosc
    import torch
    import zarr

    torch.set_num_threads(1)
    numcodecs.blosc.set_nthreads(1)
    zarr.config.set({"async.concurrency": 1, "threading.max_workers": 1})


def read_frames(path: Path, count: int) -> tuple[np.ndarray, dict]:
    """(count, 480, 640, 3) uint8 RGB frames from the start of the video, and what was done to them."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"path": str(path), "bytes": path.stat().st_size, "codec": stream.codec_context.name,
                "height": stream.height, "width": stream.width, "fps": float(stream.average_rate),
                "bytes_per_frame": round(path.stat().st_size / stream.frames) if stream.frames else None}
        frames = []
        for frame in container.decode(stream):
            frames.append(fit(frame.to_ndarray(format="rgb24")))
            if len(frames) == count:
                break
    resized = (info["height"], info["width"]) != (HEIGHT, WIDTH)
    info["prepared"] = "center-cropped to 4:3, resized to 480x640" if resized else "none (already 480x640)"
    return np.stack(frames), info


def fit(image: np.ndarray) -> np.ndarray:
    """A frame center-cropped to 4:3 and resized to 480x640 (unchanged when it is 480x640)."""
    if image.shape[:2] == (HEIGHT, WIDTH):
        return image
    from PIL import Image

    height, width = image.shape[:2]
    crop_h, crop_w = min(height, width * 3 // 4), min(width, height * 4 // 3)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    cropped = Image.fromarray(image[top: top + crop_h, left: left + crop_w])
    return np.asarray(cropped.resize((WIDTH, HEIGHT), Image.BICUBIC))


def psnr(frames: np.ndarray, decoded: np.ndarray) -> float | None:
    """Peak signal-to-noise ratio in dB over all frames; None when they are identical."""
    mse = float(np.mean((frames.astype(np.float64) - decoded) ** 2))
    return None if mse == 0 else round(10 * np.log10(255.0**2 / mse), 2)


def measure(frames: np.ndarray, codec: str, quality: int | None, work: Path) -> dict:
    """One codec: size on disk, encode and decode rates, PSNR against `frames`."""
    from robopolicy.datasets.store import EpisodeStore

    path = work / f"{codec}{quality or ''}.zarr"
    store = EpisodeStore.create(path, image_codec=codec, image_quality=quality)
    start = time.perf_counter()
    store.append_episode({"image": frames})
    encode = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (path / "data" / "image").rglob("*") if p.is_file())
    reopened = EpisodeStore.open(path)
    start = time.perf_counter()
    decoded = reopened.read("image")
    decode = time.perf_counter() - start
    shutil.rmtree(path)
    per_frame = size / len(frames)
    return {"codec": codec, "quality": quality, "bytes_per_frame": round(per_frame),
            "ratio": round(HEIGHT * WIDTH * 3 / per_frame, 1), "encode_fps": round(len(frames) / encode, 1),
            "decode_fps": round(len(frames) / decode, 1), "psnr_db": psnr(frames, decoded)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path, help="a real camera video (see the module's notes for the one used)")
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    one_thread()
    frames, source = read_frames(args.video, args.frames)
    source["frames_used"] = len(frames)
    work = Path(tempfile.mkdtemp(prefix="codec-bench-"))
    try:
        rows = [measure(frames, codec, quality, work) for codec, quality in CODECS]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"source": source, "raw_bytes_per_frame": HEIGHT * WIDTH * 3, "threads": 1, "codecs": rows},
                     indent=2))


if __name__ == "__main__":
    main()
