"""The `robopolicy` command: dataset info / validate on real stores, and the quickstart end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robopolicy.cli import main
from robopolicy.datasets.store import EpisodeStore
from tests.conftest import synthetic_episode

REPO = Path(__file__).resolve().parents[2]


def test_info_on_pusht(pusht_path, capsys):
    assert main(["dataset", "info", str(pusht_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["episodes"], info["steps"], info["zarr_format"]) == (206, 25650, 2)
    assert info["episode_length"] == {"min": 49, "median": 122.0, "max": 246}
    assert info["keys"]["img"] == {"shape": [25650, 96, 96, 3], "dtype": "float32", "codec": "blosc-zstd-5",
                                   "chunks": [161, 96, 96, 3], "timestamps": False}
    assert info["fps"] is None
    assert main(["dataset", "info", str(pusht_path)]) == 0
    table = capsys.readouterr().out
    assert "episodes 206  steps 25650" in table and "fps not recorded" in table


def test_info_and_validate_on_a_store_we_wrote(tmp_path, capsys):
    store = EpisodeStore.create(tmp_path / "ours.zarr", attrs={"fps": 15})
    for index, length in enumerate((12, 30, 18)):
        store.append_episode(synthetic_episode(index, length), timestamps={"img": np.arange(length) / 15.0})
    assert main(["dataset", "info", str(store.path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episode_length"] == {"min": 12, "median": 18.0, "max": 30}
    assert info["fps"] == 15.0 and info["zarr_format"] == 3
    assert info["keys"]["img"]["codec"] == "blosc-zstd-5+sharded 256" and info["keys"]["img"]["timestamps"]
    assert main(["dataset", "validate", str(store.path)]) == 0
    assert "3 episodes, 60 steps, 0 errors, 0 warnings" in capsys.readouterr().out


def test_console_script_is_installed(pusht_path):
    exe = Path(sys.executable).with_name("robopolicy")
    result = subprocess.run([str(exe), "dataset", "validate", str(pusht_path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "206 episodes, 25650 steps, 0 errors" in result.stdout


@pytest.mark.slow
def test_quickstart_runs_demos_training_and_evaluation_end_to_end(tmp_path):
    exe = Path(sys.executable).with_name("robopolicy")
    result = subprocess.run([str(exe), "quickstart", "--out", str(tmp_path), "--demos", "4", "--train-steps", "4",
                             "--eval-episodes", "2", "--n-envs", "2"],
                            capture_output=True, text=True, check=False, cwd=REPO)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["demos"]["episodes"] == 4 and summary["demos"]["expert_success_rate"] > 0.5
    assert summary["training"]["final_metrics"]["epoch"] >= 0 and Path(summary["training"]["checkpoint"]).is_dir()
    assert summary["eval_seeds"] == [100000, 100001]
    report = json.loads(Path(summary["eval_json"]).read_text())
    # the summary is the evaluation's; 4 training steps give no policy that lifts the cube
    assert summary["success_rate"] == report["success_rate"] == 0.0, (summary["success_rate"], report["episodes"])
    assert Path(summary["plot"]).is_file() and all(Path(v).stat().st_size > 1000 for v in summary["videos"])
    assert "Lift success rate" in result.stderr and summary["eval_json"] in result.stderr
    store = EpisodeStore.open(tmp_path / "lift_lowdim.zarr")
    assert store.n_episodes == 4 and store.read("action").shape[1] == 10


def test_option_help_comes_from_the_dataclasses_that_check_the_options(capsys):
    from dataclasses import fields

    from robopolicy.deploy.export import ExportConfig
    from robopolicy.robots.calibrate import CalibrationConfig

    for argv, config in ((["export", "--help"], ExportConfig), (["robot", "calibrate", "--help"], CalibrationConfig)):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert all(f"{f.name}=" in text for f in fields(config)), (argv, text)
    assert "position_key=... action_keys=... action_tail=[] control_hz=20.0" in text  # the defaults, as typed


def test_robot_subcommands_and_their_errors(tmp_path, capsys):
    assert main(["robot", "calibrate", "actuation_latency=0.1"]) == 2
    assert "calibrate needs its simulator: env.name=robosuite" in capsys.readouterr().err
    assert main(["robot", "sim-driver", "map=sim_lift"]) == 2
    assert "the simulated driver needs its simulator" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "format=onnx"]) == 2
    assert "export needs out=DIR" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "prot=5555"]) == 2
    assert "unknown serve settings ['prot']; known: ['host', 'insecure', 'keys', 'max_batch'," in capsys.readouterr().err
    assert main(["deploy", "calibrate", "env.name=robosuite"]) == 2
    assert "`robopolicy deploy calibrate` is now `robopolicy robot calibrate`" in capsys.readouterr().err
    assert main(["deploy", str(tmp_path / "missing"), "robot=arm"]) == 2
    assert "unknown robot 'arm'. Known: ['ros', 'sim'] (robot=sim drives the simulated arm" in capsys.readouterr().err


def test_running_a_verb_imports_no_module_its_help_would():
    code = ("import sys; from robopolicy.cli import build_parser; build_parser().parse_args(['deploy', 'tcp://h:1']); "
            "print(sorted(m for m in ('torch', 'gymnasium', 'zarr', 'robopolicy.ros.node') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"
