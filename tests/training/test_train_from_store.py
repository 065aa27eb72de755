"""`robopolicy train data=STORE`: the task built from the store, saved as task.yaml and passed back with
task=FILE; progress a user sees when output is not a terminal; a time cap that says it cut the run."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from robopolicy import progress as progress_module
from robopolicy.cli import main
from robopolicy.training.config import RunConfig, compose_config
from robopolicy.training.run import train
from robopolicy.training.trainer import Trainer
from tests.tiny_runs import TWO_STEP_UNET


def test_data_builds_the_task_and_its_encoder_crop_and_command_line_values_win(pusht_path):
    raw = compose_config([f"data={pusht_path}", "obs=[img,state]"])
    assert raw["task"]["name"] == "pusht_cchi_v7_replay" and raw["task"]["env"] is None
    assert raw["task"]["shape_meta"] == {"obs": {"img": {"shape": [3, 96, 96], "type": "rgb"},
                                                 "state": {"shape": [5], "type": "low_dim"}},
                                         "action": {"shape": [2]}}
    assert raw["encoder"]["image"]["crop_shape"] == [86, 86] and raw["run_dir"].startswith("runs/pusht_cchi_v7")
    raw = compose_config([f"data={pusht_path}", "obs=[img]", "encoder.image.crop_shape=[80,80]"])
    assert raw["encoder"]["image"]["crop_shape"] == [80, 80]


def test_a_task_file_is_a_task_and_mistakes_are_one_line_errors(tmp_path, pusht_path):
    task = compose_config([f"data={pusht_path}", "obs=[state]", "action=action"])["task"]
    path = tmp_path / "my_task.yaml"
    path.write_text(yaml.safe_dump({**task, "name": "mine"}))
    raw = compose_config([f"task={path}", "policy=flow"])
    assert raw["task"] == {**task, "name": "mine"} and raw["run_dir"] == "runs/mine/flow"
    with pytest.raises(FileNotFoundError, match="task=/nope/task.yaml: no such file"):
        compose_config(["task=/nope/task.yaml"])
    with pytest.raises(ValueError, match="either data= or task="):
        compose_config([f"data={pusht_path}", "task=pusht_image"])
    with pytest.raises(ValueError, match=r"\['obs'\] pick keys of data=STORE"):
        compose_config(["obs=[img]"])
    code = main(["train", "task=/nope/task.yaml"])
    assert code == 2


def test_training_from_a_store_saves_the_task_to_train_again_with(tmp_path, pusht_path):
    first = tmp_path / "first"
    train([f"data={pusht_path}", "obs=[state]", f"run_dir={first}", *TWO_STEP_UNET])
    saved = yaml.safe_load((first / "task.yaml").read_text())
    assert saved == yaml.safe_load((first / "config.yaml").read_text())["task"]
    assert saved["shape_meta"]["obs"] == {"state": {"shape": [5], "type": "low_dim"}}
    second = tmp_path / "second"
    train([f"task={first / 'task.yaml'}", f"run_dir={second}", *TWO_STEP_UNET])
    assert yaml.safe_load((second / "config.yaml").read_text())["task"] == saved


def test_dataset_info_task_prints_the_yaml_train_would_build(pusht_path, capsys):
    assert main(["dataset", "info", str(pusht_path), "--task", "obs=[img,state]"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == compose_config([f"data={pusht_path}", "obs=[img,state]"])["task"]


def test_training_logs_progress_lines_when_output_is_not_a_terminal(tmp_path, pusht_path, monkeypatch, caplog):
    """pytest's captured stderr is no terminal, as in CI or nohup: the bar is replaced by log lines."""
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    overrides = [f"data={pusht_path}", "obs=[state]", f"run_dir={tmp_path / 'run'}", *TWO_STEP_UNET,
                 "training.max_steps=4", "training.log_every=50", "training.checkpoint_every=4"]
    with caplog.at_level(logging.INFO, logger="robopolicy.progress"):
        trainer = Trainer(RunConfig.from_dict(compose_config(overrides)))
        metrics = trainer.fit()
        trainer.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train ")]
    assert [line.split(":")[0] for line in lines[:4]] == [f"train diffusion_unet {i}/4" for i in range(1, 5)]
    assert "left" in lines[1] and "loss=" in lines[1] and "sps=" in lines[1] and "done" in lines[-1]
    logged = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    # log_every=50 is capped for a 4-step run, so its losses are logged along the way
    assert [line["step"] for line in logged if "train_loss" in line] == [1, 2, 3, 4]
    assert (metrics["step"], metrics["max_steps"], metrics["stopped_by_time_budget"]) == (4, 4, 0.0)


def test_a_time_cap_that_cuts_training_says_so(tmp_path, pusht_path, caplog):
    overrides = [f"data={pusht_path}", "obs=[state]", f"run_dir={tmp_path / 'run'}", *TWO_STEP_UNET,
                 "training.max_steps=500", "training.time_budget_min=1e-6"]
    with caplog.at_level(logging.WARNING):
        metrics = train(overrides)
    assert metrics["stopped_by_time_budget"] == 1.0 and 1 <= metrics["step"] < metrics["max_steps"] == 500
    assert any(f"at step {metrics['step']} of 500 planned: the policy is undertrained" in r.getMessage()
               for r in caplog.records)
    assert (tmp_path / "run" / "checkpoints" / "last").is_dir()
