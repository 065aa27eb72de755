"""A multi-task policy told its task in words, as a user builds one from the README: scripted demos of two
MetaWorld tasks, merged into one store, trained with data= only, evaluated per task with the task's own
instruction or one the user gives."""

from __future__ import annotations

import json

import pytest
import yaml

from robopolicy.datasets.store import EpisodeStore
from tests.cli.test_own_demos import TINY, run_cli
from tests.needs import require

require("sim")
pytestmark = pytest.mark.sim
TASKS = {"drawer-open-v3": "open the drawer", "drawer-close-v3": "close the drawer"}


def test_two_metaworld_tasks_merge_train_and_evaluate_with_their_instructions(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    for task in TASKS:
        run_cli(capsys, "demos", "generate", "env=metaworld", f"task={task}", "obs=lowdim", "n=2",
                f"out={tmp_path / 'stores' / task}.zarr")
    merged = tmp_path / "two_tasks.zarr"
    summary = run_cli(capsys, "dataset", "convert", "--from", "zarr", str(tmp_path / "stores"), str(merged))
    assert summary["episodes"] == 4 and summary["dropped"] == []
    # stores merge in name order: drawer-close's two episodes, then drawer-open's
    assert EpisodeStore.open(merged).episode_tasks == ["close the drawer"] * 2 + ["open the drawer"] * 2

    run_dir = tmp_path / "run"
    run_cli(capsys, "train", f"data={merged}", f"run_dir={run_dir}", *TINY,
            "task.env={name: metaworld, task: drawer-open-v3, obs_type: lowdim}")
    task = yaml.safe_load((run_dir / "task.yaml").read_text())
    assert task["shape_meta"]["obs"]["instruction"] == {"shape": [96], "type": "text"}

    checkpoint = str(run_dir / "checkpoints" / "last")
    rollout = ["n_episodes=1", "n_envs=1", "n_videos=0", "env.max_steps=6"]
    for name, instruction in TASKS.items():  # each task is told its own instruction
        shown = run_cli(capsys, "eval", checkpoint, *rollout, f"env.task={name}", f"out={tmp_path / name}")
        report = json.loads((tmp_path / name / "eval.json").read_text())
        assert (report["env"]["task"], report["n_episodes"]) == (name, 1)
        assert shown["instruction"] == report["instruction"] == instruction
    shown = run_cli(capsys, "eval", checkpoint, *rollout, "instruction=pull the drawer open", f"out={tmp_path / 'own'}")
    report = json.loads((tmp_path / "own" / "eval.json").read_text())
    assert shown["instruction"] == report["instruction"] == report["settings"]["instruction"] == "pull the drawer open"
