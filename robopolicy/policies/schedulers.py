"""Noise schedulers for diffusion: weight-free objects from diffusers, swappable at sampling time.

Training always noises with DDPM's forward process; sampling may use DDPM, DDIM or
DPM-Solver++ with any number of steps, all built from the same training configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SAMPLERS = ("ddpm", "ddim", "dpmsolver++")
PREDICTION_TYPES = ("epsilon", "sample")


@dataclass
class NoiseScheduleConfig:
    """The training noise schedule; samplers are derived from it."""

    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"  # the network predicts the noise ("epsilon") or the clean chunk ("sample")
    clip_sample: bool = True  # clip the predicted clean chunk to [-1, 1], the normalized action range

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.num_train_timesteps < 1:
            raise ValueError("num_train_timesteps must be positive")


def training_scheduler(config: NoiseScheduleConfig) -> DDPMScheduler:
    """DDPM forward process used to noise training chunks."""
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                         clip_sample=config.clip_sample, prediction_type=config.prediction_type)


def sampling_scheduler(training: DDPMScheduler, sampler: str, num_inference_steps: int) -> SchedulerMixin:
    """A fresh sampler from the training scheduler's settings, timesteps set (fresh: multistep solvers keep state)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    base = training.config
    if not 1 <= num_inference_steps <= base.num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in [1, {base.num_train_timesteps}], got {num_inference_steps}")
    if sampler == "ddpm":
        scheduler = DDPMScheduler.from_config(base)
    elif sampler == "ddim":
        scheduler = DDIMScheduler.from_config(base)
    else:
        # "trailing" spacing: with the default spacing, as many steps as training steps end in NaN
        scheduler = DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++", timestep_spacing="trailing")
    scheduler.set_timesteps(num_inference_steps)
    return scheduler
