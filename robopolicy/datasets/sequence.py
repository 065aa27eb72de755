"""SequenceDataset: padded training windows from an episode store as torch tensors.

A sample is `{"obs": {key: (To_k, ...)}, "action": (horizon, Da), "action_is_pad": (horizon,)}`
in raw units (normalization happens inside the policy). Images come out float [0, 1]
CHW; uint8 frames and the float 0..255 frames of older stores are both handled.
Observation keys read only the steps the policy sees (their own horizon and stride),
never the whole window, which is what makes image windows cheap.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
)

from robopolicy.datasets.layout import Window, to_policy_layout
from robopolicy.datasets.sampler import SequenceSampler, split_episodes
from robopolicy.datasets.shape_meta import ObsSpec, ShapeMeta, parse_shape_meta
from robopolicy.datasets.sources import action_source, obs_source
from robopolicy.datasets.store import Array, EpisodeStore, image_value_scale
from robopolicy.datasets.zarr_io import read_rows


class _KeyReader:
    """Reads one key's steps for a batch of windows and converts them to policy layout."""

    def __init__(self, array: Array, offsets: np.ndarray, kind: str, dims: tuple[int, int] | None, image_scale: float):
        self.array = array
        self.offsets = offsets
        self.kind = kind
        self.dims = dims
        self.image_scale = image_scale
        self.in_memory = isinstance(array, np.ndarray)
        self.squeeze_channel = kind == "depth" and array.ndim == 4  # (T, H, W, 1) depth -> (H, W) frames
        self.contiguous = bool(np.all(np.diff(offsets) == 1))
        self.first, self.last = int(offsets[0]), int(offsets[-1])

    def gather(self, sampler: SequenceSampler, windows: np.ndarray) -> torch.Tensor:
        """(B, K, ...) tensor of this key for the given windows."""
        rows = sampler.rows(windows, self.offsets)
        if self.in_memory:
            values = self.array[rows]
        else:
            values = np.stack([self._read_span(r) for r in rows])
        if self.dims is not None:
            values = values[..., self.dims[0] : self.dims[1]]
        return self.convert(values)

    def read_one(self, start: int, episode_start: int, episode_end: int) -> torch.Tensor:
        """(K, ...) tensor for one window; a plain slice when no padding is needed."""
        low, high = start + self.first, start + self.last
        if self.contiguous and low >= episode_start and high < episode_end:
            values = read_rows(self.array, low, high + 1)
        else:
            rows = np.clip(start + self.offsets, episode_start, episode_end - 1)
            values = self.array[rows] if self.in_memory else self._read_span(rows)
        if self.dims is not None:
            values = values[..., self.dims[0] : self.dims[1]]
        return self.convert(values)

    def _read_span(self, rows: np.ndarray) -> np.ndarray:
        """Rows of one window from a lazy array: one contiguous read, then local indexing (damage is a DataError)."""
        low = int(rows.min())
        span = read_rows(self.array, low, int(rows.max()) + 1)
        return span[rows - low]

    def convert(self, values: np.ndarray) -> torch.Tensor:
        """numpy store layout -> torch policy layout."""
        return to_policy_layout(values, self.kind, self.image_scale, self.squeeze_channel)


class SequenceDataset(Dataset):
    """Windows of `horizon` actions and `n_obs_steps` observations from an EpisodeStore.

    Window semantics, padding and the seeded episode split follow Diffusion Policy:
    pad_before defaults to n_obs_steps - 1 + n_latency_steps and pad_after to n_action_steps - 1
    (Diffusion Policy's configs); `n_latency_steps` shifts actions later than observations.
    `dataset[i]` is one window; `dataset[[i, j, ...]]` is a batch gathered in one go.
    """

    def __init__(
        self,
        store: EpisodeStore,
        shape_meta: Mapping[str, Any] | ShapeMeta,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        n_latency_steps: int = 0,
        pad_before: int | None = None,
        pad_after: int | None = None,
        val_ratio: float = 0.0,
        seed: int = 42,
        max_train_episodes: int | None = None,
        split: str = "train",
    ):
        self.window = Window(horizon, n_obs_steps, n_action_steps)
        if n_latency_steps < 0:
            raise ValueError(f"need n_latency_steps ({n_latency_steps}) >= 0")
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.store = store
        self.shape_meta = parse_shape_meta(shape_meta)
        self.horizon, self.n_obs_steps, self.n_action_steps = horizon, n_obs_steps, n_action_steps
        self.n_latency_steps = n_latency_steps
        self._settings = dict(
            pad_before=pad_before, pad_after=pad_after, val_ratio=val_ratio, seed=seed,
            max_train_episodes=max_train_episodes,
        )
        train_mask, val_mask = split_episodes(store.n_episodes, val_ratio, seed, max_train_episodes)
        self.episode_mask = train_mask if split == "train" else val_mask
        self.sampler = SequenceSampler(
            store.episode_ends,
            sequence_length=horizon + n_latency_steps,
            pad_before=n_obs_steps - 1 + n_latency_steps if pad_before is None else pad_before,
            pad_after=n_action_steps - 1 if pad_after is None else pad_after,
            episode_mask=self.episode_mask,
        )
        self.obs_readers = {key: self._obs_reader(spec) for key, spec in self.shape_meta.obs.items()}
        action = action_source(store, self.shape_meta)
        self.action_offsets = self.window.action_offsets(n_latency_steps)
        self.action_reader = _KeyReader(action, self.action_offsets, "action", None, 1.0)

    @classmethod
    def for_window(cls, store: EpisodeStore, shape_meta: Mapping[str, Any] | ShapeMeta, window: Window,
                   **settings: Any) -> SequenceDataset:
        """The windows a policy declares (`policy.config.window`); `settings` are the other arguments."""
        return cls(store, shape_meta, window.horizon, window.n_obs_steps, window.n_action_steps, **settings)

    def _obs_reader(self, spec: ObsSpec) -> _KeyReader:
        array = obs_source(self.store, spec)
        offsets = self.window.obs_offsets(spec)
        image_scale = image_value_scale(array) if spec.type == "rgb" else 1.0
        return _KeyReader(array, offsets, spec.type, spec.dims, image_scale)

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, index: int | Sequence[int] | np.ndarray) -> dict[str, Any]:
        if np.ndim(index) == 0:
            return self.get_window(int(index))
        return self.get_batch(np.asarray(index, dtype=np.int64))

    def get_window(self, index: int) -> dict[str, Any]:
        """One window: obs (To_k, ...), action (horizon, Da), action_is_pad (horizon,)."""
        window = range(len(self))[index]
        bounds = (int(self.sampler.start[window]), int(self.sampler.episode_start[window]),
                  int(self.sampler.episode_end[window]))
        start, episode_start, episode_end = bounds
        if start + self.action_offsets[0] >= episode_start and start + self.action_offsets[-1] < episode_end:
            is_pad = torch.zeros(self.horizon, dtype=torch.bool)
        else:
            steps = start + self.action_offsets
            is_pad = torch.from_numpy((steps < episode_start) | (steps >= episode_end))
        return {
            "obs": {key: reader.read_one(*bounds) for key, reader in self.obs_readers.items()},
            "action": self.action_reader.read_one(*bounds),
            "action_is_pad": is_pad,
        }

    def window_at(self, rows: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """Windows whose "now" (window step n_obs_steps - 1) is each store row in `rows`, from any episode and not
        only the split's windows: obs (B, To_k, ...), action (B, horizon, Da) padded at the episode's edges as
        training pads them, and action_is_pad (B, horizon) marking steps outside the episode."""
        windows = []
        for row in np.asarray(rows, dtype=np.int64):
            if not 0 <= row < self.store.n_steps:
                raise IndexError(f"row {row} is outside the store's {self.store.n_steps} steps")
            span = self.store.episode_slice(self.store.episode_of(int(row)))
            bounds = (int(row) - (self.n_obs_steps - 1), span.start, span.stop)
            steps = bounds[0] + self.action_offsets
            windows.append({"obs": {key: reader.read_one(*bounds) for key, reader in self.obs_readers.items()},
                            "action": self.action_reader.read_one(*bounds),
                            "action_is_pad": torch.from_numpy((steps < span.start) | (steps >= span.stop))})
        return {"obs": {key: torch.stack([w["obs"][key] for w in windows]) for key in self.obs_readers},
                "action": torch.stack([w["action"] for w in windows]),
                "action_is_pad": torch.stack([w["action_is_pad"] for w in windows])}

    def get_batch(self, windows: np.ndarray) -> dict[str, Any]:
        """A batch of windows: obs (B, To_k, ...), action (B, horizon, Da), action_is_pad (B, horizon)."""
        if len(windows) and (windows.min() < -len(self) or windows.max() >= len(self)):
            raise IndexError(f"window index out of range for {len(self)} windows")
        windows = windows % max(len(self), 1)
        obs = {key: reader.gather(self.sampler, windows) for key, reader in self.obs_readers.items()}
        return {
            "obs": obs,
            "action": self.action_reader.gather(self.sampler, windows),
            "action_is_pad": torch.from_numpy(self.sampler.is_pad(windows, self.action_offsets)),
        }

    def with_obs(self, keys: Sequence[str]) -> SequenceDataset:
        """The same windows reading only these obs keys (and the action): a cheap pass over a few low-dim keys."""
        view = copy.copy(self)
        view.obs_readers = {key: self.obs_readers[key] for key in keys}
        return view

    def get_validation_dataset(self) -> SequenceDataset:
        """The same windows over the held-out episodes."""
        return SequenceDataset(self.store, self.shape_meta, self.horizon, self.n_obs_steps, self.n_action_steps,
                               self.n_latency_steps, split="val", **self._settings)


def make_dataloader(
    dataset: SequenceDataset,
    batch_size: int,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = True,
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader that gathers whole batches at once (one fancy index per key, not B)."""
    generator = torch.Generator().manual_seed(seed)
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    context = None
    if num_workers > 0 and not dataset.store.is_in_memory:
        context = "forkserver"  # zarr's I/O thread does not survive fork
    return DataLoader(
        dataset,
        sampler=BatchSampler(order, batch_size=batch_size, drop_last=drop_last),
        batch_size=None,
        num_workers=num_workers,
        multiprocessing_context=context,
        persistent_workers=persistent_workers and num_workers > 0,
    )
