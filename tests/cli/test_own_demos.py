"""The README's "Train on your own demos", as a new user runs it: convert a LeRobot v2.1 dataset (with video) or a
robomimic HDF5, train with data= only, evaluate offline and predict. No YAML is written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from robopolicy.cli import main
from robopolicy.datasets.store import EpisodeStore
from tests.datasets.test_convert import write_lerobot_v21, write_robomimic

TINY = ["policy.settings.backbone.unet.down_dims=[16,32,64]", "policy.settings.backbone.unet.step_embed_dim=16",
        "encoder.image.base_width=8", "encoder.image.feature_dim=16", "training.batch_size=4",
        "training.num_workers=0", "training.max_steps=3", "training.val_every=3", "training.checkpoint_every=3",
        "training.val_batches=1", "training.action_error_windows=4", "optim.warmup_steps=1",
        "logging.tensorboard=false"]


def run_cli(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def train_evaluate_predict(tmp_path: Path, store: Path, capsys, *extra: str) -> tuple[dict, dict, dict]:
    """train data= -> eval (offline, the default without a simulator) -> predict, as the README shows them."""
    run_dir = tmp_path / "run"
    run_cli(capsys, "train", f"data={store}", f"run_dir={run_dir}", *TINY, *extra)
    task = yaml.safe_load((run_dir / "task.yaml").read_text())
    checkpoint = run_dir / "checkpoints" / "last"
    evaluation = run_cli(capsys, "eval", str(checkpoint), "n_plots=1")
    prediction = run_cli(capsys, "predict", str(checkpoint), "episode=0")
    return task, evaluation, prediction


def test_a_lerobot_dataset_with_video_trains_evaluates_offline_and_predicts(tmp_path, capsys):
    write_lerobot_v21(tmp_path / "lerobot")
    store = tmp_path / "demos.zarr"
    converted = run_cli(capsys, "dataset", "convert", "--from", "lerobot", str(tmp_path / "lerobot"), str(store))
    assert converted["episodes"] == 2  # the third episode's video is short: reported and dropped
    task, evaluation, prediction = train_evaluate_predict(tmp_path, store, capsys)
    assert task["shape_meta"] == {
        "obs": {"images_front": {"shape": [3, 32, 48], "type": "rgb", "source": "observation.images.front"},
                "images_wrist": {"shape": [3, 8, 10], "type": "rgb", "source": "observation.images.wrist"},
                "state": {"shape": [2], "type": "low_dim", "source": "observation.state"},
                "instruction": {"shape": [96], "type": "text"}},  # its episodes name two tasks
        "action": {"shape": [2]}}
    assert task["control_hz"] == 10.0 and task["env"] is None
    assert evaluation["held_out"] is True and evaluation["n_episodes"] == 1 and evaluation["mse"] > 0
    assert Path(evaluation["plots"][0]).is_file()
    lengths = EpisodeStore.open(store).episode_lengths
    assert prediction["rows"] == list(range(0, int(lengths[0]), 8))
    chunks = np.array(prediction["chunks"])
    assert chunks.shape == (len(prediction["rows"]), 16, 2) and np.isfinite(chunks).all()


def test_a_robomimic_file_trains_evaluates_offline_and_predicts(tmp_path, capsys):
    write_robomimic(tmp_path / "lift.hdf5")
    store = tmp_path / "lift.zarr"
    run_cli(capsys, "dataset", "convert", "--from", "robomimic", str(tmp_path / "lift.hdf5"), str(store))
    # its demos are 4 to 7 steps long: a shorter horizon, set on the command line
    task, evaluation, prediction = train_evaluate_predict(
        tmp_path, store, capsys, "policy.settings.horizon=8", "policy.settings.n_action_steps=4")
    assert task["shape_meta"]["action"] == {"shape": [7]}
    assert set(task["shape_meta"]["obs"]) == {"agentview_image", "robot0_eef_pos"}
    assert evaluation["n_windows"] >= 1 and np.isfinite(evaluation["executed_mse"])
    assert np.array(prediction["chunks"]).shape[1:] == (8, 7)


@pytest.mark.parametrize("argv, message", [
    (["train", "data=MISSING.zarr"], "MISSING.zarr"),
    (["train", "task=my_task.yaml"], "task=my_task.yaml: no such file"),
])
def test_first_mistakes_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.splitlines()) <= 3
