"""The trainer on the real Push-T store: checkpoints, exact resume, crash-safe `last`, DDP, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.store import EpisodeStore
from robopolicy.policies.checkpoint import FILES, load_policy, read_meta
from robopolicy.policies.registry import make_policy
from robopolicy.training import checkpoint as checkpoint_module
from robopolicy.training.config import CONFIG_DIR, RunConfig, compose_config
from robopolicy.training.run import train
from robopolicy.training.trainer import Trainer
from tests.network import free_port

REPO = Path(__file__).resolve().parents[2]
TINY = ["policy.settings.backbone.unet.down_dims=[16,32,64]", "policy.settings.backbone.unet.step_embed_dim=16",
        "training.batch_size=8", "training.num_workers=0", "training.log_every=1", "training.val_every=3",
        "training.checkpoint_every=3", "training.val_batches=1", "training.action_error_windows=4",
        "optim.warmup_steps=2", "optim.lr=1e-3", "training.max_steps=6"]


def tiny_config(tmp_path: Path, pusht_path: Path, *extra: str) -> RunConfig:
    overrides = [*TINY, f"run_dir={tmp_path / 'run'}", f"task.dataset.path={pusht_path}", *extra]
    return RunConfig.from_dict(compose_config(overrides))


def weights_of(checkpoint: Path, file: str) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / file))


def test_train_writes_a_loadable_checkpoint(tmp_path, pusht_path):
    trainer = Trainer(tiny_config(tmp_path, pusht_path))
    metrics = trainer.fit()
    trainer.close()
    last = tmp_path / "run" / "checkpoints" / "last"
    assert last.is_symlink() and last.resolve().name == "step_00000006"
    assert sorted(p.name for p in last.resolve().iterdir()) == sorted(FILES)
    meta = read_meta(last)
    assert (meta["policy"], meta["task"], meta["step"]) == ("diffusion_unet", "pusht_keypoint", 6)
    assert meta["shape_meta"]["obs"]["keypoint"] == {"shape": [9, 2], "type": "low_dim"}
    assert set(metrics) >= {"train_loss", "val_loss", "action_error", "lr", "samples_per_s"}
    policy = load_policy(last)
    obs = {"agent_pos": torch.full((1, 2, 2), 200.0), "keypoint": torch.full((1, 2, 9, 2), 250.0)}
    assert policy.predict_action(obs)["action"].shape == (1, 8, 2)
    lines = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "train_loss" in line] == [1, 2, 3, 4, 5, 6]
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    train_state = torch.load(last / "train_state.pt", weights_only=True)
    assert train_state["step"] == 6 and train_state["scheduler"]["last_epoch"] == 6


def test_resume_continues_bit_for_bit(tmp_path, pusht_path):
    whole = Trainer(tiny_config(tmp_path / "whole", pusht_path))
    whole.fit()
    whole.close()
    interrupted = Trainer(tiny_config(tmp_path / "split", pusht_path))
    interrupted.fit(until_step=3)
    interrupted.close()
    resumed = Trainer(tiny_config(tmp_path / "split", pusht_path, "resume=true"))
    assert resumed.step == 3
    resumed.fit()
    resumed.close()
    a = tmp_path / "whole" / "run" / "checkpoints" / "last"
    b = tmp_path / "split" / "run" / "checkpoints" / "last"
    for file in ("model.safetensors", "ema.safetensors"):
        expected, got = weights_of(a, file), weights_of(b, file)
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), f"{file}:{key} differs after resume"


def test_a_crash_while_saving_keeps_last_usable(tmp_path, pusht_path, monkeypatch):
    config = tiny_config(tmp_path, pusht_path)
    trainer = Trainer(config)
    real_save = checkpoint_module.save_file

    def dying_save(tensors, path, *args, **kwargs):
        if "step_00000006" in str(path) and path.endswith("ema.safetensors"):
            raise KeyboardInterrupt("killed while writing the step-6 checkpoint")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    trainer.close()
    last = tmp_path / "run" / "checkpoints" / "last"
    assert last.resolve().name == "step_00000003"
    assert read_meta(last)["step"] == 3
    monkeypatch.setattr(checkpoint_module, "save_file", real_save)
    resumed = Trainer(tiny_config(tmp_path, pusht_path, "resume=true"))
    assert resumed.step == 3
    resumed.fit()
    resumed.close()
    assert read_meta(last)["step"] == 6


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(tmp_path, pusht_path):
    common = [*TINY, f"task.dataset.path={pusht_path}", "training.max_steps=4", "ema.enabled=false",
              "training.threads=1"]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
                          "-m", "robopolicy.cli", "train", *common, f"run_dir={tmp_path / 'ddp'}", "training.grad_accum=2"],
                         cwd=REPO, capture_output=True, text=True, check=False, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    train([*common, f"run_dir={tmp_path / 'single'}", "training.grad_accum=4"])
    a = weights_of(tmp_path / "ddp" / "checkpoints" / "last", "model.safetensors")
    b = weights_of(tmp_path / "single" / "checkpoints" / "last", "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
    config = RunConfig.from_dict(compose_config(common))
    torch.manual_seed(config.seed)  # as the trainer does before building the policy
    initial = make_policy(config.policy_name, config.task.shape_meta, config.policy_settings).state_dict()
    moved = [k for k in initial if not torch.allclose(initial[k], a[k])]
    assert moved, "training should have changed the weights"


@pytest.mark.slow
def test_a_time_budget_stops_every_rank_at_the_same_step(tmp_path, pusht_path):
    # each rank has its own clock: were each to decide alone, one could stop while the other waits in all-reduce
    run = tmp_path / "ddp"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    ddp = subprocess.run([*launch, "-m", "robopolicy.cli", "train", *TINY, f"task.dataset.path={pusht_path}",
                          f"run_dir={run}", "training.threads=1", "training.max_steps=100000", "training.checkpoint_every=100000",
                          "training.val_every=100000", "training.time_budget_min=0.1"],
                         cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    step = read_meta(run / "checkpoints" / "last")["step"]
    assert 0 < step < 100000
    assert "stopped training at step" in ddp.stderr


def test_bad_inputs_fail_before_training(tmp_path, pusht_path):
    with pytest.raises(DataError, match=r"\[data/gripper\]: obs.gripper key not in the store"):
        Trainer(tiny_config(tmp_path, pusht_path, "task.shape_meta.obs.gripper={shape: [1]}"))
    with pytest.raises(DataError, match=r"\[data/keypoint\]: rows have shape \(9, 2\), shape_meta says \[9, 3\]"):
        Trainer(tiny_config(tmp_path, pusht_path, "task.shape_meta.obs.keypoint.shape=[9,3]"))
    with pytest.raises(DataError, match="the train split has no windows"):
        Trainer(tiny_config(tmp_path, pusht_path, "task.dataset.max_train_episodes=0"))
    with pytest.raises(ValueError, match=r"unknown training settings \['max_step'\]"):
        tiny_config(tmp_path, pusht_path, "training.max_step=3")
    with pytest.raises(ValueError, match="batch_size 8 must be divisible by ranks x grad_accum = 3"):
        Trainer(tiny_config(tmp_path, pusht_path, "training.grad_accum=3")).fit()
    with pytest.raises(FileNotFoundError, match="resume=true but"):
        Trainer(tiny_config(tmp_path, pusht_path, "resume=true"))


def test_resume_refuses_another_run_and_fresh_runs_refuse_old_checkpoints(tmp_path, pusht_path):
    trainer = Trainer(tiny_config(tmp_path, pusht_path, "training.max_steps=3"))
    trainer.fit()
    trainer.close()
    with pytest.raises(ValueError, match="was trained with policy 'diffusion_unet'"):
        Trainer(tiny_config(tmp_path, pusht_path, "policy=flow", "resume=true"))
    with pytest.raises(ValueError, match=r"changed settings \['optim.lr', 'seed'\]"):
        Trainer(tiny_config(tmp_path, pusht_path, "seed=7", "optim.lr=0.5", "resume=true"))
    with pytest.raises(FileExistsError, match="already holds checkpoints; pass resume=true"):
        Trainer(tiny_config(tmp_path, pusht_path))
    last_meta = tmp_path / "run" / "checkpoints" / "last" / "meta.json"
    written = last_meta.stat().st_mtime_ns
    finished = Trainer(tiny_config(tmp_path, pusht_path, "training.max_steps=3", "resume=true",
                                   "training.checkpoint_every=2"))
    finished.fit()  # already at max_steps: nothing to train, and `last` is not rewritten
    finished.close()
    assert last_meta.stat().st_mtime_ns == written and read_meta(last_meta.parent)["step"] == 3


def test_accumulation_bf16_param_groups_and_eval_hook(tmp_path, pusht_path):
    calls = []

    def hook(policy, epoch):
        calls.append((epoch, policy.training))
        return {"success": 0.5 + epoch}

    config = tiny_config(tmp_path, pusht_path, "training.grad_accum=2", "training.bf16=true",
                         "optim.encoder_lr_scale=0.1", "encoder.low_dim.kind=mlp", "training.eval_every_epochs=1",
                         "training.batch_size=512", "training.max_steps=2", "task.dataset.max_train_episodes=6",
                         "training.monitor=success", "training.monitor_mode=max", "training.checkpoint_every=2")
    trainer = Trainer(config, eval_hook=hook)
    base, encoder = (group["initial_lr"] for group in trainer.optimizer.param_groups)
    assert encoder == pytest.approx(0.1 * base)
    metrics = trainer.fit()
    trainer.close()
    assert np.isfinite(metrics["train_loss"])
    steps_per_epoch = len(trainer.train_set) // 512
    assert steps_per_epoch <= 2
    assert calls == [(epoch, False) for epoch in range(1, 2 // steps_per_epoch + 1)], "eval-mode policy each epoch"
    assert metrics["success"] == 0.5 + calls[-1][0]
    index = json.loads((tmp_path / "run" / "checkpoints" / "index.json").read_text())
    assert index[-1]["metrics"]["success"] == metrics["success"]
    with pytest.raises(ValueError, match="needs a simulation evaluation hook"):
        Trainer(tiny_config(tmp_path / "nohook", pusht_path, "training.eval_every_epochs=1"))


def test_each_policy_config_names_its_own_run_directory():
    labels = {}
    for path in sorted((CONFIG_DIR / "policy").glob("*.yaml")):
        raw = compose_config([f"policy={path.stem}"])
        labels[path.stem] = raw["run_dir"]
        assert raw["run_dir"] == f"runs/pusht_keypoint/{path.stem}"
    assert len(set(labels.values())) == len(labels) >= 6


@pytest.mark.parametrize("task", ["pusht_keypoint", "pusht_image", "lift_lowdim", "lift_image", "lift_pointcloud",
                                  "metaworld_pointcloud"])
@pytest.mark.parametrize("policy", ["diffusion_unet", "diffusion_transformer", "flow", "act"])
def test_every_shipped_task_and_policy_config_builds(task, policy):
    raw = compose_config([f"task={task}", f"policy={policy}"])
    config = RunConfig.from_dict(raw)
    built = make_policy(config.policy_name, config.task.shape_meta, config.policy_settings)
    assert built.config.horizon == raw["policy"]["settings"]["horizon"]
    assert (CONFIG_DIR / "task" / f"{task}.yaml").is_file()


def test_point_cloud_task_trains_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    store = EpisodeStore.create(tmp_path / "lift.zarr")
    for _ in range(3):
        n = 40
        store.append_episode({"point_cloud": rng.uniform(-0.5, 0.5, (n, 512, 6)).astype(np.float32),
                              "robot0_eef_pos": rng.normal(size=(n, 3)).astype(np.float32),
                              "robot0_eef_rot6d": rng.normal(size=(n, 6)).astype(np.float32),
                              "robot0_gripper_qpos": rng.uniform(0, 0.04, (n, 2)).astype(np.float32),
                              "action": rng.uniform(-1, 1, (n, 10)).astype(np.float32)})
    overrides = [*TINY, "task=lift_pointcloud", f"task.dataset.path={tmp_path / 'lift.zarr'}", f"run_dir={tmp_path / 'run'}",
                 "task.dataset.val_ratio=0.34", "training.max_steps=2", "training.checkpoint_every=2"]
    metrics = train(overrides)
    assert np.isfinite(metrics["val_loss"])
    policy = load_policy(tmp_path / "run" / "checkpoints" / "last")
    obs = {"point_cloud": torch.zeros(1, 2, 512, 6), "eef_pos": torch.zeros(1, 2, 3), "eef_rot6d": torch.zeros(1, 2, 6),
           "gripper": torch.zeros(1, 2, 2)}
    assert policy.predict_action(obs)["action"].shape == (1, 8, 10)
