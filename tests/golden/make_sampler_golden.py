"""Regenerate tests/golden/sampler.json with Diffusion Policy's own sampler and dataset code:

    pip install --target /tmp/zarr2 zarr==2.18.3 numcodecs==0.13.1 asciitree fasteners --no-deps
    PYTHONPATH=/tmp/zarr2:/path/to/diffusion_policy python -m tests.golden.make_sampler_golden /path/to/diffusion_policy

(Diffusion Policy's ReplayBuffer needs zarr 2; the path puts it before the venv's zarr 3.) The functions
recorded are diffusion_policy/common/sampler.py's `get_val_mask`, `downsample_mask` (chained as its datasets
chain them: val mask, then the rest downsampled to max_train_episodes with the same seed) and `create_indices`
(the windows of its SequenceSampler); and, from its PushTLowdimDataset (diffusion_policy/dataset/
pusht_dataset.py), the episodes its training set and its `get_validation_dataset()` use, on the real Push-T
store and on stores of each split's size written with its own ReplayBuffer. Nothing of robopolicy runs here.
tests/datasets/test_sampler.py compares robopolicy's sampler with the file. Regenerate only against a new
Diffusion Policy commit, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "sampler.json"
PUSHT_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"

# (n_episodes, val_ratio, seed, max_train_episodes): Push-T's config first, then edges (tiny stores, no val)
SPLITS = [(206, 0.02, 42, 90), (206, 0.1, 0, None), (206, 0.5, 7, 50), (100, 0.02, 42, 90), (10, 0.3, 1, 4),
          (3, 0.34, 42, None), (2, 0.5, 42, 1), (1, 0.5, 0, None), (50, 0.0, 42, 20)]
# (sequence_length, pad_before, pad_after) on Push-T: the dataset windows with 0 and 3 latency steps
PUSHT_WINDOWS = [(16, 1, 7), (19, 4, 7)]
# a small store with an episode shorter than a window, a masked-out episode and pads that get clipped
SMALL = {"episode_ends": [10, 14, 21, 22, 40], "mask": [True, True, False, True, True],
         "windows": [(4, 1, 2), (4, 9, -2), (3, 0, 5), (6, 0, 1), (1, 0, 0)]}
EDGE_ROWS = 12  # rows stored verbatim at each end of a Push-T window table (the rest by its hash)


def digest(indices: np.ndarray) -> str:
    """sha256 of the (N, 4) window table as little-endian int64, row-major."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()


def load_sampler(root: Path):
    sys.path.insert(0, str(root))
    from diffusion_policy.common import sampler

    return sampler


def split(sampler, n_episodes: int, val_ratio: float, seed: int, max_train: int | None) -> dict:
    val = sampler.get_val_mask(n_episodes=n_episodes, val_ratio=val_ratio, seed=seed)
    train = sampler.downsample_mask(mask=~val, max_n=max_train, seed=seed)
    return {"n_episodes": n_episodes, "val_ratio": val_ratio, "seed": seed, "max_train_episodes": max_train,
            "val_ids": np.flatnonzero(val).tolist(), "train_ids": np.flatnonzero(train).tolist()}


def dataset_split(store: Path, val_ratio: float, seed: int, max_train: int | None) -> dict:
    """The episodes PushTLowdimDataset trains on and validates on (its get_validation_dataset), and their window
    counts, for the store at `store` with Push-T's windows (horizon 16, pads 1 and 7)."""
    from diffusion_policy.dataset.pusht_dataset import PushTLowdimDataset

    dataset = PushTLowdimDataset(str(store), horizon=16, pad_before=1, pad_after=7, seed=seed, val_ratio=val_ratio,
                                 max_train_episodes=max_train)
    validation = dataset.get_validation_dataset()
    return {"n_episodes": int(len(dataset.train_mask)), "val_ratio": val_ratio, "seed": seed,
            "max_train_episodes": max_train, "train_ids": np.flatnonzero(dataset.train_mask).tolist(),
            "validation_ids": np.flatnonzero(validation.train_mask).tolist(), "train_windows": len(dataset),
            "validation_windows": len(validation)}


def replay_store(directory: Path, n_episodes: int) -> Path:
    """A Push-T-shaped store of `n_episodes` episodes of 20 steps, written with Diffusion Policy's ReplayBuffer."""
    from diffusion_policy.common.replay_buffer import ReplayBuffer

    path = directory / f"episodes_{n_episodes}.zarr"
    buffer = ReplayBuffer.create_from_path(str(path), mode="w")
    for _ in range(n_episodes):
        buffer.add_episode({"keypoint": np.zeros((20, 9, 2), np.float32), "state": np.zeros((20, 5), np.float32),
                            "action": np.zeros((20, 2), np.float32)})
    return path


def windows(sampler, ends: np.ndarray, mask: np.ndarray, length: int, before: int, after: int) -> np.ndarray:
    return np.asarray(sampler.create_indices(ends, sequence_length=length, episode_mask=mask, pad_before=before,
                                             pad_after=after), dtype=np.int64).reshape(-1, 4)


def main() -> None:
    root = Path(sys.argv[1]).resolve()
    commit = sys.argv[2] if len(sys.argv) > 2 else subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    sampler = load_sampler(root)
    import zarr

    ends = np.asarray(zarr.open_group(str(PUSHT_PATH), mode="r")["meta"]["episode_ends"][:], dtype=np.int64)
    pusht_split = split(sampler, len(ends), 0.02, 42, 90)
    masks = {"all": np.ones(len(ends), bool), "train": np.isin(np.arange(len(ends)), pusht_split["train_ids"]),
             "val": np.isin(np.arange(len(ends)), pusht_split["val_ids"])}
    pusht_windows = []
    for length, before, after in PUSHT_WINDOWS:
        for name, mask in masks.items():
            table = windows(sampler, ends, mask, length, before, after)
            pusht_windows.append({"sequence_length": length, "pad_before": before, "pad_after": after, "mask": name,
                                  "count": len(table), "sha256": digest(table), "first_rows": table[:EDGE_ROWS].tolist(),
                                  "last_rows": table[-EDGE_ROWS:].tolist()})
    small_ends, small_mask = np.array(SMALL["episode_ends"], np.int64), np.array(SMALL["mask"])
    small = [{"sequence_length": n, "pad_before": b, "pad_after": a,
              "rows": windows(sampler, small_ends, small_mask, n, b, a).tolist()} for n, b, a in SMALL["windows"]]
    with tempfile.TemporaryDirectory() as directory:
        dataset_splits = [dataset_split(PUSHT_PATH, 0.02, 42, 90)]
        dataset_splits += [dataset_split(replay_store(Path(directory), n), ratio, seed, max_train)
                           for n, ratio, seed, max_train in SPLITS]
    golden = {
        "source": {"repository": "https://github.com/real-stanford/diffusion_policy", "commit": commit,
                   "file": "diffusion_policy/common/sampler.py, diffusion_policy/dataset/pusht_dataset.py",
                   "functions": ["get_val_mask", "downsample_mask", "create_indices",
                                 "PushTLowdimDataset.train_mask", "PushTLowdimDataset.get_validation_dataset"],
                   "made_by": "python -m tests.golden.make_sampler_golden (see its docstring)"},
        "splits": [split(sampler, *s) for s in SPLITS],
        "dataset_splits": dataset_splits,  # [0]: the real Push-T store; then one per entry of "splits"
        "pusht": {"episode_ends": ends.tolist(), "split": "splits[0]", "windows": pusht_windows},
        "small": {"episode_ends": SMALL["episode_ends"], "mask": SMALL["mask"], "windows": small},
    }
    GOLDEN.write_text(json.dumps(golden, separators=(",", ":")) + "\n")
    print(f"wrote {GOLDEN} from diffusion_policy {commit}")


if __name__ == "__main__":
    main()
