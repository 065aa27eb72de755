"""Offline evaluation: action errors against recorded episodes, for tasks without a simulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robopolicy.cli import main
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.shape_meta import parse_shape_meta
from robopolicy.datasets.store import EpisodeStore
from robopolicy.datasets.task import DatasetConfig
from robopolicy.envs.evaluate import evaluate_checkpoint
from robopolicy.envs.offline import OfflineEvalConfig, error_table, evaluate_offline
from robopolicy.policies.base import PolicyConfig
from robopolicy.training.run import train
from tests.tiny_runs import TWO_STEP_UNET

STATE_META = {"obs": {"state": {"shape": [5], "type": "low_dim"}}, "action": {"shape": [2]}}


def test_error_table_counts_only_valid_steps_per_dimension_and_step():
    pred = np.zeros((1, 2, 2))
    target = np.array([[[1.0, 2.0], [30.0, 40.0]]])
    table = error_table(pred, target, np.array([[True, False]]), scale=np.array([1.0, 2.0]))
    assert table["raw"]["mse"] == 2.5 and table["raw"]["mae"] == 1.5
    assert table["raw"]["mse_per_dim"] == [1.0, 4.0] and table["raw"]["mse_per_step"] == [2.5, 0.0]
    assert table["normalized"]["mse"] == 1.0 and table["normalized"]["mae_per_dim"] == [1.0, 1.0]


def test_windows_at_a_row_equal_the_training_windows_there(pusht_path):
    store = EpisodeStore.open(pusht_path)
    meta = {"obs": {"img": {"shape": [3, 96, 96], "type": "rgb"}, "state": {"shape": [5], "type": "low_dim"}},
            "action": {"shape": [2]}}
    dataset = SequenceDataset(store, meta, horizon=16, n_obs_steps=2, n_action_steps=8)
    for window in (0, 37):  # padded before the first step, and inside the first episode
        expected = dataset.get_window(window)
        got = dataset.window_at([int(dataset.sampler.start[window]) + 1])
        for key in ("img", "state"):
            torch.testing.assert_close(got["obs"][key][0], expected["obs"][key])
        torch.testing.assert_close(got["action"][0], expected["action"])
        assert torch.equal(got["action_is_pad"][0], expected["action_is_pad"])
    second = store.episode_slice(1).start
    first = dataset.window_at([second])  # "now" at an episode's first step: the step before it is padding
    torch.testing.assert_close(first["obs"]["state"][0, 0], first["obs"]["state"][0, 1])
    assert first["action_is_pad"][0].tolist() == [True] + [False] * 15


class ConstantPolicy:
    """Predicts the same action everywhere: its errors are computable from the store alone."""

    device = torch.device("cpu")
    takes_noise = False

    def __init__(self, value: list[float]):
        self.config = PolicyConfig(horizon=1, n_obs_steps=1, n_action_steps=1)
        self.shape_meta = parse_shape_meta(STATE_META)
        self.action_dim = 2
        self.value = torch.tensor(value)

    def predict_action(self, obs, generator=None, **_):
        chunk = self.value.expand(obs["state"].shape[0], 1, 2).clone()
        return {"action": chunk, "action_pred": chunk}

    def reset(self) -> None:
        pass


def test_offline_errors_of_a_constant_policy_match_the_recorded_actions(tmp_path, pusht_path):
    settings = OfflineEvalConfig(episodes=[0, 5], n_plots=1)
    summary = evaluate_offline(ConstantPolicy([250.0, 300.0]), DatasetConfig(path=str(pusht_path), val_ratio=0.1),
                               settings, tmp_path, "constant")
    store = EpisodeStore.open(pusht_path)
    actions = np.concatenate([store.episode(e, ["action"])["action"] for e in (0, 5)]).astype(np.float64)
    err = np.array([250.0, 300.0]) - actions
    every = store.read("action").astype(np.float64)
    half_range = (every.max(axis=0) - every.min(axis=0)) / 2
    assert summary["n_windows"] == len(actions) and summary["held_out"] is False  # 0 and 5 were trained on
    np.testing.assert_allclose(summary["chunk"]["raw"]["mse_per_dim"], (err**2).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(summary["mae"], np.abs(err).mean(), rtol=1e-9)
    np.testing.assert_allclose(summary["normalized_mse"], ((err / half_range) ** 2).mean(), rtol=1e-9)
    assert summary["executed_mse"] == summary["mse"]  # one-step chunks: every step is executed
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["mse"] == summary["mse"] and [Path(p).name for p in saved["plots"]] == ["episode_0000.png"]
    assert Path(saved["plots"][0]).stat().st_size > 5000


@pytest.fixture(scope="module")
def state_checkpoint(tmp_path_factory, pusht_path) -> Path:
    run = tmp_path_factory.mktemp("offline") / "run"
    train([f"data={pusht_path}", "obs=[state]", f"run_dir={run}", *TWO_STEP_UNET])
    return run / "checkpoints" / "last"


def test_eval_of_a_task_without_a_simulator_is_offline_on_the_validation_episodes(state_checkpoint, capsys):
    assert main(["eval", str(state_checkpoint), "n_plots=2", "stride=4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads(Path(printed["eval_json"]).read_text())
    store = EpisodeStore.open(summary["data"])
    assert summary["held_out"] is True and len(summary["episodes"]) == round(0.1 * store.n_episodes)
    assert summary["n_windows"] == sum(-(-int(store.episode_lengths[e]) // 4) for e in summary["episodes"])
    assert len(summary["chunk"]["raw"]["mse_per_step"]) == 16 and len(summary["executed"]["raw"]["mse_per_dim"]) == 2
    assert printed["mse"] > 0 and len(printed["plots"]) == 2
    assert main(["eval", str(state_checkpoint), "offline=false"]) == 2
    assert "no simulator to roll out in" in capsys.readouterr().err


def test_a_task_with_a_simulator_evaluates_offline_when_asked(tmp_path, pusht_path):
    run = tmp_path / "run"
    train(["task=pusht_keypoint", f"task.dataset.path={pusht_path}", f"run_dir={run}", *TWO_STEP_UNET])
    summary = evaluate_checkpoint(run / "checkpoints" / "last", ["offline=true", "episodes=[3]", "n_plots=0"])
    assert summary["mode"] == "offline" and summary["episodes"] == [3] and summary["plots"] == []
    assert summary["n_windows"] == -(-int(EpisodeStore.open(pusht_path).episode_lengths[3]) // 8)
