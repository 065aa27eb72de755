"""An exported artifact behind the Policy interface the evaluator uses, so simulation results are
measured on exactly the program that runs on the robot."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robopolicy.datasets.shape_meta import parse_shape_meta
from robopolicy.deploy.artifact import NOISE_INPUT, Artifact, load_artifact
from robopolicy.policies.act.ensemble import TemporalEnsembler
from robopolicy.policies.base import PolicyConfig


def is_artifact(path: str | Path) -> bool:
    """Whether `path` is an artifact directory written by `robopolicy export` (not a checkpoint)."""
    path = Path(path)
    return (path / "meta.json").is_file() and not (path / "config.yaml").is_file()


class ArtifactPolicy:
    """predict_action / reset over an Artifact; ACT's temporal ensembling is applied as the checkpoint would."""

    device = torch.device("cpu")

    def __init__(self, artifact: Artifact):
        meta = artifact.meta
        self.artifact = artifact
        self.config = PolicyConfig(horizon=meta["horizon"], n_obs_steps=meta["n_obs_steps"],
                                   n_action_steps=meta["n_action_steps"])
        self.shape_meta = parse_shape_meta(meta["shape_meta"])
        self.action_dim = artifact.noise_shape[1]
        self.takes_noise = artifact.takes_noise
        coeff = meta.get("temporal_ensemble_coeff")
        self.ensembler = TemporalEnsembler(coeff) if coeff is not None else None

    @classmethod
    def load(cls, directory: str | Path, threads: int | None = None) -> ArtifactPolicy:
        return cls(load_artifact(directory, threads))

    def predict_action(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
                       noise: torch.Tensor | None = None, **_: Any) -> dict[str, torch.Tensor]:
        """Raw-unit actions as Policy.predict_action gives them; noise is drawn from `generator` when not given."""
        inputs = {k: v.detach().cpu().numpy() for k, v in obs.items()}
        if self.takes_noise:
            if noise is None:
                batch = next(iter(obs.values())).shape[0]
                noise = torch.randn((batch, *self.artifact.noise_shape), generator=generator)
            inputs[NOISE_INPUT] = noise.cpu().numpy()
        chunk = torch.from_numpy(self.artifact.run(inputs))
        start = self.config.action_start
        if self.ensembler is not None:
            return {"action": self.ensembler.update(chunk[:, start:]).unsqueeze(1), "action_pred": chunk}
        return {"action": chunk[:, start : start + self.config.n_action_steps], "action_pred": chunk}

    def reset(self) -> None:
        if self.ensembler is not None:
            self.ensembler.reset()
