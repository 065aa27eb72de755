"""An exported artifact behind the Policy interface the evaluator uses, so simulation results are
measured on exactly the program that runs on the robot: `robopolicy eval ARTIFACT`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from robopolicy.datasets.shape_meta import parse_shape_meta
from robopolicy.datasets.task import TaskConfig
from robopolicy.datasets.text import instruction_texts
from robopolicy.envs.evaluate import CHECKPOINT_OPTIONS, evaluate_checkpoint, evaluate_in_env
from robopolicy.policies.act.ensemble import TemporalEnsembler
from robopolicy.policies.base import PolicyConfig
from robopolicy.runtime.artifact import NOISE_INPUT, Artifact, is_artifact, load_artifact
from robopolicy.settings import parse_overrides


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
        self.checked: set[str] = set()  # instructions already checked against the artifact's training ones

    @classmethod
    def load(cls, directory: str | Path, threads: int | None = None, trusted: bool = False) -> ArtifactPolicy:
        return cls(load_artifact(directory, threads, trusted))

    def predict_action(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
                       noise: torch.Tensor | None = None, **_: Any) -> dict[str, torch.Tensor]:
        """Raw-unit actions as Policy.predict_action gives them; noise is drawn from `generator` when not given."""
        inputs = {k: v.detach().cpu().numpy() for k, v in obs.items()}
        for spec in self.artifact.text_inputs:
            self.check_instructions(set(instruction_texts(inputs[spec["name"]])))
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

    def check_instructions(self, texts: set[str]) -> None:
        """Refuse an instruction the training data never had where the artifact knows only those (the evaluator
        logs the others, from the training store)."""
        for text in sorted(texts - self.checked):
            self.artifact.check_instruction(text)
            self.checked.add(text)

    def reset(self) -> None:
        if self.ensembler is not None:
            self.ensembler.reset()


def evaluate_artifact(directory: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate an artifact in the simulator its meta.json names; writes into <artifact>/eval (or out=).

    Rollout and env.* overrides are those of a checkpoint; out= and threads= too, but not the weights or
    sampling (the artifact runs on the CPU with what it was exported with); trusted=true loads TorchScript."""
    directory = Path(directory)
    options = parse_overrides(overrides)
    wrong = sorted(set(options) & (set(CHECKPOINT_OPTIONS) - {"out", "threads"}))
    if wrong:
        raise ValueError(f"{wrong} apply to checkpoints; the artifact {directory} runs on the CPU with the weights "
                         "and sampling it was exported with")
    out, threads, trusted = options.pop("out", None), options.pop("threads", None), options.pop("trusted", False)
    if threads:
        torch.set_num_threads(int(threads))
    policy = ArtifactPolicy.load(directory, threads, trusted is True)
    return evaluate_in_env(policy, artifact_task(policy.artifact.meta), directory / "meta.json", options,
                           Path(out or directory / "eval"), directory)


def artifact_task(meta: Mapping[str, Any]) -> TaskConfig:
    """The task an artifact's meta.json describes: its env and the store and split it was trained on (artifacts
    exported before the split was recorded evaluate offline with data=STORE)."""
    return TaskConfig.from_dict({"name": meta.get("task") or "artifact", "shape_meta": meta["shape_meta"],
                                 "env": meta.get("env"), "dataset": meta.get("dataset") or {"path": ""}})


def evaluate(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """`robopolicy eval PATH`: an exported artifact (evaluate_artifact) or a checkpoint (evaluate_checkpoint)."""
    return (evaluate_artifact if is_artifact(path) else evaluate_checkpoint)(path, overrides)
