"""Training-window throughput on the shared Push-T store; prints one JSON object.

Windows: image (2 obs steps) + agent position + 16 actions, as Diffusion Policy's Push-T
image task draws them. Measured side by side in one run:
  disk        SequenceDataset over the lazy zarr store, one window per call
  memory      SequenceDataset over the store loaded into memory, one window per call
  reference   a plain loop that slices the same in-memory numpy arrays and makes the same
              tensors (no padding, no index bookkeeping): the floor for `memory`
  memory_batched  SequenceDataset.get_batch of 64 windows in the main process
  dataloader  make_dataloader, batch 64, 2 workers
Run: .venv/bin/python -m bench.sampler [--store PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from robopolicy.datasets.sequence import SequenceDataset, make_dataloader
from robopolicy.datasets.store import EpisodeStore
from robopolicy.envs.pusht import PUSHT_IMAGE_SHAPE_META

DEFAULT_STORE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"


def per_window_rate(fetch, indices: np.ndarray) -> float:
    """Windows per second of fetch(i) over the given window indices."""
    start = time.perf_counter()
    for i in indices:
        fetch(int(i))
    return len(indices) / (time.perf_counter() - start)


def reference_fetcher(store: EpisodeStore, horizon: int, n_obs: int):
    """Plain numpy slicing of in-memory arrays into the same tensors the dataset returns."""
    img, state, action = store["img"], store["state"], store["action"]

    def fetch(start: int) -> dict:
        frames = torch.from_numpy(img[start : start + n_obs]).permute(0, 3, 1, 2).float().div_(255.0)
        return {
            "obs": {"img": frames, "agent_pos": torch.from_numpy(state[start : start + n_obs, :2]).float()},
            "action": torch.from_numpy(action[start : start + horizon]).float(),
        }

    return fetch


def loader_rate(dataset: SequenceDataset, batch_size: int, workers: int, n_batches: int) -> float:
    loader = make_dataloader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=True)
    iterator = iter(loader)
    for _ in range(5):  # start the workers and fill their prefetch queues
        next(iterator)
    start = time.perf_counter()
    for _ in range(n_batches):
        next(iterator)
    rate = n_batches * batch_size / (time.perf_counter() - start)
    del iterator
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of memory vs reference")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)

    disk_store = EpisodeStore.open(args.store)
    t0 = time.perf_counter()
    memory_store = disk_store.load(["img", "state", "action"])
    load_seconds = time.perf_counter() - t0

    disk = SequenceDataset(disk_store, PUSHT_IMAGE_SHAPE_META, horizon=16, n_obs_steps=2, n_action_steps=8)
    memory = SequenceDataset(memory_store, PUSHT_IMAGE_SHAPE_META, horizon=16, n_obs_steps=2, n_action_steps=8)
    reference = reference_fetcher(memory_store, horizon=16, n_obs=2)
    ref_starts = rng.integers(0, memory_store.n_steps - 16, 5000)

    disk_rate = per_window_rate(disk.__getitem__, rng.integers(0, len(disk), 300))
    memory_rates, reference_rates = [], []
    for _ in range(args.rounds):
        memory_rates.append(per_window_rate(memory.__getitem__, rng.integers(0, len(memory), 5000)))
        reference_rates.append(per_window_rate(reference, ref_starts))
    memory_rate, reference_rate = float(np.median(memory_rates)), float(np.median(reference_rates))

    start = time.perf_counter()
    for _ in range(100):
        memory.get_batch(rng.integers(0, len(memory), 64))
    batched_rate = 100 * 64 / (time.perf_counter() - start)

    result = {
        "store": str(args.store),
        "windows": len(memory),
        "load_into_memory_s": round(load_seconds, 2),
        "windows_per_s": {
            "disk": round(disk_rate, 1),
            "memory": round(memory_rate, 1),
            "reference_numpy_slice": round(reference_rate, 1),
            "memory_batched_64": round(batched_rate, 1),
            "dataloader_batch64_workers2": round(loader_rate(memory, 64, 2, 200), 1),
        },
        "time_ratio_memory_over_reference": round(reference_rate / memory_rate, 3),
        "targets": {"time_ratio_memory_over_reference_max": 1.5, "dataloader_windows_per_s_min": 2250},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
