"""Diffusion samplers as precomputed coefficient tables: the fast path of DiffusionPolicy.sample.

diffusers' schedulers recompute their coefficients from tensors and keep Python-side state at
every step; for a 16-step chunk on a CPU that overhead is a visible share of the latency. Each
DDPM, DDIM and DPM-Solver++(2M) step is linear in the current sample, the network output, the
previous step's clean estimate and (DDPM only) fresh noise, so a sampler is planned once per
(sampler, step count) into plain floats:

    x0   = clip(x0_sample * x + x0_output * out)           (clip: with clip_sample, every sampler)
    eps  = eps_sample * x + eps_output * out               (DDIM only)
    next = keep * x + x0 * x0_now + x0_previous * x0_before + eps * eps + fresh_noise * z

Timesteps and sigmas come from the diffusers scheduler itself, so the plan samples the same
chunk as diffusers' `step` loop for the same noise (tests/policies/test_fast_sampling.py checks it; for
DPM-Solver++ with its clean estimates clipped, see _dpm_solver_steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from diffusers import DDPMScheduler

from robopolicy.policies.schedulers import sampling_scheduler


@dataclass(frozen=True)
class SolverStep:
    """The coefficients of one sampling step (see the module docstring)."""

    timestep: int  # the network's time input (the training timestep)
    signal: float  # sqrt(alpha_bar) at this step: a clean chunk noised to this level is signal * x0 + level * z
    level: float  # sqrt(1 - alpha_bar)
    x0_sample: float
    x0_output: float
    clip: bool
    keep: float
    x0: float
    x0_previous: float = 0.0
    eps_sample: float = 0.0
    eps_output: float = 0.0
    eps: float = 0.0
    fresh_noise: float = 0.0


def _clean_estimate(prediction_type: str, alpha_bar: float) -> tuple[float, float]:
    """(x0_sample, x0_output): how x0 follows from the sample and the network output."""
    if prediction_type == "sample":
        return 0.0, 1.0
    return 1.0 / np.sqrt(alpha_bar), -np.sqrt(1.0 - alpha_bar) / np.sqrt(alpha_bar)


def plan_steps(training: DDPMScheduler, sampler: str, num_inference_steps: int) -> list[SolverStep]:
    """The coefficient table of `sampler` with `num_inference_steps` steps from the training schedule."""
    scheduler = sampling_scheduler(training, sampler, num_inference_steps)
    config = training.config
    alpha_bar = training.alphas_cumprod.double().numpy()
    timesteps = [int(k) for k in scheduler.timesteps]
    if sampler == "dpmsolver++":
        return _dpm_solver_steps(timesteps, scheduler.sigmas.double().numpy(), alpha_bar, config.prediction_type,
                                 bool(config.clip_sample))
    stride = config.num_train_timesteps // num_inference_steps
    steps = []
    for k in timesteps:
        previous = alpha_bar[k - stride] if k - stride >= 0 else 1.0
        common = {"timestep": k, "signal": float(np.sqrt(alpha_bar[k])), "level": float(np.sqrt(1.0 - alpha_bar[k])),
                  "clip": bool(config.clip_sample)}
        x0_sample, x0_output = _clean_estimate(config.prediction_type, alpha_bar[k])
        if sampler == "ddim":
            if config.prediction_type == "epsilon":
                eps_sample, eps_output = 0.0, 1.0
            else:
                eps_sample = 1.0 / np.sqrt(1.0 - alpha_bar[k])
                eps_output = -np.sqrt(alpha_bar[k]) / np.sqrt(1.0 - alpha_bar[k])
            steps.append(SolverStep(**common, x0_sample=x0_sample, x0_output=x0_output, keep=0.0,
                                    x0=float(np.sqrt(previous)), eps_sample=float(eps_sample),
                                    eps_output=float(eps_output), eps=float(np.sqrt(1.0 - previous))))
        else:  # ddpm: posterior mean plus the "fixed_small" variance
            beta = 1.0 - alpha_bar[k] / previous
            variance = max((1.0 - previous) / (1.0 - alpha_bar[k]) * beta, 1e-20)
            steps.append(SolverStep(**common, x0_sample=x0_sample, x0_output=x0_output,
                                    keep=float(np.sqrt(alpha_bar[k] / previous) * (1.0 - previous) / (1.0 - alpha_bar[k])),
                                    x0=float(np.sqrt(previous) * beta / (1.0 - alpha_bar[k])),
                                    fresh_noise=float(np.sqrt(variance)) if k > 0 else 0.0))
    return steps


def _dpm_solver_steps(timesteps: list[int], sigmas: np.ndarray, alpha_bar: np.ndarray, prediction_type: str,
                      clip: bool) -> list[SolverStep]:
    """DPM-Solver++ (2M, midpoint) on diffusers' sigmas: first order on the first and the last step.

    With clip_sample the clean estimates are clipped as in DDPM and DDIM (diffusers' DPM-Solver does not clip):
    its "trailing" steps start at the last training step, where alpha_bar is 2e-7 under the cosine schedule,
    and an unclipped estimate there is the noise prediction's error times 2,000 (Push-T score 0.07 instead of
    DDIM's 0.78 with the same checkpoint)."""
    alphas = 1.0 / np.sqrt(sigmas**2 + 1.0)
    noise_scales = sigmas * alphas
    with np.errstate(divide="ignore"):
        lambdas = np.log(alphas) - np.log(noise_scales)  # +inf at the final sigma 0
    steps = []
    for i, k in enumerate(timesteps):
        h = lambdas[i + 1] - lambdas[i]
        decay = alphas[i + 1] * (np.exp(-h) - 1.0)  # alpha_t (e^-h - 1): 0 - 1 = -1 at the final step
        keep = noise_scales[i + 1] / noise_scales[i]
        if prediction_type == "sample":
            x0_sample, x0_output = 0.0, 1.0
        else:
            x0_sample, x0_output = 1.0 / alphas[i], -noise_scales[i] / alphas[i]
        common = {"timestep": k, "signal": float(np.sqrt(alpha_bar[k])), "level": float(np.sqrt(1.0 - alpha_bar[k])),
                  "x0_sample": float(x0_sample), "x0_output": float(x0_output), "clip": clip, "keep": float(keep)}
        if i == 0 or i == len(timesteps) - 1:
            steps.append(SolverStep(**common, x0=float(-decay)))
        else:
            ratio = (lambdas[i] - lambdas[i - 1]) / h  # r0 = h_0 / h
            steps.append(SolverStep(**common, x0=float(-decay - 0.5 * decay / ratio),
                                    x0_previous=float(0.5 * decay / ratio)))
    return steps
