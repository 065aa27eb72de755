"""`robopolicy train`: compose the config, save it with the run, train, return the final metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import yaml

from robopolicy.training.config import RunConfig, compose_config, task_yaml
from robopolicy.training.distributed import shutdown_distributed
from robopolicy.training.trainer import EvalHook, Trainer

log = logging.getLogger(__name__)


def train(overrides: Sequence[str] = (), eval_hook: EvalHook | None = None) -> dict[str, float]:
    """Train with train.yaml plus key=value overrides (e.g. ["policy=flow", "training.max_steps=500"]).

    With training.eval_every_epochs > 0 and no eval_hook, the task's simulator evaluates the policy
    with the config's `eval:` settings.
    """
    raw = compose_config(overrides)
    if any(item.startswith("data=") for item in overrides):
        log.info("the task built from the store (saved as task.yaml in %s; edit it and train with task=FILE):\n%s",
                 raw["run_dir"], task_yaml(raw["task"]))
    return train_config(raw, eval_hook)


def train_config(raw: dict, eval_hook: EvalHook | None = None) -> dict[str, float]:
    """Train with an already composed, resolved config (what `train` and `robopolicy distill` build)."""
    config = RunConfig.from_dict(raw)
    if eval_hook is None and config.training.eval_every_epochs:
        from robopolicy.envs.evaluate import make_eval_hook

        eval_hook = make_eval_hook(config.raw)
    trainer = Trainer(config, eval_hook=eval_hook)
    try:
        if trainer.dist.is_main:
            config.run_dir.mkdir(parents=True, exist_ok=True)
            (config.run_dir / "config.yaml").write_text(yaml.safe_dump(config.raw, sort_keys=False))
            (config.run_dir / "task.yaml").write_text(task_yaml(config.raw["task"]))  # train again with task=PATH
        metrics = trainer.fit()
        if trainer.dist.is_main:
            log.info("finished at step %d: %s (checkpoints in %s)", trainer.step, metrics, trainer.checkpoints.root)
        return metrics
    finally:
        trainer.close()
        shutdown_distributed()
