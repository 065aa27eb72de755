"""Ingestion speed and storage per image codec; prints one JSON object.

Builds a raw-video dataset (`robopolicy dataset convert --from video`): 480x640 H.264 mp4s at
30 fps of a synthetic scene (gradient, moving blocks, sensor noise) with pose CSVs. Then, side by
side in one run, for each image codec of the converted store:
  convert_fps       frames per second converting it (decode, resample at 30 Hz, encode, write)
  store_mb          size on disk (the mp4s and the raw frames for reference)
  window_reads_per_s  random 2-frame windows read per second from the store
  frame_error       mean absolute pixel error against the decoded mp4 frames
and the same random windows decoded from the mp4s on the fly (seek + decode, as a loader that
reads videos directly does).
Run: .venv/bin/python -m bench.ingest [--episodes 4 --seconds 4 --windows 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from robopolicy.datasets.convert.raw_video import RawVideoSource
from robopolicy.datasets.convert.run import convert_source
from robopolicy.datasets.convert.video import decode_at
from robopolicy.datasets.store import EpisodeStore
from robopolicy.envs.video import write_mp4

FPS, HEIGHT, WIDTH = 30, 480, 640
CODECS = (("blosc", None), ("none", None), ("jpegxl", None), ("jpegxl", 90), ("jpeg", 90))


def scene(count: int, seed: int) -> np.ndarray:
    """(count, 480, 640, 3) uint8: a textured table under a gradient, three blocks moving across it, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    texture = np.kron(rng.normal(0, 12, (HEIGHT // 8, WIDTH // 8, 3)), np.ones((8, 8, 1)))  # wood-grain-like cells
    base = np.stack([80 + 60 * x / WIDTH, 90 + 50 * y / HEIGHT, 110 + 0 * x], axis=-1) + texture
    frames = np.empty((count, HEIGHT, WIDTH, 3), np.uint8)
    blocks = rng.uniform([0, 0], [WIDTH - 120, HEIGHT - 120], (3, 2))
    velocity = rng.uniform(-6, 6, (3, 2))
    colors = rng.integers(0, 255, (3, 3))
    for k in range(count):
        image = base.copy()
        for (bx, by), color in zip(np.abs(blocks + k * velocity) % [WIDTH - 120, HEIGHT - 120], colors, strict=True):
            image[int(by): int(by) + 120, int(bx): int(bx) + 120] = color
        frames[k] = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return frames


def write_dataset(root: Path, episodes: int, seconds: float) -> int:
    """mp4 + pose CSV per episode; returns the number of frames."""
    count = int(seconds * FPS)
    t = np.arange(count) / FPS
    for episode in range(episodes):
        write_mp4(scene(count, episode), root / f"episode_{episode}.mp4", FPS)
        rows = [f"{ti},{0.1 * ti},0,1,0,0,0,1,0.05" for ti in t]
        (root / f"episode_{episode}.csv").write_text("timestamp,x,y,z,qx,qy,qz,qw,gripper_width\n" + "\n".join(rows))
    return episodes * count


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def random_windows(store: EpisodeStore, count: int, seed: int) -> list[tuple[int, int]]:
    """(episode, first step) of random 2-frame windows."""
    rng = np.random.default_rng(seed)
    episodes = rng.integers(0, store.n_episodes, count)
    return [(int(e), int(rng.integers(0, store.episode_lengths[e] - 1))) for e in episodes]


def store_reads(store: EpisodeStore, windows: list[tuple[int, int]]) -> float:
    images = store["image"]
    start = time.perf_counter()
    for episode, step in windows:
        row = int(store.episode_starts[episode]) + step
        np.asarray(images[row: row + 2])
    return len(windows) / (time.perf_counter() - start)


def mp4_reads(root: Path, store: EpisodeStore, windows: list[tuple[int, int]]) -> float:
    start = time.perf_counter()
    for episode, step in windows:
        decode_at(root / f"episode_{episode}.mp4", np.array([step, step + 1]) / FPS, 0.5 / FPS)
    return len(windows) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--windows", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    try:
        videos = work / "videos"
        videos.mkdir()
        frames = write_dataset(videos, args.episodes, args.seconds)
        result = {"frames": frames, "frame_shape": [HEIGHT, WIDTH, 3], "mp4_mb": round(size_mb(videos), 2),
                  "raw_frames_mb": round(frames * HEIGHT * WIDTH * 3 / 2**20, 1), "codecs": {}}
        reference = None
        for codec, quality in CODECS:
            name = codec if quality is None else f"{codec}_q{quality}"
            out = work / f"{name}.zarr"
            start = time.perf_counter()
            convert_source(RawVideoSource(videos, rate=FPS), out, image_codec=codec, image_quality=quality)
            seconds = time.perf_counter() - start
            store = EpisodeStore.open(out)
            windows = random_windows(store, args.windows, seed=0)
            first = store.read("image", 0, 8).astype(np.int16)
            reference = first if reference is None else reference  # blosc is lossless: the decoded mp4 frames
            result["codecs"][name] = {"convert_fps": round(frames / seconds, 1), "store_mb": round(size_mb(out), 2),
                                      "window_reads_per_s": round(store_reads(store, windows), 1),
                                      "frame_error": round(float(np.abs(first - reference).mean()), 3)}
        store = EpisodeStore.open(work / "blosc.zarr")
        mp4_windows = random_windows(store, max(20, args.windows // 10), seed=1)
        result["mp4_window_reads_per_s"] = round(mp4_reads(videos, store, mp4_windows), 1)
        best = max(v["window_reads_per_s"] for v in result["codecs"].values())
        result["store_over_mp4_reads"] = round(best / result["mp4_window_reads_per_s"], 1)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
