"""The one trainer for every policy family and task.

AdamW with an encoder parameter group, a diffusers learning-rate schedule with warm-up, gradient
clipping and accumulation, optional bf16 autocast, EMA, validation on held-out episodes, an
action-error metric, a simulation-evaluation hook, top-k checkpoints plus `last`, exact resume
and torchrun DDP. Every micro-batch seeds torch from (seed, step, micro-batch index), so the
random draws of a step do not depend on the ranks, the resume point or the DataLoader workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from diffusers.optimization import get_scheduler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.normalizer import Normalizer
from robopolicy.datasets.relative import relative_windows
from robopolicy.datasets.sequence import SequenceDataset
from robopolicy.datasets.store import EpisodeStore
from robopolicy.policies.base import Policy
from robopolicy.policies.checkpoint import init_from_checkpoint, load_weights, read_config, read_meta
from robopolicy.policies.ema import EMA
from robopolicy.policies.registry import make_policy
from robopolicy.progress import progress
from robopolicy.training.batches import StepBatchSampler
from robopolicy.training.checkpoint import CheckpointContent, CheckpointManager, read_train_state
from robopolicy.training.config import RunConfig
from robopolicy.training.distributed import (
    DistInfo,
    barrier,
    init_distributed,
    rank0_decides,
    reduce_mean,
)
from robopolicy.training.logger import MetricLogger

log = logging.getLogger(__name__)
# Called every training.eval_every_epochs epochs on the main process with (policy, epoch); returns metrics.
EvalHook = Callable[[Policy, int], Mapping[str, float]]


def micro_seed(seed: int, step: int, micro_index: int) -> int:
    """The torch seed of one micro-batch: a function of the run seed, the step and its place in the batch."""
    return int(np.random.SeedSequence([seed, step, micro_index]).generate_state(1)[0])


def resolve_device(name: str, local_rank: int) -> torch.device:
    """cpu, or this process's GPU (torchrun's LOCAL_RANK) for cuda / auto."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a nested dict to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


# Settings a resumed run may change: they alter how long or where it runs, not what it computes.
RESUMABLE_CHANGES = {"resume", "device", "training.max_steps", "training.time_budget_min", "training.num_workers",
                     "training.threads", "training.log_every", "training.val_every", "training.checkpoint_every",
                     "training.eval_every_epochs", "training.val_batches", "logging", "eval"}


def changed_settings(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs, except RESUMABLE_CHANGES."""
    changed = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if name in RESUMABLE_CHANGES:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += changed_settings(a, b, f"{name}.")
        elif a != b:
            changed.append(name)
    return changed


def store_fingerprint(store: EpisodeStore) -> str:
    """A short hash of the store's layout: keys, shapes, dtypes and episode boundaries."""
    layout = {k: [list(store[k].shape[1:]), str(store[k].dtype)] for k in store.keys}
    digest = hashlib.sha256(json.dumps(layout, sort_keys=True).encode() + store.episode_ends.tobytes())
    return digest.hexdigest()[:16]


class Trainer:
    """Builds data, policy, optimizer and EMA from a RunConfig; `fit()` trains to training.max_steps."""

    def __init__(self, config: RunConfig, eval_hook: EvalHook | None = None):
        self.config, self.settings, self.eval_hook = config, config.training, eval_hook
        if self.settings.eval_every_epochs and eval_hook is None:
            raise ValueError("training.eval_every_epochs > 0 needs a simulation evaluation hook, and this run has none; "
                             "set training.eval_every_epochs=0")
        self.dist: DistInfo = init_distributed()
        self.device = resolve_device(config.raw.get("device", "auto"), self.dist.local_rank)
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.store = self._open_store()
        self.policy = make_policy(config.policy_name, config.task.shape_meta, config.policy_settings).to(self.device)
        self.train_set, self.val_set = self._datasets()
        normalizer = Normalizer.fit(self.store, config.task.shape_meta, config.task.normalizer,
                                    episode_mask=self.train_set.episode_mask)
        frame = self.policy.shape_meta.action_frame
        if frame is not None:  # statistics of what the policy sees: actions and poses relative to each window's pose
            normalizer.refit(relative_windows(self.train_set, frame))
        self.policy.set_normalizer(normalizer.to(self.device))
        if config.raw.get("init_from") and not config.raw.get("resume"):
            untouched = init_from_checkpoint(self.policy, config.raw["init_from"])
            log.info("initialized from %s (%d tensors kept their initial values: %s)", config.raw["init_from"],
                     len(untouched), untouched[:5])
        self.ema = EMA(self.policy, config.ema.update_after_step, config.ema.inv_gamma, config.ema.power,
                       max_value=config.ema.max_value) if config.ema.enabled else None
        self.optimizer = self._optimizer()
        self.scheduler = get_scheduler(config.optim.scheduler, self.optimizer, num_warmup_steps=config.optim.warmup_steps,
                                       num_training_steps=self.settings.max_steps)
        self.checkpoints = CheckpointManager(config.run_dir / "checkpoints", self.settings.top_k,
                                             self.settings.monitor, self.settings.monitor_mode)
        if self.dist.is_main:
            self.checkpoints.remove_leftovers()
        self.step = 0
        self.data_wait_s = 0.0  # time spent waiting for batches, for the data-loading share in the logs
        self.latest: dict[str, float] = {}  # the newest value of every metric, for checkpoints and top-k
        if config.raw.get("resume"):
            self._resume()
        elif self.checkpoints.last() is not None:
            raise FileExistsError(f"{config.run_dir} already holds checkpoints; pass resume=true to continue it, "
                                  "or choose another run_dir")
        self.model = self.policy
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.policy, device_ids=ids)
        self.logger = MetricLogger(config.run_dir, self.dist.is_main, config.logging.tensorboard, config.logging.wandb,
                                   config.logging.wandb_project, config.raw,
                                   resumed_step=self.step if config.raw.get("resume") else None)

    # ------------------------------------------------------------------ setup
    def _open_store(self) -> EpisodeStore:
        dataset = self.config.task.dataset
        store = EpisodeStore.open(dataset.path)
        if self.settings.in_memory:
            keys = {spec.get("source", key) for key, spec in self.config.task.shape_meta["obs"].items()}
            keys.add(self.config.task.shape_meta["action"].get("source", "action"))
            store = store.load(sorted(keys & set(store.keys)))
        return store

    def _datasets(self) -> tuple[SequenceDataset, SequenceDataset]:
        dataset, policy = self.config.task.dataset, self.policy.config
        train = SequenceDataset.for_window(self.store, self.config.task.shape_meta, policy.window,
                                           n_latency_steps=dataset.n_latency_steps, val_ratio=dataset.val_ratio,
                                           seed=dataset.split_seed, max_train_episodes=dataset.max_train_episodes)
        if len(train) == 0:
            raise DataError(self.store.path, f"the train split has no windows ({int(train.episode_mask.sum())} episodes "
                            f"of {self.store.n_episodes}, horizon {policy.horizon})", key="task.dataset",
                            fix="lower task.dataset.val_ratio, raise max_train_episodes or shorten the horizon")
        return train, train.get_validation_dataset()

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW with the observation encoder in its own group (lr scaled by optim.encoder_lr_scale)."""
        optim = self.config.optim
        groups = self.policy.parameter_groups(optim.lr, optim.encoder_lr_scale)
        return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                                 weight_decay=optim.weight_decay)

    # ------------------------------------------------------------------ training
    def _loader(self) -> tuple[StepBatchSampler, Iterator[Any]]:
        self.settings.micro_batch(self.dist.world_size)  # checks that the global batch splits evenly
        sampler = StepBatchSampler(len(self.train_set), self.settings.batch_size, self.dist.world_size, self.dist.rank,
                                   self.settings.grad_accum, self.config.seed, self.settings.max_steps, self.step)
        loader = DataLoader(self.train_set, sampler=sampler, batch_size=None, num_workers=self.settings.num_workers,
                            persistent_workers=False, pin_memory=self.device.type == "cuda")
        return sampler, iter(loader)

    def train_step(self, sampler: StepBatchSampler, batches: Iterator[Any]) -> float:
        """One optimizer step over grad_accum micro-batches; returns the mean loss on this rank."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, accum = 0.0, self.settings.grad_accum
        for accum_step in range(accum):
            waiting = time.perf_counter()
            batch = to_device(next(batches), self.device)
            self.data_wait_s += time.perf_counter() - waiting
            torch.manual_seed(micro_seed(self.config.seed, self.step, sampler.micro_batch_index(accum_step)))
            sync = contextlib.nullcontext()
            if self.dist.enabled and accum_step < accum - 1:  # all-reduce gradients once, on the last micro-batch
                sync = self.model.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.settings.bf16):
                    loss = self.model(batch) / accum
                loss.backward()
            total += loss.item()
        if self.settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.policy)
        self.step += 1
        return total

    def fit(self, until_step: int | None = None) -> dict[str, float]:
        """Train up to training.max_steps (or stop early at `until_step`); returns the last metrics, with `step`,
        `max_steps` and `stopped_by_time_budget` (1.0 when training.time_budget_min ended it early)."""
        sampler, batches = self._loader()
        stop = min(self.settings.max_steps, until_step or self.settings.max_steps)
        deadline = time.monotonic() + 60.0 * self.settings.time_budget_min if self.settings.time_budget_min else None
        bar = progress(None, f"train {self.config.policy_name}", total=self.settings.max_steps, initial=self.step,
                       enabled=self.dist.is_main)
        log_every = min(self.settings.log_every, max(1, self.settings.max_steps // 10))  # at least ~10 lines a run
        window_time, window_loss, window_steps, metrics = 0.0, 0.0, 0, {}
        self.data_wait_s = 0.0
        while self.step < stop:
            started = time.perf_counter()
            window_loss += self.train_step(sampler, batches)
            window_time += time.perf_counter() - started
            window_steps += 1
            bar.update(1)
            if self.step % log_every == 0 or self.step == stop:
                metrics = {"train_loss": window_loss / window_steps, "lr": self.scheduler.get_last_lr()[0],
                           "samples_per_s": window_steps * self.settings.batch_size / window_time,
                           "data_wait_share": self.data_wait_s / window_time, "epoch": sampler.epoch_of(self.step - 1)}
                bar.set_postfix(loss=f"{metrics['train_loss']:.4f}", lr=f"{metrics['lr']:.2e}",
                                sps=f"{metrics['samples_per_s']:.0f}")
                self.logger.log(self.step, metrics)
                self.latest.update(metrics)
                window_time, window_loss, window_steps, self.data_wait_s = 0.0, 0.0, 0, 0.0
            self._periodic(sampler)
            if deadline is not None and rank0_decides(time.monotonic() >= deadline, self.dist):
                break
        bar.close()
        if self.step % self.settings.checkpoint_every and self.checkpoints.saved_step() != self.step:
            final = self.validate()  # the final state is always saved
            self.logger.log(self.step, final)
            self.latest.update(final)
            self._checkpoint()
        cut = self.step < stop
        if cut and self.dist.is_main:
            log.warning("training.time_budget_min=%g stopped training at step %d of %d planned: the policy is "
                        "undertrained (the lr schedule spans all %d steps); raise the budget or lower max_steps",
                        self.settings.time_budget_min, self.step, self.settings.max_steps, self.settings.max_steps)
        return {**self.latest, "step": self.step, "max_steps": self.settings.max_steps,
                "stopped_by_time_budget": float(cut)}

    def _periodic(self, sampler: StepBatchSampler) -> None:
        """Validation, simulation evaluation and checkpoints at their intervals."""
        extra: dict[str, float] = {}
        if self.step % self.settings.val_every == 0 or self.step % self.settings.checkpoint_every == 0:
            extra.update(self.validate())
        epochs = self.settings.eval_every_epochs
        boundary = self.step % sampler.steps_per_epoch == 0
        if self.eval_hook and epochs and boundary and (self.step // sampler.steps_per_epoch) % epochs == 0:
            extra.update(self._simulate(self.step // sampler.steps_per_epoch))
        if extra:
            self.logger.log(self.step, extra)
            self.latest.update(extra)
        if self.step % self.settings.checkpoint_every == 0:
            self._checkpoint()

    def _simulate(self, epoch: int) -> dict[str, float]:
        result = {}
        if self.dist.is_main:
            policy = self.eval_policy()
            result = dict(self.eval_hook(policy, epoch))
            policy.reset()
        barrier(self.dist)
        return result

    # ------------------------------------------------------------------ evaluation
    def eval_policy(self) -> Policy:
        """The weights to evaluate and deploy (the EMA average when enabled), in eval mode."""
        return (self.ema.averaged if self.ema is not None else self.policy).eval()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """val_loss on held-out episodes (reduced over ranks) and action_error on fixed training windows."""
        policy = self.eval_policy().eval()
        rng_state = torch.get_rng_state()
        torch.manual_seed(self.config.seed)
        metrics = {}
        if len(self.val_set):
            micro = self.settings.micro_batch(self.dist.world_size) * self.settings.grad_accum
            mine = np.arange(self.dist.rank, len(self.val_set), self.dist.world_size)
            if self.settings.val_batches:
                mine = mine[: self.settings.val_batches * micro]
            total = sum(policy.compute_loss(to_device(self.val_set[chunk], self.device)).item() * len(chunk)
                        for chunk in np.array_split(mine, max(1, -(-len(mine) // micro))) if len(chunk))
            metrics["val_loss"] = reduce_mean(total, len(mine), self.dist)
        windows = np.linspace(0, len(self.train_set) - 1, min(self.settings.action_error_windows, len(self.train_set)))
        batch = to_device(self.train_set[windows.astype(np.int64)], self.device)
        predicted = policy.predict_action(batch["obs"], generator=torch.Generator().manual_seed(self.config.seed))
        metrics["action_error"] = torch.nn.functional.mse_loss(predicted["action_pred"], batch["action"]).item()
        policy.reset()
        torch.set_rng_state(rng_state)
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self) -> None:
        if self.dist.is_main:
            metrics = dict(self.latest)
            if self.settings.monitor not in metrics:
                log.warning("step %d: monitored metric %r not measured yet; this checkpoint cannot rank in the top-k",
                            self.step, self.settings.monitor)
            content = CheckpointContent(config=self.config.raw, meta=self._meta(metrics), policy=self.policy,
                                        ema_policy=self.ema.averaged if self.ema else None, train_state=self._train_state())
            path = self.checkpoints.save(self.step, metrics, content)
            log.info("step %d: checkpoint %s", self.step, path)
        barrier(self.dist)

    def _meta(self, metrics: Mapping[str, float]) -> dict[str, Any]:
        return {"policy": self.config.policy_name, "policy_settings": self.config.policy_settings,
                "shape_meta": self.config.task.shape_meta, "task": self.config.task.name, "step": self.step,
                "metrics": dict(metrics), "dataset": {"path": str(self.config.task.dataset.path),
                                                      "fingerprint": store_fingerprint(self.store)}}

    def _train_state(self) -> dict[str, Any]:
        """Optimizer, scheduler, EMA counter, step and torch RNG as tensors and plain values.

        Data order and the random draws of each micro-batch derive from (seed, step), so these
        are all a resume needs to continue exactly.
        """
        return {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema else {}, "torch_rng": torch.get_rng_state()}

    def _resume(self) -> None:
        """Continue from checkpoints/last: same policy and data layout, exact optimizer and EMA state."""
        last = self.checkpoints.last()
        if last is None:
            raise FileNotFoundError(f"resume=true but {self.checkpoints.root}/last does not exist; start without resume")
        meta = read_meta(last)
        if meta["policy"] != self.config.policy_name or meta["policy_settings"] != self.config.policy_settings:
            raise ValueError(f"{last} was trained with policy {meta['policy']!r} and other settings; resume needs the "
                             f"same policy config as the run (got {self.config.policy_name!r})")
        if meta["shape_meta"] != self.config.task.shape_meta:
            raise ValueError(f"{last} was trained on another shape_meta; resume needs the same task")
        if meta["dataset"]["fingerprint"] != store_fingerprint(self.store):
            raise ValueError(f"{last} was trained on a store with other keys, shapes or episodes than "
                             f"{self.config.task.dataset.path}; resume needs the same data")
        changed = changed_settings(read_config(last), self.config.raw)
        if changed:
            raise ValueError(f"resuming {last} with changed settings {changed} would not continue the same run; "
                             f"only {sorted(RESUMABLE_CHANGES)} may change")
        load_weights(self.policy, last, "model.safetensors")
        state = read_train_state(last)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            load_weights(self.ema.averaged, last, "ema.safetensors")
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", last, self.step)

    def close(self) -> None:
        self.logger.close()
