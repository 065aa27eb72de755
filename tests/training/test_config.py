"""The run config: key=value overrides over the shipped YAML groups, and the typed task section."""

from __future__ import annotations

import pytest

from robopolicy.datasets.task import TaskConfig
from robopolicy.training.config import RunConfig, compose_config


def test_group_keys_pick_files_and_other_keys_set_values_before_interpolation():
    raw = compose_config(["policy=flow", "task=lift_lowdim", "optim.lr=1e-4", "policy.label=mine",
                          "policy.settings.horizon=8", "task.dataset.val_ratio=0.1"])
    config = RunConfig.from_dict(raw)
    assert (config.policy_name, config.task.name, config.optim.lr) == ("flow", "lift_lowdim", 1e-4)
    assert raw["run_dir"] == "runs/lift_lowdim/mine"  # ${policy.label} resolved after the override
    assert config.policy_settings["horizon"] == 8 and config.task.dataset.val_ratio == 0.1
    assert config.task.dataset.n_latency_steps == 0 and config.task.env["name"] == "robosuite"


def test_a_new_nested_key_is_checked_by_its_dataclass_and_a_new_top_level_key_is_refused():
    with pytest.raises(ValueError, match=r"unknown training settings \['max_step'\]"):
        RunConfig.from_dict(compose_config(["training.max_step=3"]))
    with pytest.raises(ValueError, match=r"unknown run settings \['trainig'\]; known: \['task', 'policy'"):
        compose_config(["trainig.max_steps=3"])
    with pytest.raises(ValueError, match=r"write the key without '\+'"):
        compose_config(["+training.max_steps=3"])
    with pytest.raises(ValueError, match=r"unknown eval settings \['n_episode'\]; known: \['max_steps', 'n_envs'"):
        compose_config(["eval.n_episode=3"])  # refused now, though EvalConfig checks it only when training evaluates


def test_the_task_section_is_checked_once_with_its_defaults():
    task = TaskConfig.from_dict({"name": "t", "dataset": {"path": "x.zarr"}, "shape_meta": {"obs": {}, "action": {}}})
    assert (task.dataset.val_ratio, task.dataset.split_seed, task.dataset.n_latency_steps) == (0.0, 42, 0)
    assert task.normalizer == {} and task.env is None
    with pytest.raises(ValueError, match="the task config lacks 'shape_meta'"):
        TaskConfig.from_dict({"name": "t", "dataset": {"path": "x.zarr"}})
    with pytest.raises(ValueError, match=r"unknown task.dataset settings \['val_ration'\]"):
        TaskConfig.from_dict({"name": "t", "dataset": {"path": "x", "val_ration": 0.1}, "shape_meta": {}})
    with pytest.raises(ValueError, match=r"val_ratio must be in \[0, 1\)"):
        TaskConfig.from_dict({"name": "t", "dataset": {"path": "x", "val_ratio": 1.0}, "shape_meta": {}})


def test_a_saved_task_section_with_keys_we_do_not_know_still_loads_for_eval_and_export(caplog):
    saved = {"name": "t", "dataset": {"path": "x", "fps": 10}, "shape_meta": {}, "horizon": 4}
    task = TaskConfig.from_dict(saved, strict=False)
    assert (task.name, task.dataset.path) == ("t", "x")
    assert "ignoring task settings ['horizon']" in caplog.text and "task.dataset settings ['fps']" in caplog.text
    with pytest.raises(ValueError, match=r"unknown task.dataset settings \['fps'\]"):
        TaskConfig.from_dict(saved)


def test_distill_sets_values_over_its_teacher_and_refuses_another_task_or_policy(tmp_path):
    from robopolicy.training.distill import distill_config

    with pytest.raises(ValueError, match=r"distill keeps the teacher's \['policy', 'task'\]"):
        distill_config(tmp_path, ["task=lift_lowdim", "policy=flow", "training.max_steps=3"])
