"""Training configuration: hydra composition of the shipped YAML groups, `key=value` values merged over it, then
checked dataclasses.

Configs are plain YAML composed by hydra; interpolations are OmegaConf's own (no `eval`
resolver), and the resolved config is what a run saves and what a resume compares against.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from robopolicy.datasets.infer_task import infer_task
from robopolicy.datasets.task import TaskConfig
from robopolicy.policies.presets import merged_settings
from robopolicy.settings import CONFIG_DIR, build_settings, parse_overrides

log = logging.getLogger(__name__)

GROUPS = ("task", "policy", "encoder", "optim")  # config groups: `task=pusht_image` picks configs/task/pusht_image.yaml
TOP_LEVEL = (*GROUPS, "seed", "run_dir", "resume", "init_from", "device", "training", "eval", "ema", "logging")
DATA_KEYS = ("data", "obs", "action")  # data=STORE [obs=[k1,k2]] [action=KEY]: the task built from the store


def compose_config(overrides: Sequence[str] = (), config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    """train.yaml with `key=value` overrides (the grammar of every verb, robopolicy.settings.parse_overrides):
    a key naming a config group picks that group's YAML file (`task=` may also name a task YAML file),
    `data=STORE` builds the task from the store, every other key sets a value. Resolved into plain dicts and
    lists."""
    groups = [item for item in overrides if item.partition("=")[0] in GROUPS]
    values = parse_overrides([item for item in overrides if item not in groups])
    task_file = next((item.partition("=")[2] for item in groups if item.startswith("task=")
                      and is_task_file(item.partition("=")[2])), None)
    groups = [item for item in groups if not (task_file and item.startswith("task="))]
    for item in groups:
        check_group_choice(config_dir, *item.split("=", 1))
    task = task_section(task_file, {k: values.pop(k) for k in DATA_KEYS if k in values},
                        any(item.startswith("task=") for item in groups))
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name="robopolicy"):
        cfg: DictConfig = compose(config_name="train", overrides=groups)
    if task is not None:
        OmegaConf.set_struct(cfg, False)
        cfg.task = task
    if cfg.task.get("encoder"):
        cfg.encoder = OmegaConf.merge(cfg.encoder, cfg.task.encoder)
    return merge_values(cfg, values)


def check_group_choice(config_dir: Path, group: str, choice: str) -> None:
    """A ValueError naming the closest shipped choices when configs/<group>/<choice>.yaml does not exist."""
    shipped = sorted(path.stem for path in (config_dir / group).glob("*.yaml"))
    if choice not in shipped:
        close = difflib.get_close_matches(choice, shipped, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        files = " (or task=PATH.yaml, or data=STORE)" if group == "task" else ""
        raise ValueError(f"unknown {group} {choice!r}\n  fix: {hint}choose one of {shipped}{files}")


def is_task_file(value: str) -> bool:
    """`task=VALUE` names a YAML file (a path or a .yaml name) rather than a shipped task."""
    return value.endswith((".yaml", ".yml")) or "/" in value or "\\" in value


def task_section(task_file: str | None, data: Mapping[str, Any], named_task: bool) -> dict[str, Any] | None:
    """The task from a YAML file (`task=PATH.yaml`) or built from a store (`data=STORE obs=... action=...`);
    None when the task is a shipped one."""
    if data and "data" not in data:
        raise ValueError(f"{sorted(data)} pick keys of data=STORE; give data= too, or set task.shape_meta")
    if data and (task_file or named_task):
        raise ValueError("data=STORE builds the task from the store; give either data= or task=, not both "
                         "(task.dataset.path=STORE points a task at another store)")
    if task_file is not None:
        path = Path(task_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"task={task_file}: no such file (a shipped task is named without a path: "
                                    f"{sorted(p.stem for p in (CONFIG_DIR / 'task').glob('*.yaml'))})")
        task = yaml.safe_load(path.read_text())
        if not isinstance(task, dict):
            raise ValueError(f"{path}: a task file holds the task section (name, dataset, shape_meta, ...)")
        return task
    if not data:
        return None
    obs = data.get("obs")
    if obs is not None and (isinstance(obs, str) or not isinstance(obs, Sequence)):
        obs = [obs]
    return infer_task(str(data["data"]), obs, data.get("action"))


class _TaskDumper(yaml.SafeDumper):
    """Block mappings with lists on one line (`shape: [3, 96, 96]`), as the shipped task files are written."""


_TaskDumper.add_representer(list, lambda dumper, value: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", value, flow_style=True))


def task_yaml(task: Mapping[str, Any]) -> str:
    """The task section as the YAML a user edits and passes back with task=PATH.yaml."""
    return yaml.dump(dict(task), Dumper=_TaskDumper, sort_keys=False, default_flow_style=False)


def merge_values(config: Mapping[str, Any] | DictConfig, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` (parsed overrides) over `config`, interpolations resolved after the merge; unknown top-level keys
    are refused with the known ones (keys below them are checked by their dataclasses)."""
    unknown = sorted(set(values) - set(TOP_LEVEL))
    if unknown:
        raise ValueError(f"unknown run settings {unknown}; known: {list(TOP_LEVEL)}")
    merged = OmegaConf.create(config if isinstance(config, DictConfig) else dict(config))
    known_eval = set(merged.get("eval") or {})  # checked by EvalConfig only when training evaluates: check it now
    unknown = sorted(set(values.get("eval") or {}) - known_eval)
    if unknown and known_eval:
        raise ValueError(f"unknown eval settings {unknown}; known: {sorted(known_eval)}")
    OmegaConf.set_struct(merged, False)
    return OmegaConf.to_container(OmegaConf.merge(merged, OmegaConf.create(dict(values))), resolve=True)


@dataclass
class TrainingConfig:
    """The `training:` block of train.yaml: how long, how big, how often to validate and save."""

    max_steps: int = 100000  # optimizer steps (the learning-rate schedule spans them)
    time_budget_min: float = 0.0  # stop after this many minutes with a final checkpoint (0 = off); the lr schedule
    # still spans max_steps, so set max_steps to about what fits in the budget
    batch_size: int = 64  # global batch per optimizer step, split over ranks and accumulation
    grad_accum: int = 1  # micro-batches per optimizer step on each rank
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    bf16: bool = False  # autocast the forward pass to bfloat16
    num_workers: int = 2  # DataLoader worker processes
    in_memory: bool = True  # load the store into memory before training
    threads: int = 0  # torch intra-op threads per process (0 = leave torch's default)
    log_every: int = 50  # steps between log lines
    val_every: int = 1000  # steps between validations (loss on held-out episodes, action error)
    checkpoint_every: int = 1000  # steps between checkpoints (a last checkpoint is always written at the end)
    eval_every_epochs: int = 0  # epochs between simulation evaluations with the `eval:` settings (0 = off)
    top_k: int = 3  # checkpoints kept by the monitored metric, besides last
    monitor: str = "val_loss"  # val_loss, action_error, sim_success_rate or sim_mean_score (with monitor_mode max)
    monitor_mode: str = "min"  # min or max
    action_error_windows: int = 64  # action_error = MSE, in raw action units, of sampled chunks (whole horizon)
    # against the demos on this many fixed training windows
    val_batches: int = 8  # validation batches per validation (0 = the whole validation set)

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
    encoder_lr_scale: float = 1.0  # lr multiplier for the observation encoder (e.g. 0.1 with pretrained weights)
    scheduler: str = "cosine"  # any name diffusers' get_scheduler knows (cosine, linear, constant_with_warmup, ...)
    warmup_steps: int = 500


@dataclass
class EMAConfig:
    """The `ema:` block: Diffusion Policy's power-law EMA (robopolicy.policies.ema)."""

    enabled: bool = True  # keep an EMA copy of the weights; checkpoints' ema.safetensors is what eval uses
    power: float = 0.75  # decay = 1 - (1 + step / inv_gamma) ** -power, clipped to max_value
    inv_gamma: float = 1.0
    max_value: float = 0.9999
    update_after_step: int = 0  # the EMA copies the weights until this step


@dataclass
class LoggingConfig:
    """The `logging:` block: where metrics go besides train_log.jsonl."""

    tensorboard: bool = True
    wandb: bool = False  # needs `pip install wandb` and a login
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
        return cls(dict(raw), TaskConfig.from_dict(raw["task"]),
                   build_settings(TrainingConfig, raw.get("training"), "training"),
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
