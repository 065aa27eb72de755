"""Consistency distillation: a student that maps any point of the teacher's ODE to its end in one step.

Objective (consistency distillation, Song et al. 2023, on the teacher's deterministic sampler):
in flow coordinates x_t = t * noise + (1 - t) * action (see teacher.py) the student is

    f(x, t) = x - t * v_theta(x, t, obs)

so f(x, 0) = x holds by construction. A training step draws a window (obs, action), noise z
and a grid index n of the teacher's N-step grid t_0 > ... > t_N = 0, sets
x_n = t_n z + (1 - t_n) action, lets the teacher take one step to x_{n+1}, and minimizes

    (1 / (t_n - t_{n+1})) * pseudo_huber(f_theta(x_n, t_n) - f_target(x_{n+1}, t_{n+1}))

with pseudo_huber(d) = sqrt(|d|^2 + c^2) - c, c = huber_c * sqrt(horizon * Da), and
f_target an EMA of the student (target_decay; 0 is the stopped-gradient student). At the last
grid step the target is x_N itself, which anchors the chain to the teacher's output.

Settings (ConsistencyConfig): teacher, teacher_use_ema, teacher_steps (N), target_decay,
huber_c, num_inference_steps. The student starts from the teacher's weights (the distill
command sets init_from) and uses the teacher's normalizer, which must equal its own. The
target network is not saved: a resumed distillation restarts it from the student.

Sampling: one step f(noise, 1). With k = 2 or 3 steps, each estimate is moved back to the next
time t' (1 - 1/k, ...) as t' * noise + (1 - t') * estimate, reusing the initial noise, and
refined again: deterministic for a given noise, so `noise=` and exported artifacts fix the
chunk as for the other families. Held prefix rows (inpainting) steer the free rows from the
second step on; at t = 1 the held rows are pure noise, so one-step sampling only replaces them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch

from robopolicy.datasets.shape_meta import ShapeMeta
from robopolicy.policies.consistency.config import ConsistencyConfig
from robopolicy.policies.consistency.teacher import TeacherODE
from robopolicy.policies.denoising import Prefix
from robopolicy.policies.flow.model import FlowPolicy, step_levels
from robopolicy.policies.registry import register_policy

log = logging.getLogger(__name__)


def pseudo_huber(difference: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(|d|^2 + c^2) - c per sample of (B, ...) differences -> (B,)."""
    return (difference.flatten(1).square().sum(dim=1) + c * c).sqrt() - c


_TEACHERS: dict[tuple[str, bool, int, str], TeacherODE] = {}


def load_teacher(config: ConsistencyConfig, device: torch.device) -> TeacherODE:
    """The teacher's ODE on `device`, loaded once per process (the student and its EMA copy share it)."""
    from robopolicy.policies.checkpoint import load_policy

    if not config.teacher:
        raise ValueError("a consistency policy trains from a teacher: set policy.settings.teacher to a diffusion "
                         "or flow checkpoint, or run `robopolicy distill TEACHER_CHECKPOINT`")
    key = (config.teacher, config.teacher_use_ema, config.teacher_steps, str(device))
    if key not in _TEACHERS:
        teacher = load_policy(config.teacher, use_ema=config.teacher_use_ema)
        _TEACHERS[key] = TeacherODE(teacher, config.teacher_steps).to(device)
        log.info("distilling %s (%d teacher steps, target decay %.3f)", config.teacher, config.teacher_steps,
                 config.target_decay)
    return _TEACHERS[key]


def check_same_normalizer(teacher: Mapping[str, torch.Tensor], student: Mapping[str, torch.Tensor],
                          where: str) -> None:
    """The student learns in the teacher's normalized space; different statistics would be a different ODE."""
    same = teacher.keys() == student.keys() and all(
        torch.allclose(teacher[k].cpu(), student[k].cpu(), rtol=1e-5, atol=1e-6) for k in teacher)
    if not same:
        raise ValueError(f"the teacher {where} was trained with other normalizer statistics than this run's; distill "
                         "on the teacher's dataset and task settings (robopolicy distill copies them)")


@register_policy("consistency", ConsistencyConfig)
class ConsistencyPolicy(FlowPolicy):
    """One-step (or 2-3 chained steps) student of a diffusion or flow teacher; see the module docstring."""

    config: ConsistencyConfig

    def __init__(self, config: ConsistencyConfig, shape_meta: Mapping[str, Any] | ShapeMeta):
        super().__init__(config, shape_meta)
        self.teacher: TeacherODE | None = None  # plain attributes, not submodules: never saved nor averaged
        self.target: ConsistencyPolicy | None = None  # the EMA target; restarts from the student on resume

    def denoised(self, sample: torch.Tensor, t: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """f(x, t) = x - t * v(x, t): the student's estimate of the ODE's end from x at times t (B,)."""
        return sample - t[:, None, None] * self.velocity(sample, t, features)

    @torch.no_grad()
    def update_target(self) -> None:
        """target <- decay * target + (1 - decay) * student, once per training loss (a copy on the first)."""
        if self.target is None:
            teacher, self.teacher = self.teacher, None  # not copied along
            # object.__setattr__: a Module assigned to a Module attribute would become a saved submodule
            object.__setattr__(self, "target", copy.deepcopy(self).requires_grad_(False))
            self.teacher = teacher
            return
        for target, online in zip(self.target.parameters(), self.parameters(), strict=True):
            target.lerp_(online, 1.0 - self.config.target_decay)

    def compute_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The weighted pseudo-Huber consistency loss of the module docstring."""
        features, action = self.training_pair(batch)
        if self.teacher is None:
            self.teacher = load_teacher(self.config, action.device)
            check_same_normalizer(self.teacher.policy.normalizer.state_dict(), self.normalizer.state_dict(),
                                  self.config.teacher)
        target = self
        if self.training:
            self.update_target()
            target = self.target
        teacher = self.teacher
        noise = torch.randn_like(action)
        index = torch.randint(0, self.config.teacher_steps, (action.shape[0],), device=action.device)
        t, t_next = teacher.times[index], teacher.times[index + 1]
        sample = t[:, None, None] * noise + (1 - t[:, None, None]) * action
        with torch.no_grad():
            following = teacher.step(sample, index, teacher.policy.encode(batch["obs"]))
            # at t_next = 0, f(x, 0) = x: the teacher's own step is the goal
            goal = target.denoised(following, t_next, target.encode(batch["obs"]))
        c = self.config.huber_c * float(action[0].numel()) ** 0.5
        distance = pseudo_huber(self.denoised(sample, t, features) - goal, c)
        return (distance / (t - t_next)).mean()

    def sample(self, features: dict[str, torch.Tensor], noise: torch.Tensor, generator: torch.Generator | None = None,
               prefix: Prefix | None = None, num_inference_steps: int | None = None) -> torch.Tensor:
        """`num_inference_steps` chained consistency steps from `noise` (the config's count by default)."""
        steps = num_inference_steps or self.config.num_inference_steps
        levels, times = step_levels(steps, noise)
        sample = noise
        for i, t in enumerate(times):
            if prefix is not None:
                sample = prefix.apply(sample, levels[i] * noise + (1.0 - levels[i]) * prefix.actions)
            estimate = self.denoised(sample, t, features)
            if i + 1 < steps:  # back onto the path at the next level, from the estimate and the initial noise
                sample = levels[i + 1] * noise + (1.0 - levels[i + 1]) * estimate
        return estimate if prefix is None else prefix.apply(estimate, prefix.actions)
