"""MetaWorld MT10 on this CPU: one policy told each task in words against ten single-task policies of the same
total compute, scored per task by DP3's protocol (bench/quality.py's MetaWorld rows).

    .venv/bin/python -m bench.mt10 store                # the ten tasks' demos (made if missing), merged
    .venv/bin/python -m bench.quality train metaworld_mt10 training.max_steps=N   # N: the steps of 100 minutes
    .venv/bin/python -m bench.mt10 eval [--jobs 2]      # every checkpoint on every task, told its instruction
    .venv/bin/python -m bench.mt10 report               # docs/results/mt10.md

The single-task side is the quality rows `metaworld_<task>` (10 demos, 9 trained on, 10 minutes each; train and
score them with bench.quality). The multi-task store holds exactly those 9 training demos of each task (90
episodes, each named by its task's instruction), so both sides learn from the same demonstrations; the
multi-task row trains for the ten rows' 100 minutes with the same recipe plus an instruction key. A task's
score is the mean of its best 5 of 10 checkpoints (20 episodes each), as the quality rows report it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

import numpy as np
import yaml

from bench.quality import MT10_STORE, RESULTS, ROWS, demo_store, evaluate, result_file
from robopolicy.datasets.convert.run import Episode, convert_source
from robopolicy.datasets.convert.stores import StoresSource
from robopolicy.datasets.sampler import split_episodes
from robopolicy.envs.metaworld_tasks import MT10_INSTRUCTIONS
from robopolicy.settings import CONFIG_DIR

log = logging.getLogger(__name__)
ROW = "metaworld_mt10"
TASKS = tuple(MT10_INSTRUCTIONS)
SINGLE_TASK = yaml.safe_load((CONFIG_DIR / "task" / "metaworld_pointcloud.yaml").read_text())["dataset"]


class TrainingEpisodes(StoresSource):
    """The episodes each task's single-task row trains on (its own store's split), from a directory of stores."""

    def episode_ids(self) -> list[str]:
        ids = []
        for name, store in self.stores.items():
            train, _ = split_episodes(store.n_episodes, SINGLE_TASK["val_ratio"], SINGLE_TASK["split_seed"])
            ids += [f"{name}/{index}" for index in np.flatnonzero(train)]
        return ids

    def read(self, episode_id: str) -> Episode:
        """The episode, named by its task's instruction (stores recorded before demos kept it name none)."""
        episode = super().read(episode_id)
        task = episode_id.rpartition("/")[0].removesuffix(".zarr")
        return dataclasses.replace(episode, task=episode.task or MT10_INSTRUCTIONS[task])


def build_store() -> dict:
    """Each task's demo store (generated as its quality row generates it, when missing), then their training
    episodes merged into MT10_STORE."""
    links = MT10_STORE.with_suffix("")
    links.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        (path,) = [option.partition("=")[2] for option in demo_store(ROWS[f"metaworld_{task}"])]
        link = links / f"{task}.zarr"
        if not link.exists():
            link.symlink_to(path)
    return convert_source(TrainingEpisodes(links), MT10_STORE)


def evaluate_tasks(jobs: int) -> None:
    """Every checkpoint of the multi-task run on each task, told that task's instruction (the env's own)."""
    for task in TASKS:
        result = evaluate(ROW, "", jobs, overrides=(f"env.task={task}",), as_name=task)
        log.info("%s: mean of the best 5 %s", task, result.get("mean_best_k"))


def load(path) -> dict | None:
    """A finished result (an evaluation still running has written its checkpoints only), else None."""
    result = json.loads(path.read_text()) if path.is_file() else None
    return result if result and "row" in result else None


def report() -> str:
    """docs/results/mt10.md: per task, the single-task row's score beside the multi-task policy's."""
    lines = ["# MetaWorld MT10: one policy told each task in words, against ten single-task policies", "",
             "Written by `python -m bench.mt10 report`; how each number was made is in the docstring of "
             "`bench/mt10.py`. Scores: mean success of the best 5 of 10 checkpoints, 20 episodes each (DP3's "
             "protocol); minutes: wall-clock training on 2 cores.", "",
             "| task | instruction | single-task: minutes, steps | single-task score | multi-task score |",
             "|---|---|---|---|---|"]
    single, multi = [], []
    for task in TASKS:
        alone, together = load(result_file(f"metaworld_{task}", "")), load(result_file(ROW, task))
        spent = f"{alone['minutes_spent']}, {alone['ledger'][-1]['step']}" if alone and alone["ledger"] else "-"
        scores = [r.get("mean_best_k") if r else None for r in (alone, together)]
        lines.append(f"| {task} | {MT10_INSTRUCTIONS[task]} | {spent} | {scores[0]} | {scores[1]} |")
        if None not in scores:
            single.append(scores[0])
            multi.append(scores[1])
    run = load(result_file(ROW, TASKS[0]))
    budget = f"{run['minutes_spent']} minutes, {run['ledger'][-1]['step']} steps" if run and run["ledger"] else "-"
    lines += ["", f"Multi-task training: {budget} (budget {ROWS[ROW].budget_min:g} minutes).", "",
              f"Mean over the {len(single)} tasks scored on both sides: single-task "
              f"{np.mean(single) if single else float('nan'):.3f}, multi-task "
              f"{np.mean(multi) if multi else float('nan'):.3f}.", ""]
    page = RESULTS.parent / "mt10.md"
    page.write_text("\n".join(lines))
    return str(page)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("store", "eval", "report"))
    parser.add_argument("--jobs", type=int, default=1, help="eval: checkpoints scored at once (one thread each)")
    args = parser.parse_args()
    if args.action == "store":
        print(json.dumps(build_store(), indent=1))
    elif args.action == "eval":
        evaluate_tasks(args.jobs)
    else:
        print(report())


if __name__ == "__main__":
    main()
