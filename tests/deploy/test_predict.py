"""Predictor: raw actions from store-layout observations, the same for a checkpoint and its artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robopolicy.cli import main
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.deploy.export import export_checkpoint
from robopolicy.deploy.predict import Predictor
from robopolicy.training.run import train
from tests.deploy.test_export import IMAGE_ENCODER
from tests.tiny_runs import TWO_STEP_UNET


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, pusht_path):
    """A tiny image policy trained 2 steps from the store alone, and its artifact."""
    root = tmp_path_factory.mktemp("predict")
    train([f"data={pusht_path}", "obs=[img,state]", f"run_dir={root / 'run'}", *TWO_STEP_UNET, *IMAGE_ENCODER])
    checkpoint = root / "run" / "checkpoints" / "last"
    export_checkpoint(checkpoint, [f"out={root / 'artifact'}", "control_hz=10"])
    return checkpoint, root / "artifact"


def store_layout_obs(pusht_path, now: int) -> dict[str, np.ndarray]:
    """The last two steps of each key as the store holds them (Push-T's frames are float 0..255 HWC)."""
    store = EpisodeStore.open(pusht_path)
    return {"img": store.read("img", now - 1, now + 1), "state": store.read("state", now - 1, now + 1)}


def test_predict_from_store_layout_equals_the_policy_on_the_training_window(image_run, pusht_path):
    checkpoint, _ = image_run
    predictor = Predictor.load(checkpoint)
    assert predictor.inputs == {"img": {"source": "img", "steps": 2, "shape": [96, 96, 3], "type": "rgb"},
                                "state": {"source": "state", "steps": 2, "shape": [5], "type": "low_dim"}}
    now = 40
    actions = predictor.predict(store_layout_obs(pusht_path, now), seed=3)
    window = SequenceDataset(EpisodeStore.open(pusht_path), predictor.policy.shape_meta, 16, 2, 8).window_at([now])
    expected = predictor.policy.predict_action(window["obs"], generator=torch.Generator().manual_seed(3))
    assert actions.shape == (8, 2)
    np.testing.assert_allclose(actions, expected["action"][0].numpy(), rtol=1e-4, atol=1e-2)  # float32 in raw units of up to 512
    uint8 = {**store_layout_obs(pusht_path, now)}
    uint8["img"] = uint8["img"].astype(np.uint8)  # whole values: uint8 frames give the same actions
    np.testing.assert_allclose(predictor.predict(uint8, seed=3), actions, rtol=1e-4, atol=1e-2)  # float32 in raw units of up to 512
    assert predictor.predict_chunk(store_layout_obs(pusht_path, now), seed=3).shape == (16, 2)


def test_the_artifact_predicts_what_its_checkpoint_predicts(image_run, pusht_path):
    checkpoint, artifact = image_run
    obs = store_layout_obs(pusht_path, 75)
    from_checkpoint = Predictor.load(checkpoint).predict(obs, seed=1)
    from_artifact = Predictor.load(artifact).predict(obs, seed=1)
    np.testing.assert_allclose(from_artifact, from_checkpoint, rtol=1e-4, atol=1e-3)


def test_a_wrong_observation_names_the_key_and_the_expected_shape(image_run, pusht_path):
    predictor = Predictor.load(image_run[0])
    obs = store_layout_obs(pusht_path, 40)
    with pytest.raises(ValueError, match=r"observation 'img' must be \(2, 96, 96, 3\)"):
        predictor.predict({**obs, "img": obs["img"][-1:]})
    with pytest.raises(ValueError, match="observation 'state' .* is missing"):
        predictor.predict({"img": obs["img"]})


def test_predict_cli_gives_the_chunks_of_a_recorded_episode(image_run, pusht_path, tmp_path, capsys):
    _, artifact = image_run
    out = tmp_path / "chunks.npz"
    assert main(["predict", str(artifact), "episode=2", "stride=10", f"out={out}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    length = int(EpisodeStore.open(pusht_path).episode_lengths[2])
    saved = np.load(out)
    assert printed["rows"] == list(range(0, length, 10)) and printed["data"] == str(pusht_path)
    assert saved["chunks"].shape == (len(printed["rows"]), 16, 2) == saved["recorded"].shape
    recorded = EpisodeStore.open(pusht_path).episode(2, ["action"])["action"]
    np.testing.assert_array_equal(saved["recorded"][1, 1], recorded[10])  # chunk row 1 is "now"
