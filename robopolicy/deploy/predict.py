"""Actions out of a trained policy, for a checkpoint or an exported artifact alike.

`Predictor.load(path).predict(obs)` takes observations in store layout (uint8 (H, W, C) frames,
low-dim values in raw units, the last n_obs_steps of each key, oldest first) and returns raw
actions; `robopolicy predict PATH data=STORE episode=N` runs it over a recorded episode.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robopolicy.datasets.layout import obs_offsets, policy_layout_array
from robopolicy.datasets.shape_meta import ObsSpec
from robopolicy.datasets.task import TaskConfig
from robopolicy.datasets.text import instruction_tokens
from robopolicy.deploy.artifact_policy import ArtifactPolicy, artifact_task
from robopolicy.envs.offline import predict_episode, recorded_windows
from robopolicy.envs.runner import EvaluatedPolicy
from robopolicy.policies.checkpoint import load_policy, read_config
from robopolicy.runtime.artifact import is_artifact
from robopolicy.settings import build_settings, parse_overrides

log = logging.getLogger(__name__)


class Predictor:
    """A checkpoint's policy or an artifact, called with store-layout observations; returns raw-unit actions."""

    def __init__(self, policy: EvaluatedPolicy, task: TaskConfig, source: Path):
        self.policy, self.task, self.source = policy, task, source

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", use_ema: bool = True, threads: int | None = None,
             trusted: bool = False) -> Predictor:
        """A checkpoint directory (its EMA weights by default) or an artifact directory from `robopolicy export`."""
        path = Path(path)
        if threads:
            torch.set_num_threads(threads)
        if is_artifact(path):
            policy = ArtifactPolicy.load(path, threads, trusted)
            return cls(policy, artifact_task(policy.artifact.meta), path)
        task = TaskConfig.from_dict(read_config(path)["task"], strict=False)
        return cls(load_policy(path, use_ema=use_ema, device=device), task, path)

    @property
    def inputs(self) -> dict[str, dict[str, Any]]:
        """What `predict` takes per observation key: its store key, steps and the store-layout shape of a step."""
        return {key: {"source": spec.source, "steps": self._steps(spec), "shape": list(store_shape(spec)),
                      "type": spec.type} for key, spec in self.policy.shape_meta.obs.items()}

    def _steps(self, spec: ObsSpec) -> int:
        return len(obs_offsets(spec, self.policy.config.n_obs_steps))

    def predict(self, obs: Mapping[str, np.ndarray | str], seed: int = 0) -> np.ndarray:
        """The actions to execute from now on: (n_action_steps, Da) in raw units."""
        return self._run(obs, seed)["action"]

    def predict_chunk(self, obs: Mapping[str, np.ndarray | str], seed: int = 0) -> np.ndarray:
        """The whole predicted chunk: (horizon, Da) raw units, row n_obs_steps - 1 being the current step."""
        return self._run(obs, seed)["action_pred"]

    @torch.no_grad()
    def _run(self, obs: Mapping[str, np.ndarray | str], seed: int) -> dict[str, np.ndarray]:
        batch = {key: torch.from_numpy(np.ascontiguousarray(self._policy_input(obs, spec))).to(self.policy.device)
                 for key, spec in self.policy.shape_meta.obs.items()}
        out = self.policy.predict_action(batch, generator=torch.Generator().manual_seed(seed))
        self.policy.reset()
        return {k: v[0].float().cpu().numpy() for k, v in out.items()}

    def _policy_input(self, obs: Mapping[str, np.ndarray | str], spec: ObsSpec) -> np.ndarray:
        """One key's store-layout steps (given under its obs name or its store key) -> (1, K, ...) policy layout; a
        text key takes the instruction as a string."""
        name = spec.key if spec.key in obs else spec.source
        if name not in obs:
            raise ValueError(f"{self.source}: observation {spec.key!r} (store key {spec.source!r}) is missing; give "
                             f"{sorted(self.inputs)} as (steps, ...) arrays in store layout")
        if spec.type == "text":  # the instruction, as its text (or its byte tokens)
            given = obs[name]
            tokens = instruction_tokens([given], spec.shape[0]) if isinstance(given, str) else np.asarray(given)
            return policy_layout_array(tokens.reshape(1, 1, spec.shape[0]), "text")
        values = np.asarray(obs[name])
        if spec.dims is not None and values.shape[-1:] != spec.shape[-1:]:
            values = values[..., spec.dims[0] : spec.dims[1]]
        expected = (self._steps(spec), *store_shape(spec))
        squeeze = spec.type == "depth" and values.ndim == len(expected) + 1 and values.shape[-1] == 1
        chw = spec.type == "rgb" and values.shape == (expected[0], *spec.shape)  # a channels-first store's frames
        if (values[..., 0] if squeeze else values).shape != expected and not chw:
            raise ValueError(f"{self.source}: observation {name!r} must be {expected} (the last {expected[0]} steps "
                             f"in store layout), got {values.shape}")
        scale = 255.0 if values.dtype == np.uint8 or (spec.type == "rgb" and values.max() > 1.0) else 1.0
        return policy_layout_array(values[None], spec.type, scale, squeeze)


def store_shape(spec: ObsSpec) -> tuple[int, ...]:
    """A step of one key in store layout: frames (H, W, C), everything else as in shape_meta."""
    if spec.type == "rgb":
        c, h, w = spec.shape
        return h, w, c
    return tuple(spec.shape)


@dataclass
class PredictConfig:
    """`robopolicy predict CHECKPOINT_OR_ARTIFACT key=value ...`."""

    data: str | None = None  # the episode store (default: the one the policy was trained on)
    episode: int = 0  # the store episode to predict on
    stride: int | None = None  # steps between predictions (default: n_action_steps)
    seed: int = 0
    out: str | None = None  # an .npz file for rows, chunks and recorded actions (default: print them as JSON)
    device: str = "cpu"
    threads: int | None = None
    trusted: bool = False  # allow a TorchScript artifact (it runs code from the file when loaded)


def predict_recorded(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The policy's chunks at every stride-th step of a recorded episode: {rows, chunks, recorded}, raw units."""
    options = build_settings(PredictConfig, parse_overrides(overrides), "predict")
    predictor = Predictor.load(path, device=options.device, threads=options.threads, trusted=options.trusted)
    policy = predictor.policy
    windows = recorded_windows(policy, predictor.task.dataset, options.data)
    data = windows.store.path
    if not -windows.store.n_episodes <= options.episode < windows.store.n_episodes:
        raise ValueError(f"episode={options.episode}: {data} has {windows.store.n_episodes} episodes")
    result = predict_episode(policy, windows, range(windows.store.n_episodes)[options.episode],
                             options.stride or policy.config.n_action_steps, 32,
                             torch.Generator().manual_seed(options.seed))
    summary = {"source": str(path), "data": str(data), "episode": result.episode, "rows": result.rows.tolist(),
               "chunk_start": policy.config.action_start, "n_action_steps": policy.config.n_action_steps}
    if options.out:
        np.savez(options.out, rows=result.rows, chunks=result.pred, recorded=result.target, valid=result.valid)
        return {**summary, "out": options.out, "chunks_shape": list(result.pred.shape)}
    return {**summary, "chunks": result.pred.tolist()}
