"""Training configuration: hydra composition of the shipped YAML groups, `key=value` values merged over it, then
checked dataclasses.

Configs are plain YAML composed by hydra; interpolations are OmegaConf's own (no `eval`
resolver), and the resolved config is what a run saves and what a resume compares against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from robopolicy.datasets.task import TaskConfig
from robopolicy.policies.presets import merged_settings
from robopolicy.settings import CONFIG_DIR, build_settings, parse_overrides


GROUPS = ("task", "policy", "encoder", "optim")  # config groups: `task=pusht_image` picks configs/task/pusht_image.yaml
TOP_LEVEL = (*GROUPS, "seed", "run_dir", "resume", "init_from", "device", "training", "eval", "ema", "logging")


def compose_config(overrides: Sequence[str] = (), config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    """train.yaml with `key=value` overrides (the grammar of every verb, robopolicy.settings.parse_overrides):
    a key naming a config group picks that group's YAML file, every other key sets a value. Resolved into plain
    dicts and lists."""
    groups = [item for item in overrides if item.partition("=")[0] in GROUPS]
    values = parse_overrides([item for item in overrides if item not in groups])
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name="robopolicy"):
        cfg: DictConfig = compose(config_name="train", overrides=groups)
    return merge_values(cfg, values)


def merge_values(config: Mapping[str, Any] | DictConfig, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` (parsed overrides) over `config`, interpolations resolved after the merge; unknown top-level keys
    are refused with the known ones (keys below them are checked by their dataclasses)."""
    unknown = sorted(set(values) - set(TOP_LEVEL))
    if unknown:
        raise ValueError(f"unknown run settings {unknown}; known: {list(TOP_LEVEL)}")
    merged = OmegaConf.create(config if isinstance(config, DictConfig) else dict(config))
    OmegaConf.set_struct(merged, False)
    return OmegaConf.to_container(OmegaConf.merge(merged, OmegaConf.create(dict(values))), resolve=True)


@dataclass
class TrainingConfig:
    """The `training:` block of train.yaml (each field is documented there)."""

    max_steps: int = 100000
    time_budget_min: float = 0.0
    batch_size: int = 64
    grad_accum: int = 1
    grad_clip: float = 1.0
    bf16: bool = False
    num_workers: int = 2
    in_memory: bool = True
    threads: int = 0
    log_every: int = 50
    val_every: int = 1000
    checkpoint_every: int = 1000
    eval_every_epochs: int = 0
    top_k: int = 3
    monitor: str = "val_loss"
    monitor_mode: str = "min"
    action_error_windows: int = 64
    val_batches: int = 8

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "val_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"training.{name} must be at least 1, got {getattr(self, name)}")
        if self.monitor_mode not in ("min", "max"):
            raise ValueError(f"training.monitor_mode must be 'min' or 'max', got {self.monitor_mode!r}")

    def micro_batch(self, world_size: int) -> int:
        """Windows per forward pass on one rank; the global batch must split evenly."""
        parts = world_size * self.grad_accum
        if self.batch_size % parts:
            raise ValueError(f"training.batch_size {self.batch_size} must be divisible by ranks x grad_accum = {parts}")
        return self.batch_size // parts


@dataclass
class OptimConfig:
    """The `optim:` group: AdamW and its learning-rate schedule."""

    lr: float = 1e-4
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.95, 0.999)
    eps: float = 1e-8
    encoder_lr_scale: float = 1.0
    scheduler: str = "cosine"
    warmup_steps: int = 500


@dataclass
class EMAConfig:
    """The `ema:` block: Diffusion Policy's power-law EMA."""

    enabled: bool = True
    power: float = 0.75
    inv_gamma: float = 1.0
    max_value: float = 0.9999
    update_after_step: int = 0


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "robopolicy"


@dataclass
class RunConfig:
    """A composed, resolved train.yaml split into its checked parts."""

    raw: dict[str, Any]
    task: TaskConfig
    training: TrainingConfig
    optim: OptimConfig
    ema: EMAConfig
    logging: LoggingConfig

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunConfig:
        for key in ("task", "policy", "encoder", "run_dir", "seed"):
            if key not in raw:
                raise ValueError(f"the config has no {key!r}; compose it from robopolicy/configs/train.yaml")
        return cls(dict(raw), TaskConfig.from_dict(raw["task"]), build_settings(TrainingConfig, raw.get("training"), "training"),
                   build_settings(OptimConfig, raw.get("optim"), "optim"),
                   build_settings(EMAConfig, raw.get("ema"), "ema"),
                   build_settings(LoggingConfig, raw.get("logging"), "logging"))

    @property
    def policy_name(self) -> str:
        return self.raw["policy"]["name"]

    @property
    def policy_settings(self) -> dict[str, Any]:
        """The family's settings with the encoder group merged in."""
        return merged_settings(self.raw["policy"], self.raw["encoder"])

    @property
    def run_dir(self) -> Path:
        return Path(self.raw["run_dir"])

    @property
    def seed(self) -> int:
        return int(self.raw["seed"])
