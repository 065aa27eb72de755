"""`robopolicy eval` and the trainer's periodic simulation hook: one evaluator for both.

A checkpoint carries its task's `env:` section and shape_meta, so evaluating it needs no
other config; `key=value` overrides change the rollout settings (`n_episodes=50 n_envs=4`)
or the env (`env.max_steps=400`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robopolicy.datasets.task import TaskConfig
from robopolicy.datasets.text import untrained_instruction
from robopolicy.envs.offline import OfflineEvalConfig, evaluate_offline
from robopolicy.envs.registry import env_instruction, env_suite
from robopolicy.envs.report import summarize, write_report, write_suite_report
from robopolicy.envs.runner import EvalConfig, EvaluatedPolicy, rollout
from robopolicy.policies.base import Policy
from robopolicy.policies.checkpoint import load_policy, read_config
from robopolicy.settings import build_settings, parse_overrides

log = logging.getLogger(__name__)
CHECKPOINT_OPTIONS = ("out", "use_ema", "device", "threads", "sampler", "num_inference_steps")
SAMPLING_OPTIONS = ("sampler", "num_inference_steps")


def with_sampling(policy: Policy, sampling: Mapping[str, Any], where: Path) -> Policy:
    """The policy with its default sampler and step count replaced (checked like the config they come from)."""
    if not sampling:
        return policy
    unknown = sorted(k for k in sampling if not hasattr(policy.config, k))
    if unknown:
        raise ValueError(f"{where}: a {type(policy).__name__} has no {unknown} setting to override")
    policy.config = dataclasses.replace(policy.config, **sampling)
    return policy


def evaluate_policy(policy: EvaluatedPolicy, env_cfg: Mapping[str, Any], settings: EvalConfig,
                    out_dir: Path | None, title: str = "") -> dict[str, Any]:
    """Roll out, summarize, and (with out_dir) write eval.json, per_seed.png and videos/."""
    device = policy.device
    video_dir = out_dir / "videos" if out_dir is not None and settings.n_videos else None
    summary = summarize(rollout(policy, env_cfg, settings, video_dir=video_dir, device=device))
    summary = {"env": dict(env_cfg), "settings": vars(settings).copy(), **summary}
    if out_dir is not None:
        summary = write_report(summary, out_dir, title or str(env_cfg.get("task", env_cfg["name"])))
    return summary


def default_n_envs(n_episodes: int) -> int:
    """One env per CPU core (the policy runs in the parent), at most one per episode."""
    return max(1, min(n_episodes, os.cpu_count() or 1))


def eval_settings(options: Mapping[str, Any]) -> EvalConfig:
    """EvalConfig from a mapping; n_envs missing or null means one env per CPU core."""
    options = dict(options)
    if options.get("n_envs") is None:
        options["n_envs"] = default_n_envs(options.get("n_episodes", EvalConfig.n_episodes))
    return build_settings(EvalConfig, options, "eval")


def evaluate_checkpoint(checkpoint: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate a checkpoint directory in its task's simulator; writes into <run>/eval/<checkpoint>.

    (An exported artifact is evaluated by robopolicy.deploy.artifact_policy.evaluate_artifact.)
    """
    checkpoint = Path(checkpoint)
    options = parse_overrides(overrides)
    extra = {k: options.pop(k) for k in CHECKPOINT_OPTIONS if k in options}
    if extra.get("threads"):
        torch.set_num_threads(int(extra["threads"]))
    task = TaskConfig.from_dict(read_config(checkpoint)["task"], strict=False)
    device = extra.get("device", "cuda" if torch.cuda.is_available() else "cpu")
    policy = with_sampling(load_policy(checkpoint, use_ema=extra.get("use_ema", True), device=device),
                           {k: extra[k] for k in SAMPLING_OPTIONS if k in extra}, checkpoint)
    out_dir = Path(extra.get("out") or checkpoint.parent.parent / "eval" / checkpoint.resolve().name)
    return evaluate_in_env(policy, task, checkpoint / "config.yaml", options, out_dir, checkpoint)


def is_offline(task: TaskConfig, options: Mapping[str, Any], where: Path) -> bool:
    """Offline evaluation when asked for, or when the task has no simulator; online otherwise."""
    offline = options.get("offline", task.env is None)
    if not offline and task.env is None:
        raise ValueError(f"{where}: task {task.name!r} has no env section, so there is no simulator to roll out in; "
                         "evaluate offline (the default for it) or add task.env (e.g. {name: pusht})")
    return bool(offline)


def evaluate_in_env(policy: EvaluatedPolicy, task: TaskConfig, where: Path, options: dict[str, Any], out_dir: Path,
                    source: Path) -> dict[str, Any]:
    """Evaluate `policy` (from the checkpoint or artifact `source`, described at `where`): rolled out in its task's
    env with the rollout and env.* overrides in `options`, or offline on recorded episodes (offline=true, and
    for a task without an env) with the OfflineEvalConfig options."""
    if is_offline(task, options, where):
        settings = build_settings(OfflineEvalConfig, {**options, "out": str(out_dir)}, "offline eval")
        summary = evaluate_offline(policy, task.dataset, settings, out_dir, f"{task.name} {source.name}")
        return {"checkpoint": str(source), **summary}
    options.pop("offline", None)
    env_cfg = {**task.env, **options.pop("env", {})}
    suite = options.pop("suite", None)
    settings = eval_settings(options)
    known = task.dataset.task_names()
    if suite is not None:
        return {"checkpoint": str(source), **evaluate_suite(policy, env_cfg, str(suite), settings, out_dir, known)}
    warn_if_untrained(policy, settings, env_cfg, known)
    summary = evaluate_policy(policy, env_cfg, settings, out_dir, title=f"{task.name} {source.name}")
    return {"checkpoint": str(source), **summary}


def evaluate_suite(policy: EvaluatedPolicy, env_cfg: Mapping[str, Any], suite: str, settings: EvalConfig,
                   out_dir: Path, known: list[str] | None = None) -> dict[str, Any]:
    """Every task of a benchmark suite (`suite=libero_goal`, or `libero` for the four), each told its own
    instruction unless `instruction=` is given: an eval.json and videos per task under out_dir/<suite>/task_<k>,
    and suite.json with the success per task, per suite and overall."""
    tasks: dict[str, dict[str, Any]] = {}
    for name, task_env in env_suite(env_cfg, suite):
        warn_if_untrained(policy, settings, task_env, known)
        summary = evaluate_policy(policy, task_env, settings, out_dir / name, title=name)
        tasks[name] = {key: summary[key] for key in ("instruction", "success_rate", "success_rate_ci95", "n_episodes",
                                                     "eval_json", "videos")}
        log.info("%s: success %.2f (%s)", name, summary["success_rate"], summary["instruction"])
    groups: dict[str, list[float]] = {}
    for name, result in tasks.items():
        groups.setdefault(name.rpartition("/")[0], []).append(result["success_rate"])
    report = {"suite": suite, "tasks": tasks, "suites": {g: float(np.mean(v)) for g, v in groups.items()},
              "success_rate": float(np.mean([t["success_rate"] for t in tasks.values()])),
              "settings": vars(settings).copy()}
    return write_suite_report(report, out_dir)


def warn_if_untrained(policy: EvaluatedPolicy, settings: EvalConfig, env_cfg: Mapping[str, Any],
                      known: list[str] | None) -> None:
    """Log the instruction a rollout tells a policy (the one given, else the env task's) when no training episode
    names it: the policy may not follow it."""
    if not policy.shape_meta.text_keys:
        return
    problem = untrained_instruction(settings.instruction or env_instruction(env_cfg), known)
    if problem:
        log.warning(problem)


def make_eval_hook(raw_config: Mapping[str, Any]) -> Callable[[Policy, int], dict[str, float]]:
    """The trainer's periodic-eval hook: the same rollouts, with the run config's `eval:` settings."""
    task = TaskConfig.from_dict(raw_config["task"])
    env_cfg = task.env
    if env_cfg is None:
        raise ValueError(f"training.eval_every_epochs is set but task {task.name!r} has no env "
                         "section to evaluate in; set training.eval_every_epochs=0 or add task.env")
    settings = eval_settings(raw_config.get("eval") or {})
    root = Path(raw_config["run_dir"]) / "eval"

    def hook(policy: Policy, epoch: int) -> dict[str, float]:
        summary = evaluate_policy(policy, env_cfg, settings, root / f"epoch_{epoch:04d}", f"epoch {epoch}")
        log.info("epoch %d: success %.3f, mean score %.3f over %d seeds", epoch, summary["success_rate"],
                 summary["mean_score"], summary["n_episodes"])
        return {"sim_success_rate": summary["success_rate"], "sim_mean_score": summary["mean_score"]}

    return hook
