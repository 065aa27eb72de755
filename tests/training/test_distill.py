"""Consistency distillation: the teacher's ODE in flow coordinates, and a student that learns to jump along it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from robopolicy.datasets.normalizer import Normalizer
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.policies.checkpoint import init_from_checkpoint, load_policy, read_meta
from robopolicy.policies.consistency.model import check_same_normalizer, load_teacher
from robopolicy.policies.consistency.teacher import TeacherODE
from robopolicy.policies.registry import make_config
from robopolicy.training.distill import distill
from robopolicy.training.run import train
from tests.policies.test_policies import SHAPE_METAS, build, synthetic_store

TINY = ["policy.settings.backbone.unet.down_dims=[16,32,64]", "policy.settings.backbone.unet.step_embed_dim=16",
        "training.num_workers=0", "training.val_batches=1", "training.action_error_windows=4",
        "logging.tensorboard=false", "task.dataset.max_train_episodes=8", "optim.warmup_steps=10"]


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
def test_diffusion_teacher_ode_is_its_ddim_sampler_in_flow_coordinates(prediction):
    store = synthetic_store()
    policy, batch = build("diffusion_unet", "low_dim", store, noise={"prediction_type": prediction})
    policy.eval()
    ode = TeacherODE(policy, 10)
    noise = torch.randn(5, 16, 2, generator=torch.Generator().manual_seed(0))
    features = policy.encode(batch["obs"])
    alpha_bar = float(ode.alpha_bar[0])
    sample = noise / (alpha_bar**0.5 + (1 - alpha_bar) ** 0.5)  # DDIM's start x_T = noise, in flow coordinates
    with torch.no_grad():
        for i in range(10):
            sample = ode.step(sample, torch.full((5,), i), features)
        scheduler = DDIMScheduler.from_config(policy.train_scheduler.config, timestep_spacing="trailing")
        scheduler.set_timesteps(10)
        expected = noise
        for step in scheduler.timesteps:
            output = policy.backbone(expected, step.float().expand(5), features)
            expected = scheduler.step(output, step, expected).prev_sample
    assert float(ode.times[0]) > 0.99 and float(ode.times[-1]) == 0.0
    torch.testing.assert_close(sample, expected, atol=1e-5, rtol=1e-5)


def test_flow_teacher_ode_is_its_euler_sampler():
    policy, batch = build("flow", "low_dim", synthetic_store())
    policy.eval()
    ode = TeacherODE(policy, 6)
    noise = torch.randn(5, 16, 2, generator=torch.Generator().manual_seed(0))
    features = policy.encode(batch["obs"])
    sample = noise
    for i in range(6):
        sample = ode.step(sample, torch.full((5,), i), features)
    torch.testing.assert_close(sample, policy.sample(features, noise, num_inference_steps=6), atol=1e-5, rtol=1e-5)


def one_step_error(student, teacher, obs, noise, teacher_steps: int) -> float:
    """RMS distance, in normalized action units, of a one-step chunk to the teacher's many-step chunk."""
    reference = teacher.predict_action(obs, noise=noise, num_inference_steps=teacher_steps)["action_pred"]
    chunk = student.predict_action(obs, noise=noise, num_inference_steps=1)["action_pred"]
    return float((teacher.normalize_action(chunk) - teacher.normalize_action(reference)).square().mean().sqrt())


@pytest.mark.slow
def test_distilled_student_approaches_the_teachers_many_step_output(pusht_path, tmp_path):
    teacher_run, student_run = tmp_path / "flow", tmp_path / "student"
    train(["task=pusht_keypoint", "policy=flow", f"task.dataset.path={pusht_path}", f"run_dir={teacher_run}",
           "training.batch_size=64", "training.max_steps=300", "training.val_every=300",
           "training.checkpoint_every=300", *TINY])
    checkpoint = teacher_run / "checkpoints" / "last"
    teacher = load_policy(checkpoint)
    meta = read_meta(checkpoint)
    windows = SequenceDataset(EpisodeStore.open(pusht_path), meta["shape_meta"], horizon=16, n_obs_steps=2,
                              n_action_steps=8, max_train_episodes=8, val_ratio=0.02, seed=42)
    obs = windows[np.arange(0, len(windows), len(windows) // 32)[:32]]["obs"]
    noise = torch.randn(32, 16, 2, generator=torch.Generator().manual_seed(0))
    before = one_step_error(teacher, teacher, obs, noise, 20)  # the student starts as the teacher

    distill(checkpoint, [f"run_dir={student_run}", "training.max_steps=300", "training.checkpoint_every=300",
                         "training.val_every=300", "policy.settings.teacher_steps=20", "optim.lr=3e-4"])
    student = load_policy(student_run / "checkpoints" / "last")
    after = one_step_error(student, teacher, obs, noise, 20)
    assert after < 0.75 * before, (before, after)  # measured: 0.112 -> 0.064
    two_steps = student.predict_action(obs, noise=noise, num_inference_steps=2)["action_pred"]
    assert torch.isfinite(two_steps).all()


def test_init_from_copies_every_matching_weight_and_refuses_other_shapes(tmp_path, pusht_path):
    run = tmp_path / "teacher"
    train(["task=pusht_keypoint", "policy=flow", f"task.dataset.path={pusht_path}", f"run_dir={run}",
           "training.batch_size=8", "training.max_steps=2", "training.val_every=2", "training.checkpoint_every=2",
           *TINY])
    teacher = load_policy(run / "checkpoints" / "last")
    student, _ = build("flow", "low_dim", synthetic_store(), backbone={"unet": {"down_dims": [16, 32, 64],
                                                                               "step_embed_dim": 16}},
                       encoder={})
    assert init_from_checkpoint(student, run / "checkpoints" / "last") == []
    for name, value in teacher.state_dict().items():
        if not name.startswith("normalizer."):
            torch.testing.assert_close(student.state_dict()[name], value)
    other, _ = build("flow", "low_dim", synthetic_store(), encoder={},
                     backbone={"unet": {"down_dims": [8, 16, 32], "step_embed_dim": 16}})
    with pytest.raises(ValueError, match="other shapes"):
        init_from_checkpoint(other, run / "checkpoints" / "last")


def test_a_student_refuses_a_teacher_with_other_normalizer_statistics_or_none():
    meta = SHAPE_METAS["low_dim"]
    ours, again, other = (Normalizer.fit(synthetic_store(seed), meta).state_dict() for seed in (0, 0, 1))
    check_same_normalizer(ours, again, "teacher")
    with pytest.raises(ValueError, match="other normalizer statistics"):
        check_same_normalizer(ours, other, "teacher")
    with pytest.raises(ValueError, match="robopolicy distill TEACHER_CHECKPOINT"):
        load_teacher(make_config("consistency"), torch.device("cpu"))
