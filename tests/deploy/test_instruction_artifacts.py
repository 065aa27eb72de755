"""A policy told its task in words, exported and run: the artifact takes the instruction's byte tokens as an input,
the runtime feeds them from `instruction=` or from a reading (a topic), and refuses what it cannot follow."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.datasets.text import instruction_tokens
from robopolicy.deploy.export import export_checkpoint
from robopolicy.deploy.predict import Predictor
from robopolicy.policies.checkpoint import load_policy
from robopolicy.robots.interface import Reading
from robopolicy.runtime.artifact import load_artifact
from robopolicy.runtime.inference import ArtifactRunner
from robopolicy.runtime.loop import Runtime, RuntimeConfig
from robopolicy.training.run import train
from tests.deploy.test_export import TINY, TRAIN
from tests.policies.test_instruction_conditioning import TASKS, follow_and_mirror
from tests.policies.test_text_encoders import tiny_bert  # noqa: F401 (a fixture used below)

ROWS = np.array([5, 50, 120])  # real windows of the store


@pytest.fixture(scope="module")
def two_task_store(pusht, tmp_path_factory) -> Path:
    """Push-T demos as recorded ("follow the demo") and mirrored ("mirror the demo"), on disk."""
    path = tmp_path_factory.mktemp("store") / "follow_mirror.zarr"
    follow_and_mirror(pusht).copy_to(path)
    with EpisodeStore.open(path, mode="a") as store:
        store.update_attrs({"fps": 10.0})  # Push-T's rate
    return path


def export_trained(store: Path, directory: Path, *extra: str) -> tuple[Path, Path]:
    """(checkpoint, artifact) of a tiny diffusion policy trained 2 steps on `store` with data= only."""
    train([f"data={store}", "policy=diffusion_unet", f"run_dir={directory / 'run'}", *TRAIN, *TINY["diffusion_unet"],
           *extra])
    checkpoint = directory / "run" / "checkpoints" / "last"
    export_checkpoint(checkpoint, [f"out={directory / 'artifact'}"])
    return checkpoint, directory / "artifact"


@pytest.fixture(scope="module")
def learned(two_task_store, tmp_path_factory) -> tuple[Path, Path]:
    return export_trained(two_task_store, tmp_path_factory.mktemp("learned"))


def told(checkpoint: Path, store: Path, text: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Three real observation windows told `text` (policy layout), and fixed initial noise for them."""
    policy = load_policy(checkpoint)
    windows = SequenceDataset.for_window(EpisodeStore.open(store), policy.shape_meta, policy.config.window)
    obs = windows[ROWS]["obs"]
    length = policy.shape_meta.obs["instruction"].shape[0]
    obs["instruction"] = torch.from_numpy(instruction_tokens([text], length)).long().expand(len(ROWS), 1, -1)
    noise = torch.randn(len(ROWS), policy.config.horizon, policy.action_dim, generator=torch.Generator().manual_seed(0))
    return obs, noise


def artifact_chunks(artifact, obs: dict[str, torch.Tensor], noise: torch.Tensor) -> np.ndarray:
    return artifact.run({**{k: v.numpy().astype(np.float32) for k, v in obs.items()}, "noise": noise.numpy()})


def test_the_artifact_takes_the_instruction_and_matches_the_policy(learned, two_task_store):
    checkpoint, directory = learned
    artifact, policy = load_artifact(directory), load_policy(checkpoint)
    spec = next(s for s in artifact.meta["inputs"] if s["name"] == "instruction")
    assert (spec["type"], spec["shape"], spec["instructions"], spec["closed"]) == ("text", [1, 96], list(TASKS), False)
    chunks = {}
    for text in TASKS:
        obs, noise = told(checkpoint, two_task_store, text)
        chunks[text] = artifact_chunks(artifact, obs, noise)
        expected = policy.predict_action(obs, noise=noise)["action_pred"].numpy()
        np.testing.assert_allclose(chunks[text], expected, atol=1e-3, rtol=1e-4)
    assert np.abs(chunks[TASKS[0]] - chunks[TASKS[1]]).max() > 1e-4, "the instruction must change the chunk"


def test_the_runner_needs_an_instruction_and_warns_about_unknown_ones(learned, caplog):
    runner = ArtifactRunner(load_artifact(learned[1]))
    window = {"state": np.zeros((2, 5), np.float32), "keypoint": np.zeros((2, 9, 2), np.float32)}
    with pytest.raises(ValueError, match="give it an instruction"):
        runner(window)
    runner.set_instruction(TASKS[1])
    assert runner(window).shape == (16, 2)
    with caplog.at_level(logging.WARNING):
        runner.set_instruction("spin the block")
    assert "not one of the training data's" in caplog.text and runner.instruction == "spin the block"
    with pytest.raises(ValueError, match="longer than the 96"):
        runner.set_instruction("push the block " * 7)
    assert runner.instruction == "spin the block"  # a refused instruction leaves the last one


class TaskRobot:
    """A robot that replays one real Push-T step as its readings and, once `speaking`, sends a new instruction with
    each poll, as a ROS String topic would deliver it."""

    def __init__(self, store: Path):
        data = EpisodeStore.open(store)
        self.state, self.keypoint = data.read("state", 30, 31)[0], data.read("keypoint", 30, 31)[0]
        self.start, self.speaking, self.sent = time.monotonic(), False, []

    def now(self) -> float:
        return time.monotonic() - self.start

    def poll(self) -> list[Reading]:
        now = self.now()
        readings = [Reading("arm", now, {"state": self.state, "keypoint": self.keypoint})]
        if self.speaking:
            readings.append(Reading("operator", now, {"instruction": TASKS[1]}))
        return readings

    def send(self, actions) -> None:
        self.sent.extend(actions)

    def hold(self) -> None:
        pass

    def stop(self) -> None:
        pass


def test_the_runtime_takes_the_instruction_from_its_settings_and_then_from_a_reading(learned, two_task_store):
    artifact = load_artifact(learned[1])
    robot = TaskRobot(two_task_store)
    runtime = Runtime(artifact, robot, RuntimeConfig(inference="sync", instruction=TASKS[0]))
    assert runtime.runner.instruction == TASKS[0]
    runtime.run(0.5)
    assert runtime.runner.instruction == TASKS[0] and robot.sent
    robot.speaking = True
    runtime.run(0.5)
    assert runtime.runner.instruction == TASKS[1]


def test_a_pretrained_text_encoder_exports_its_training_instructions_only(two_task_store, tiny_bert, tmp_path):  # noqa: F811
    checkpoint, directory = export_trained(two_task_store, tmp_path, "encoder.text.kind=pretrained",
                                           f"encoder.text.pretrained_path={tiny_bert}")
    artifact, policy = load_artifact(directory), load_policy(checkpoint)
    spec = next(s for s in artifact.meta["inputs"] if s["name"] == "instruction")
    assert spec["instructions"] == list(TASKS) and spec["closed"] is True
    for text in TASKS:  # the table gives what the tokenizer and model give
        obs, noise = told(checkpoint, two_task_store, text)
        expected = policy.predict_action(obs, noise=noise)["action_pred"].numpy()
        np.testing.assert_allclose(artifact_chunks(artifact, obs, noise), expected, atol=1e-3, rtol=1e-4)
    runner = ArtifactRunner(artifact)
    with pytest.raises(ValueError, match="exported with the training instructions only"):
        runner.set_instruction("spin the block")
    store = EpisodeStore.open(two_task_store)
    obs = {"state": store.read("state", 29, 31), "keypoint": store.read("keypoint", 29, 31)}
    with pytest.raises(ValueError, match="exported with the training instructions only"):  # evaluation, Predictor
        Predictor.load(directory).predict_chunk({**obs, "instruction": "spin the block"})


def test_predictor_takes_the_instruction_as_text_for_a_checkpoint_and_its_artifact(learned, two_task_store):
    store = EpisodeStore.open(two_task_store)
    obs = {"state": store.read("state", 29, 31), "keypoint": store.read("keypoint", 29, 31)}
    chunks = {}
    for path in learned:
        predictor = Predictor.load(path)
        assert predictor.inputs["instruction"]["type"] == "text"
        chunks[path] = [predictor.predict_chunk({**obs, "instruction": text}) for text in TASKS]
    checkpoint, artifact = (chunks[path] for path in learned)
    np.testing.assert_allclose(artifact, checkpoint, atol=1e-3, rtol=1e-4)
    assert np.abs(checkpoint[0] - checkpoint[1]).max() > 1e-4
