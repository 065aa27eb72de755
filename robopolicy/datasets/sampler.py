"""Training windows over episodes, and train/validation splits by episode.

Window semantics are Diffusion Policy's: a window covers `sequence_length` consecutive
steps starting anywhere from `-pad_before` to `episode_length - sequence_length +
pad_after`; steps outside the episode repeat its first or last frame. The splits use the
same seeded numpy draws as Diffusion Policy, so a seed selects the same episodes, and validate
on the same ones (tests/golden/sampler.json holds its code's choices).
"""

from __future__ import annotations

import numpy as np


def val_mask(n_episodes: int, val_ratio: float, seed: int = 0) -> np.ndarray:
    """(n_episodes,) bool: the validation episodes, at least one each for train and val."""
    mask = np.zeros(n_episodes, dtype=bool)
    if val_ratio <= 0 or n_episodes < 2:
        return mask
    n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
    mask[np.random.default_rng(seed=seed).choice(n_episodes, size=n_val, replace=False)] = True
    return mask


def downsample_mask(mask: np.ndarray, max_n: int | None, seed: int = 0) -> np.ndarray:
    """Keep at most `max_n` of the selected episodes, chosen with a seeded draw."""
    selected = np.flatnonzero(mask)
    if max_n is None or len(selected) <= max_n:
        return mask.copy()
    keep = selected[np.random.default_rng(seed=seed).choice(len(selected), size=int(max_n), replace=False)]
    out = np.zeros_like(mask)
    out[keep] = True
    return out


def split_episodes(
    n_episodes: int, val_ratio: float = 0.0, seed: int = 42, max_train_episodes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train_mask, val_mask) over episodes: train is what the `val_ratio` draw leaves, capped at
    `max_train_episodes`; validation is every episode not trained on (the draw and the ones the cap
    left out), as Diffusion Policy's get_validation_dataset (116 of Push-T's 206 with its config)."""
    train = downsample_mask(~val_mask(n_episodes, val_ratio, seed), max_train_episodes, seed)
    return train, ~train


class SequenceSampler:
    """Enumerates windows and turns (window, step offsets) into padded store rows.

    Each window w has an episode and an unclipped global start row `start[w]` (before the
    episode's first row when padded at the front). `rows(w, offsets)` gives the store rows
    for steps start+offsets, clipped into the episode: the padding of Diffusion Policy.
    """

    def __init__(
        self,
        episode_ends: np.ndarray,
        sequence_length: int,
        pad_before: int = 0,
        pad_after: int = 0,
        episode_mask: np.ndarray | None = None,
    ):
        if sequence_length < 1:
            raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
        ends = np.asarray(episode_ends, dtype=np.int64)
        mask = np.ones(len(ends), bool) if episode_mask is None else np.asarray(episode_mask, bool)
        if mask.shape != ends.shape:
            raise ValueError(f"episode_mask has shape {mask.shape}, expected {ends.shape}")
        self.sequence_length = sequence_length
        self.pad_before = min(max(pad_before, 0), sequence_length - 1)
        self.pad_after = min(max(pad_after, 0), sequence_length - 1)
        starts = np.concatenate([[0], ends[:-1]])
        lengths = ends - starts
        n_windows = np.where(mask, np.maximum(lengths - sequence_length + self.pad_after + self.pad_before + 1, 0), 0)
        self.episode = np.repeat(np.arange(len(ends)), n_windows)
        first = np.cumsum(n_windows) - n_windows
        local = np.arange(int(n_windows.sum())) - np.repeat(first, n_windows) - self.pad_before
        self.episode_start = starts[self.episode]
        self.episode_end = ends[self.episode]
        self.start = self.episode_start + local

    def __len__(self) -> int:
        return len(self.start)

    def rows(self, windows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(B, K) store rows for step offsets (K,) of windows (B,), clipped to each episode."""
        raw = self.start[windows, None] + offsets[None, :]
        return np.clip(raw, self.episode_start[windows, None], self.episode_end[windows, None] - 1)

    def is_pad(self, windows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(B, K) bool: steps that fall outside their episode and repeat an edge frame."""
        raw = self.start[windows, None] + offsets[None, :]
        return (raw < self.episode_start[windows, None]) | (raw >= self.episode_end[windows, None])

    def buffer_indices(self) -> np.ndarray:
        """(N, 4) [buffer_start, buffer_end, sample_start, sample_end], Diffusion Policy's layout."""
        buffer_start = np.maximum(self.start, self.episode_start)
        buffer_end = np.minimum(self.start + self.sequence_length, self.episode_end)
        sample_start = buffer_start - self.start
        sample_end = sample_start + (buffer_end - buffer_start)
        return np.stack([buffer_start, buffer_end, sample_start, sample_end], axis=1)
