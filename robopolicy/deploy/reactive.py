"""The fast reactive layer: a small network that corrects a chunk policy's planned actions with the newest low-dim
observation, at the control rate, between chunks (`robopolicy reactive CHECKPOINT artifact=DIR`, then
`robopolicy deploy DIR reactive=true`).

Design. A chunk policy (the slow layer) plans from observations that are already old when its actions run: the
sensor's latency, the inference time, and the time the chunk has been executing. Reactive Diffusion Policy (Xue et
al., RSS 2025) splits control into a slow policy that plans chunks in a latent space and a fast decoder that turns the
plan into actions with the newest tactile or force reading at the control rate. Real-time chunking (Black et al.
2025) keeps chunk boundaries smooth but cannot see a new observation until the next chunk. Here the slow layer stays
the exported chunk policy, unchanged, and the fast layer is a corrector around it:

    a(t) = a_plan(t) + f(a_plan(t), o(t0), o(t_new) - o(t0), k, m)

where t0 is the capture time of the observation the chunk was planned from, t = t0 + k dt the planned action's time
and t_new = t0 + m dt the capture time of the newest observation (0 <= m <= k); o is the chosen low-dim keys' latest
step (the object's pose, a force reading), and f is a two-layer MLP whose output starts at zero, so an untrained layer
changes nothing. It is trained on the same demos the policy learned from: for windows of the training episodes the
slow policy's own chunk (so the layer learns to fix the errors the policy actually makes), the demo's action at
t0 + k as the target, and the demo's observation at t0 + m, m drawn uniformly in [0, k]. This is a regression on
precomputed pairs (seconds of CPU), not a policy, so it has its own small fit loop rather than the trainer.
It is exported as `reactive.onnx` and `reactive.json` in the artifact directory; the runtime (runtime/reactive.py)
runs it with onnxruntime at every tick that brings a newer observation, on the planned actions not yet sent, and sends
the corrected ones through the same safety checks.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robopolicy.datasets.normalizer import ABSOLUTE_ACTION
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.datasets.task import TaskConfig
from robopolicy.policies.base import Policy
from robopolicy.policies.checkpoint import load_policy, read_config
from robopolicy.progress import progress
from robopolicy.runtime.reactive import REACTIVE_FILES, REACTIVE_INPUTS
from robopolicy.settings import build_settings, parse_overrides

log = logging.getLogger(__name__)


@dataclass
class ReactiveConfig:
    """What `robopolicy reactive` fits, and where it writes it."""

    artifact: str = ""  # the artifact directory (exported from the same checkpoint) that gets reactive.onnx
    keys: list[str] | None = None  # low-dim obs keys it reads (default: every low_dim key of the policy)
    windows: int = 4000  # slow-policy chunks drawn from the training episodes to make the pairs
    steps: int = 3000  # fit steps
    batch_size: int = 512
    lr: float = 1e-3
    hidden: int = 256
    seed: int = 0
    threads: int = 0  # torch threads (0: torch's default)


# Standardized features are clipped to this many standard deviations (and a spread under 0.01 counts as 0.01), so
# an input the demos never showed cannot drive the correction far.
FEATURE_LIMIT = 5.0


class Corrector(nn.Module):
    """a_plan + MLP(standardized features) * action scale; the last layer starts at zero (no correction)."""

    def __init__(self, action_dim: int, obs_dim: int, horizon: int, hidden: int, feature_stats: np.ndarray,
                 action_scale: np.ndarray):
        super().__init__()
        self.horizon = horizon
        features = action_dim + 2 * obs_dim + 2
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.Mish(),
                                 nn.Linear(hidden, action_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("mean", torch.as_tensor(feature_stats[0], dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.maximum(feature_stats[1], 1e-2), dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.maximum(action_scale, 1e-2), dtype=torch.float32))

    @staticmethod
    def features(plan: torch.Tensor, obs0: torch.Tensor, obs_new: torch.Tensor, k: torch.Tensor, m: torch.Tensor,
                 horizon: int) -> torch.Tensor:
        return torch.cat([plan, obs0, obs_new - obs0, k / horizon, m / horizon], dim=-1)

    def forward(self, plan: torch.Tensor, obs0: torch.Tensor, obs_new: torch.Tensor, k: torch.Tensor,
                m: torch.Tensor) -> torch.Tensor:
        x = (self.features(plan, obs0, obs_new, k, m, self.horizon) - self.mean) / self.std
        return plan + self.net(x.clamp(-FEATURE_LIMIT, FEATURE_LIMIT)) * self.scale


def _obs_rows(store: EpisodeStore, policy: Policy, keys: list[str]) -> np.ndarray:
    """(steps, F): the keys' values at every store row, concatenated (raw units)."""
    columns = []
    for key in keys:
        spec = policy.shape_meta.obs[key]
        values = np.asarray(store[spec.source][:], dtype=np.float32).reshape(store.n_steps, -1)
        columns.append(values[:, spec.dims[0] : spec.dims[1]] if spec.dims is not None else values)
    return np.concatenate(columns, axis=1)


def training_pairs(policy: Policy, dataset: SequenceDataset, keys: list[str], n_windows: int, n_latency_steps: int,
                   rng: np.random.Generator, batch: int = 256) -> dict[str, np.ndarray]:
    """(plan, obs0, obs_new, k, m, target) rows: the slow policy's chunk at `n_windows` rows of the dataset's
    episodes, each planned action with a newer observation m in [0, k] steps after the chunk's."""
    store = dataset.store
    rows = np.concatenate([np.arange(store.episode_starts[e], store.episode_ends[e])
                           for e in np.flatnonzero(dataset.episode_mask)])
    rows = rng.choice(rows, size=min(n_windows, len(rows)), replace=False)
    observed = _obs_rows(store, policy, keys)
    start = policy.config.action_start
    parts: dict[str, list[np.ndarray]] = {name: [] for name in (*REACTIVE_INPUTS, "target")}
    for first in progress(range(0, len(rows), batch), "reactive pairs", total=-(-len(rows) // batch)):
        now = rows[first : first + batch]
        window = dataset.window_at(now)
        with torch.no_grad():
            plan = policy.predict_action(window["obs"])["action_pred"][:, start:].numpy()
        target = window["action"][:, start:].numpy()
        valid = ~window["action_is_pad"][:, start:].numpy()
        ends = np.array([store.episode_ends[store.episode_of(int(r))] for r in now])
        steps = np.arange(plan.shape[1]) + n_latency_steps  # k of each planned row
        for i, row in enumerate(now):
            j = np.flatnonzero(valid[i])
            k = steps[j]
            m = np.floor(rng.uniform(0, 1, len(j)) * (k + 1)).astype(np.int64)
            newest = np.minimum(row + m, ends[i] - 1)
            parts["plan"].append(plan[i, j])
            parts["obs0"].append(np.repeat(observed[row][None], len(j), 0))
            parts["obs_new"].append(observed[newest])
            parts["k"].append(k[:, None].astype(np.float32))
            parts["m"].append((newest - row)[:, None].astype(np.float32))
            parts["target"].append(target[i, j])
    return {name: np.concatenate(values).astype(np.float32) for name, values in parts.items()}


def fit(pairs: dict[str, np.ndarray], horizon: int, action_scale: np.ndarray, settings: ReactiveConfig) -> Corrector:
    """Fit the corrector by AdamW on mean squared error in units of `action_scale` (half of each action dimension's
    training range, as the policy's limits normalization scales it)."""
    tensors = {name: torch.from_numpy(values) for name, values in pairs.items()}
    inputs = [tensors[name] for name in REACTIVE_INPUTS]
    features = Corrector.features(*inputs, horizon).numpy()
    model = Corrector(pairs["plan"].shape[1], pairs["obs0"].shape[1], horizon, settings.hidden,
                      np.stack([features.mean(0), features.std(0)]), action_scale)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    generator = torch.Generator().manual_seed(settings.seed)
    for _ in progress(range(settings.steps), "reactive fit", total=settings.steps):
        index = torch.randint(len(features), (settings.batch_size,), generator=generator)
        predicted = model(*(x[index] for x in inputs))
        loss = ((predicted - tensors["target"][index]) / model.scale).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def errors(model: Corrector, pairs: dict[str, np.ndarray]) -> dict[str, float]:
    """RMS error of the plan and of the corrected plan against the demo's actions, in the fit's action units."""
    with torch.no_grad():
        corrected = model(*(torch.from_numpy(pairs[name]) for name in REACTIVE_INPUTS)).numpy()
    scale = model.scale.numpy()
    rms = {name: float(np.sqrt((((values - pairs["target"]) / scale) ** 2).mean()))
           for name, values in (("plan", pairs["plan"]), ("corrected", corrected))}
    return {"plan_rms": rms["plan"], "corrected_rms": rms["corrected"], "pairs": len(corrected)}


def write(model: Corrector, directory: Path, meta: dict[str, Any]) -> None:
    """reactive.onnx (inputs REACTIVE_INPUTS, batch dimension free) and reactive.json beside the artifact."""
    onnx_file, meta_file = (directory / name for name in REACTIVE_FILES)
    example = tuple(torch.zeros(2, width) for width in (model.scale.shape[0], meta["obs_dim"], meta["obs_dim"], 1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, example, str(onnx_file), input_names=list(REACTIVE_INPUTS), output_names=["action"],
                          dynamic_axes={name: {0: "rows"} for name in (*REACTIVE_INPUTS, "action")}, dynamo=False,
                          opset_version=17)
    meta_file.write_text(json.dumps(meta, indent=2))


def fit_reactive(checkpoint: str | Path, overrides: list[str]) -> dict[str, Any]:
    """Fit the reactive layer of a checkpoint's policy on its training demos and write it into the artifact."""
    settings = build_settings(ReactiveConfig, parse_overrides(overrides), "reactive")
    directory = Path(settings.artifact)
    artifact_meta = directory / "meta.json"
    if not settings.artifact or not artifact_meta.is_file():
        raise ValueError(f"artifact={settings.artifact!r} is not an artifact directory: export the checkpoint first "
                         "(robopolicy export CHECKPOINT out=DIR) and pass artifact=DIR")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    policy = load_policy(checkpoint)
    low_dim = [key for key, spec in policy.shape_meta.obs.items() if spec.type == "low_dim"]
    keys = list(settings.keys or low_dim)
    if not keys or set(keys) - set(low_dim):
        raise ValueError(f"keys={keys}: the reactive layer reads low-dim obs keys of the policy, {low_dim}")
    task = TaskConfig.from_dict(read_config(checkpoint)["task"], strict=False)
    data = task.dataset
    store = EpisodeStore.open(data.path)
    train = SequenceDataset.for_window(store, policy.shape_meta, policy.config.window,
                                       n_latency_steps=data.n_latency_steps, val_ratio=data.val_ratio,
                                       seed=data.split_seed, max_train_episodes=data.max_train_episodes)
    splits = {"train": train, "val": train.get_validation_dataset()}
    rng = np.random.default_rng(settings.seed)
    horizon = policy.config.horizon - policy.config.action_start + data.n_latency_steps
    pairs = training_pairs(policy, splits["train"], keys, settings.windows, data.n_latency_steps, rng)
    action = policy.normalizer[ABSOLUTE_ACTION] if ABSOLUTE_ACTION in policy.normalizer else policy.normalizer["action"]
    model = fit(pairs, horizon, ((action.max - action.min) / 2).flatten().numpy(), settings)
    result = {"train": errors(model, pairs)}
    if splits["val"].episode_mask.any():
        result["val"] = errors(model, training_pairs(policy, splits["val"], keys, settings.windows // 4,
                                                     data.n_latency_steps, rng))
    meta = {"keys": keys, "obs_dim": int(pairs["obs0"].shape[1]), "horizon": horizon,
            "checkpoint": str(Path(checkpoint).resolve()), "settings": vars(settings), "errors": result}
    write(model, directory, meta)
    log.info("reactive layer in %s: RMS error of the plan %.3f -> corrected %.3f (%s)", directory,
             result.get("val", result["train"])["plan_rms"], result.get("val", result["train"])["corrected_rms"],
             "held-out episodes" if "val" in result else "training episodes")
    return meta
