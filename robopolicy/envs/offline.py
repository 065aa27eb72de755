"""Offline evaluation: a policy's action chunks against the recorded actions of held-out episodes.

The number a user without a simulator tunes on. At every `stride`-th step of each episode the
policy sees the recorded observations (padded at the episode's start as in training) and
predicts a chunk; its steps are compared with the recorded actions, in raw units and
normalized (divided by half the action's range over the store, per dimension: the [-1, 1]
units of the default limits normalizer), over the whole chunk and over the executed steps only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robopolicy.atomic import write_json_atomic
from robopolicy.datasets.sampler import split_episodes
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.datasets.task import DatasetConfig
from robopolicy.envs.runner import EvaluatedPolicy
from robopolicy.progress import progress

log = logging.getLogger(__name__)
MAX_PLOTTED_DIMS = 12


@dataclass
class OfflineEvalConfig:
    """`robopolicy eval CHECKPOINT offline=true ...` (the default for a task without a simulator)."""

    offline: bool = True  # compare with recorded actions instead of rolling out in the simulator
    data: str | None = None  # the episode store (default: the one the policy was trained on)
    episodes: list[int] | None = None  # store episodes (default: the training run's validation episodes)
    stride: int | None = None  # steps between predictions (default: n_action_steps, where the policy replans)
    batch_size: int = 32  # windows per policy call
    n_plots: int = 3  # episodes drawn as predicted vs recorded actions
    seed: int = 0  # seeds the initial noise of diffusion and flow policies
    out: str | None = None  # where eval.json and the plots go

    def __post_init__(self) -> None:
        if self.stride is not None and self.stride < 1 or self.batch_size < 1 or self.n_plots < 0:
            raise ValueError(f"need stride >= 1, batch_size >= 1 and n_plots >= 0, got {self}")


def chosen_episodes(store: EpisodeStore, dataset: DatasetConfig,
                    episodes: Sequence[int] | None) -> tuple[list[int], bool]:
    """The episodes to evaluate and whether they were held out of training: the given ones, else the run's
    validation split (all episodes, with a warning, when it held none out)."""
    _, val = split_episodes(store.n_episodes, dataset.val_ratio, dataset.split_seed, dataset.max_train_episodes)
    if episodes is not None:
        wrong = [e for e in episodes if not -store.n_episodes <= e < store.n_episodes]
        if wrong:
            raise ValueError(f"episodes {wrong} are not in {store.path} ({store.n_episodes} episodes)")
        chosen = [range(store.n_episodes)[e] for e in episodes]
        return chosen, bool(val[chosen].all())
    if val.any():
        return [int(e) for e in np.flatnonzero(val)], True
    log.warning("%s: the run held out no episodes (task.dataset.val_ratio=0); the errors are on training episodes",
                store.path)
    return list(range(store.n_episodes)), False


def error_table(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, scale: np.ndarray) -> dict[str, Any]:
    """MSE and MAE of (N, H, D) chunks over the valid (N, H) steps: overall, per dimension and per chunk step,
    in raw units and divided by `scale` (D,)."""
    table = {}
    for units, err in (("raw", pred - target), ("normalized", (pred - target) / scale)):
        weight = valid[..., None].astype(np.float64)
        count = max(weight.sum(), 1.0)
        per_step = np.maximum(valid.sum(axis=0), 1) * err.shape[-1]  # valid (window, dimension) pairs per step
        table[units] = {
            "mse": float((err**2 * weight).sum() / count / err.shape[-1]),
            "mae": float((np.abs(err) * weight).sum() / count / err.shape[-1]),
            "mse_per_dim": ((err**2 * weight).sum(axis=(0, 1)) / count).tolist(),
            "mae_per_dim": ((np.abs(err) * weight).sum(axis=(0, 1)) / count).tolist(),
            "mse_per_step": ((err**2 * weight).sum(axis=(0, 2)) / per_step).tolist(),
            "mae_per_step": ((np.abs(err) * weight).sum(axis=(0, 2)) / per_step).tolist(),
        }
    return table


@dataclass
class EpisodeChunks:
    """One episode's predictions: the store rows where the policy predicted, its chunks and the recorded ones."""

    episode: int
    rows: np.ndarray  # (N,) store rows that were "now"
    pred: np.ndarray  # (N, horizon, Da) raw units
    target: np.ndarray  # (N, horizon, Da) recorded, padded at the episode's edges
    valid: np.ndarray  # (N, horizon) steps inside the episode


@torch.no_grad()
def predict_episode(policy: EvaluatedPolicy, dataset: SequenceDataset, episode: int, stride: int, batch_size: int,
                    generator: torch.Generator) -> EpisodeChunks:
    """The policy's chunks at every `stride`-th step of a store episode, from its recorded observations."""
    span = dataset.store.episode_slice(episode)
    rows = np.arange(span.start, span.stop, stride)
    preds, targets, valid = [], [], []
    for first in range(0, len(rows), batch_size):
        batch = dataset.window_at(rows[first : first + batch_size])
        obs = {k: v.to(policy.device) for k, v in batch["obs"].items()}
        preds.append(policy.predict_action(obs, generator=generator)["action_pred"].float().cpu().numpy())
        targets.append(batch["action"].numpy())
        valid.append(~batch["action_is_pad"].numpy())
        policy.reset()
    return EpisodeChunks(episode, rows - span.start, np.concatenate(preds), np.concatenate(targets),
                         np.concatenate(valid))


def recorded_windows(policy: EvaluatedPolicy, dataset: DatasetConfig, data: str | None) -> SequenceDataset:
    """The policy's windows over the recorded episodes of `data`, else of the store it was trained on."""
    path = data or dataset.path
    if not path:
        raise ValueError("the recorded episodes are unknown (an artifact exported before it named its training "
                         "store): pass data=STORE")
    return SequenceDataset.for_window(EpisodeStore.open(path), policy.shape_meta, policy.config.window,
                                      n_latency_steps=dataset.n_latency_steps)


def action_scale(store: EpisodeStore, key: str) -> np.ndarray:
    """Half the range of each action dimension over the store (1 where it is constant)."""
    values = store.read(key).astype(np.float64)
    half = (values.max(axis=0) - values.min(axis=0)) / 2.0
    return np.where(half > 1e-9, half, 1.0)


def evaluate_offline(policy: EvaluatedPolicy, dataset: DatasetConfig, settings: OfflineEvalConfig, out_dir: Path,
                     title: str) -> dict[str, Any]:
    """Predict on the recorded episodes, write eval.json and the plots into out_dir, return the summary."""
    windows = recorded_windows(policy, dataset, settings.data)
    store, path = windows.store, windows.store.path
    episodes, held_out = chosen_episodes(store, dataset, settings.episodes)
    config = policy.config
    stride = settings.stride or config.n_action_steps
    generator = torch.Generator().manual_seed(settings.seed)
    results = [predict_episode(policy, windows, e, stride, settings.batch_size, generator)
               for e in progress(episodes, "offline eval", total=len(episodes))]
    scale = action_scale(store, policy.shape_meta.action_source)
    pred, target, valid = (np.concatenate([getattr(r, name) for r in results]) for name in ("pred", "target", "valid"))
    executed = np.zeros_like(valid)
    executed[:, config.action_start : config.action_start + config.n_action_steps] = True
    chunk, run = error_table(pred, target, valid, scale), error_table(pred, target, valid & executed, scale)
    summary = {
        "mode": "offline", "data": str(path), "episodes": episodes, "n_episodes": len(episodes), "held_out": held_out,
        "n_windows": len(pred),
        "stride": stride, "settings": asdict(settings), "action_scale": scale.tolist(),
        "mse": chunk["raw"]["mse"], "mae": chunk["raw"]["mae"], "normalized_mse": chunk["normalized"]["mse"],
        "executed_mse": run["raw"]["mse"], "executed_normalized_mse": run["normalized"]["mse"],
        "chunk": chunk, "executed": run,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    summary["plots"] = [str(plot_episode(r, store, policy.shape_meta.action_source, config, dataset.n_latency_steps,
                                         out_dir / f"episode_{r.episode:04d}.png", title))
                        for r in results[: settings.n_plots]]
    summary["eval_json"] = str(out_dir / "eval.json")
    write_json_atomic(out_dir / "eval.json", summary)
    log.info("offline: action MSE %.4g (normalized %.4g), executed steps %.4g (normalized %.4g) over %d windows of "
             "%d episodes", summary["mse"], summary["normalized_mse"], summary["executed_mse"],
             summary["executed_normalized_mse"], len(pred), len(episodes))
    return summary


def plot_episode(result: EpisodeChunks, store: EpisodeStore, action_key: str, config: Any, latency: int, path: Path,
                 title: str) -> Path:
    """Recorded actions (line) and the executed steps of each predicted chunk (dots), one panel per dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recorded = store.episode(result.episode, [action_key])[action_key]
    dims = min(recorded.shape[1], MAX_PLOTTED_DIMS)
    cols = min(dims, 3)
    fig, axes = plt.subplots(-(-dims // cols), cols, figsize=(4.0 * cols, 2.2 * -(-dims // cols)), squeeze=False)
    offset = config.action_start - (config.n_obs_steps - 1) + latency
    steps = np.arange(config.n_action_steps) + offset
    for d, ax in enumerate(axes.flat):
        if d >= dims:
            ax.axis("off")
            continue
        ax.plot(np.arange(len(recorded)), recorded[:, d], color="black", linewidth=1, label="recorded")
        for i, row in enumerate(result.rows):
            ax.plot(row + steps, result.pred[i, config.action_start : config.action_start + config.n_action_steps, d],
                    ".", color="tab:orange", markersize=2, label="predicted" if i == 0 else None)
        ax.set_title(f"action[{d}]", fontsize=8)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"{title}: episode {result.episode}" + (f" (first {dims} of {recorded.shape[1]} dims)"
                                                         if dims < recorded.shape[1] else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
