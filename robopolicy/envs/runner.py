"""Vectorized simulation rollouts of a policy: seeds in, per-episode results and videos out.

Episodes run in waves of `n_envs` parallel envs (gymnasium AsyncVectorEnv subprocesses, or
in-process for one env); every env of a wave starts together, so policies that carry state
across calls (ACT's temporal ensembling) see one consistent batch, and `policy.reset()` is
called once per wave. Episode i uses seed `seed_start + i` for the env, and for a diffusion
or flow policy's initial noise, drawn per episode: with the default deterministic samplers
(DDIM, Euler) an episode's result does not depend on `n_envs` or on the other episodes of
its wave, so results are reproducible and comparable across checkpoints and machines.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from robopolicy.datasets.layout import history_length, obs_offsets, to_policy_layout
from robopolicy.datasets.shape_meta import ShapeMeta, parse_shape_meta
from robopolicy.datasets.text import instruction_tokens
from robopolicy.envs.multistep import make_rollout_env
from robopolicy.envs.registry import env_instruction
from robopolicy.policies.base import PolicyConfig
from robopolicy.progress import progress

log = logging.getLogger(__name__)


class EvaluatedPolicy(Protocol):
    """What a rollout needs of a policy: a trained Policy, or an exported artifact behind the same calls."""

    config: PolicyConfig  # horizons
    shape_meta: ShapeMeta
    action_dim: int
    takes_noise: bool  # predict_action accepts noise= (B, horizon, Da)
    device: torch.device  # where its inputs go

    def predict_action(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
                       **sampling: Any) -> dict[str, torch.Tensor]: ...

    def reset(self) -> None: ...


@dataclass
class EvalConfig:
    """What to roll out: how many episodes, in how many parallel envs, from which seed."""

    n_episodes: int = 50  # seeds seed_start .. seed_start + n_episodes - 1
    n_envs: int = 1  # parallel env subprocesses (`robopolicy eval` and train.yaml's null: one per CPU core)
    seed_start: int = 100000
    max_steps: int | None = None  # env steps per episode (None: the task's own horizon)
    n_videos: int = 4  # mp4s of the first episodes (needs a video_dir)
    stop_on_success: bool = True  # an episode ends when the task succeeds
    instruction: str | None = None  # what a language-conditioned policy is told (None: the env task's own)

    def __post_init__(self) -> None:
        if self.n_episodes < 1 or self.n_envs < 1 or self.n_videos < 0:
            raise ValueError(f"need n_episodes >= 1, n_envs >= 1 and n_videos >= 0, got {self}")

    @property
    def seeds(self) -> list[int]:
        """Episode i's env seed: seed_start + i."""
        return [self.seed_start + i for i in range(self.n_episodes)]


@dataclass
class EpisodeResult:
    """One rollout: its seed, whether it succeeded, its best score, length and summed reward."""

    seed: int
    success: bool
    score: float
    length: int
    reward: float
    video: str | None = None


@dataclass
class Rollouts:
    """All episodes of an evaluation and the wall time of each policy call."""

    episodes: list[EpisodeResult]
    call_ms: list[float] = field(default_factory=list)
    batch_size: int = 1
    wall_s: float = 0.0
    instruction: str | None = None  # what a language-conditioned policy was told


def make_vector_env(env_cfg: Mapping[str, Any], history: int, settings: EvalConfig) -> gym.vector.VectorEnv:
    """`n_envs` rollout envs: subprocesses (spawned, so no GL context or thread pool is forked) or in-process.

    settings.max_steps, when set, becomes the env's own horizon (longer or shorter than its default).
    """
    env_cfg = {**env_cfg, "max_steps": settings.max_steps} if settings.max_steps else dict(env_cfg)
    make = functools.partial(make_rollout_env, env_cfg, history, settings.stop_on_success)
    n_envs = min(settings.n_envs, settings.n_episodes)
    disabled = gym.vector.AutoresetMode.DISABLED
    if n_envs == 1:
        return gym.vector.SyncVectorEnv([make], autoreset_mode=disabled)
    return gym.vector.AsyncVectorEnv([make] * n_envs, context="spawn", autoreset_mode=disabled)


class ObsAdapter:
    """Vector-env observation histories (store layout) -> the policy's obs dict (policy layout); text keys get
    `instruction`'s byte tokens, the same for every env."""

    def __init__(self, shape_meta: Mapping[str, Any] | ShapeMeta, n_obs_steps: int, instruction: str | None = None):
        self.specs = parse_shape_meta(shape_meta).obs
        self.history = history_length(self.specs, n_obs_steps)
        self.rows = {k: obs_offsets(s, n_obs_steps) + self.history - n_obs_steps for k, s in self.specs.items()}
        self.tokens = {key: instruction_tokens([instruction], spec.shape[0]) for key, spec in self.specs.items()
                       if spec.type == "text" and instruction is not None}
        self.checked = False

    def _check_shapes(self, batch: Mapping[str, torch.Tensor]) -> None:
        """Env settings (image_size, n_points, ...) must give the shapes the policy was trained on."""
        for key, spec in self.specs.items():
            if tuple(batch[key].shape[2:]) != spec.shape:
                raise ValueError(f"the env gives {key!r} (from {spec.source!r}) of shape {tuple(batch[key].shape[2:])}, "
                                 f"but the policy's shape_meta says {spec.shape}: evaluate with the env settings "
                                 "it was trained with (e.g. image_size, n_points)")
        self.checked = True

    def __call__(self, obs: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
        batch = {}
        n_envs = len(next(iter(obs.values())))
        for key, spec in self.specs.items():
            if spec.type == "text":
                if key not in self.tokens:
                    raise ValueError(f"the policy is conditioned on an instruction ({key!r}): pass instruction=...")
                batch[key] = torch.from_numpy(self.tokens[key]).long().expand(n_envs, 1, -1).to(device)
                continue
            if spec.source not in obs:
                raise KeyError(f"the env gives no observation {spec.source!r} (for shape_meta key {key!r}); "
                               f"it gives {sorted(obs)}: use the env obs_type that records it")
            values = obs[spec.source][:, self.rows[key]]
            if spec.dims is not None:
                values = values[..., spec.dims[0] : spec.dims[1]]
            squeeze = spec.type == "depth" and values.ndim == 5
            batch[key] = to_policy_layout(values, spec.type, 255.0, squeeze).to(device)
        if not self.checked:
            self._check_shapes(batch)
        return batch


class EpisodeNoise:
    """A diffusion / flow policy's initial noise, drawn per env row from a generator seeded by its episode."""

    def __init__(self, policy: EvaluatedPolicy, device: torch.device):
        self.enabled = policy.takes_noise
        self.shape = (policy.config.horizon, policy.action_dim)
        self.device = device
        self.generators: list[torch.Generator] = []

    def reset(self, seeds: list[int]) -> None:
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def sampling_args(self) -> dict[str, torch.Tensor]:
        """{"noise": (n_envs, horizon, Da)} for the next policy call, or {} for policies without noise."""
        if not self.enabled:
            return {}
        noise = torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])
        return {"noise": noise.to(self.device)}


def rollout(policy: EvaluatedPolicy, env_cfg: Mapping[str, Any], settings: EvalConfig,
            video_dir: Path | None = None, device: str | torch.device = "cpu") -> Rollouts:
    """Run settings.n_episodes episodes of `policy` in the env described by `env_cfg`."""
    config = policy.config
    conditioned = bool(policy.shape_meta.text_keys)
    if settings.instruction is not None and not conditioned:
        raise ValueError(f"instruction={settings.instruction!r} is for a policy told its task in words; this policy "
                         "has no text key")
    instruction = (settings.instruction or env_instruction(env_cfg)) if conditioned else None
    if instruction is not None:
        log.info("instruction: %r", instruction)
    adapter = ObsAdapter(policy.shape_meta, config.n_obs_steps, instruction)
    envs = make_vector_env(env_cfg, adapter.history, settings)
    device = torch.device(device)
    generator = torch.Generator(device=device)  # any noise a sampler draws after the initial noise
    noise = EpisodeNoise(policy, device)
    seeds, n_envs = settings.seeds, envs.num_envs
    episodes: list[EpisodeResult] = []
    call_ms: list[float] = []
    start = time.perf_counter()
    bar = progress(None, total=len(seeds), desc=f"eval {env_cfg.get('name')} {env_cfg.get('task', '')}".strip())
    try:
        for wave in range(0, len(seeds), n_envs):
            wave_seeds = seeds[wave : wave + n_envs]
            idle = [i >= len(wave_seeds) for i in range(n_envs)]
            padded = wave_seeds + [wave_seeds[0]] * (n_envs - len(wave_seeds))
            videos = [str(video_dir / f"seed_{s}.mp4") if video_dir and wave + i < settings.n_videos and not idle[i]
                      else None for i, s in enumerate(padded)]
            envs.set_attr("video_path", videos)
            envs.set_attr("idle", idle)
            obs, info = envs.reset(seed=padded)
            policy.reset()
            generator.manual_seed(wave_seeds[0])
            noise.reset(padded)
            done, rewards = np.array(idle), np.zeros(n_envs)
            while not done.all():
                tick = time.perf_counter()
                with torch.no_grad():
                    output = policy.predict_action(adapter(obs, device), generator=generator, **noise.sampling_args())
                action = output["action"].detach().to("cpu", torch.float32).numpy()
                call_ms.append(1000 * (time.perf_counter() - tick))
                obs, reward, _, _, info = envs.step(action)
                done, rewards = info["done"], rewards + reward
            for i, seed in enumerate(wave_seeds):
                episodes.append(EpisodeResult(seed, bool(info["is_success"][i]), float(info["score"][i]),
                                              int(info["length"][i]), float(rewards[i]), videos[i]))
            bar.update(len(wave_seeds))
            bar.set_postfix(success=f"{np.mean([e.success for e in episodes]):.2f}")
    except BaseException:
        envs.close(terminate=True)  # a worker may still owe a reply; do not wait for it
        raise
    else:
        envs.close()
    finally:
        bar.close()
    return Rollouts(episodes, call_ms, n_envs, time.perf_counter() - start, instruction)
