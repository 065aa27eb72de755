"""The README's main job: the whole user path that exists so far, on data it makes itself.

Today: record scripted Push-T episodes in the real simulator into a new store, inspect
and validate it, fit a normalizer and draw a batch of training windows.
"""

from __future__ import annotations

import logging
from pathlib import Path

from robopolicy.datasets.inspect import describe, validate
from robopolicy.datasets.normalizer import Normalizer
from robopolicy.datasets.sequence import SequenceDataset, make_dataloader
from robopolicy.datasets.store import EpisodeStore
from robopolicy.envs.pusht import PUSHT_IMAGE_SHAPE_META, record_scripted_episodes

log = logging.getLogger(__name__)
HORIZON = 16

def run_quickstart(out_dir: Path, n_episodes: int = 8, steps: int = 100) -> dict:
    """Record, inspect, validate, normalize and sample; returns a summary dict."""
    if n_episodes < 2 or steps < HORIZON:
        raise ValueError(f"the quickstart needs at least 2 episodes of at least {HORIZON} steps "
                         f"(one is held out for validation), got {n_episodes} x {steps}")
    out_dir.mkdir(parents=True, exist_ok=True)
    store = EpisodeStore.create(out_dir / "pusht_scripted.zarr", overwrite=True, attrs={"fps": 10})
    record_scripted_episodes(store, n_episodes=n_episodes, steps=steps)
    store = EpisodeStore.open(store.path)
    findings = validate(store)
    if any(f.level == "error" for f in findings):
        raise RuntimeError("the recorded store failed validation:\n" + "\n".join(map(str, findings)))
    dataset = SequenceDataset(store.load(), PUSHT_IMAGE_SHAPE_META, horizon=HORIZON, n_obs_steps=2, n_action_steps=8,
                              val_ratio=0.25)
    normalizer = Normalizer.fit(store, PUSHT_IMAGE_SHAPE_META, episode_mask=dataset.episode_mask)
    normalizer.save(out_dir / "normalizer.safetensors")
    batch = next(iter(make_dataloader(dataset, batch_size=min(32, len(dataset)))))
    action = normalizer.normalize({"action": batch["action"]})["action"]
    return {
        "store": describe(store),
        "windows": {"train": len(dataset), "val": len(dataset.get_validation_dataset())},
        "batch": {k: list(v.shape) for k, v in batch["obs"].items()} | {"action": list(batch["action"].shape)},
        "normalized_action_range": [float(action.min()), float(action.max())],
        "normalizer": str(out_dir / "normalizer.safetensors"),
    }
