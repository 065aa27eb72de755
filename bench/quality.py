"""Policy quality on this CPU: each row trains a recipe within a wall-clock budget and scores its checkpoints
by the anchor paper's protocol, beside the anchor's published numbers.

    .venv/bin/python -m bench.quality train ROW [--tag T] [--budget-min M] [--threads 2] [OVERRIDE ...]
    .venv/bin/python -m bench.quality eval ROW [--tag T] [--jobs 2] [--only STEP,...] [--as NAME EVAL_OVERRIDE ...]
    .venv/bin/python -m bench.quality report

`train` runs `robopolicy train` into runs/quality/ROW[-T] and keeps every checkpoint (robosuite rows first
generate their 100 scripted demos into runs/quality/data/; a student row runs `robopolicy distill` from its
teacher row's checkpoint and is compared with that checkpoint's score); run again, it resumes with what is left
of the budget (the minutes spent are kept in budget.json there). `eval` scores every checkpoint not yet scored
with the row's sampler (Diffusion Policy's, DDPM 100 steps; a student's own one step) on the anchor's seeds
(Push-T: 50 from 100000, 300 steps, best clip(coverage / 0.95) per episode; robosuite: success on 50),
reported as the max over checkpoints and the mean of the last `last_k`, as Diffusion Policy reports, and writes
docs/results/quality/ROW[-T].json; with eval overrides (e.g. sampler=dpmsolver++ num_inference_steps=10) and
`--as NAME` it writes ROW[-T]-NAME.json instead. `--jobs N` scores N checkpoints at once, one thread each.
`report` writes docs/results/quality.md and quality_curves.png.
Threads are set, not inherited: a row's budget means 2 cores with nothing else running. The ledger also keeps the
CPU minutes the training process got, so a run that shared the machine (a recipe pilot at one thread beside
another) shows it. A row whose recipe fixes its steps (training.max_steps = the steps its budget reaches alone,
as the MetaWorld rows do) can run on a shared CPU with `--wall-factor F`: it may then take F times the budget in
wall minutes to reach those steps, and the ledger records F.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from robopolicy.envs.metaworld_tasks import DIFFICULTY

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "quality"
RESULTS = ROOT / "docs" / "results" / "quality"
ROBOPOLICY = [sys.executable, "-m", "robopolicy.cli"]
FINDINGS = "<!-- written by hand below this line; `report` keeps it -->"


@dataclass(frozen=True)
class Row:
    """A task, observations, recipe and budget, how it is scored, and the anchor it is compared with."""

    task: str
    train: tuple[str, ...]
    budget_min: float
    anchor: dict
    eval: tuple[str, ...] = ("n_episodes=50", "n_envs=10", "n_videos=0")  # results do not depend on n_envs
    last_k: int = 10  # the score's mean is over the last k checkpoints (Diffusion Policy's 10)
    tail: float = 0.1  # the share of the budget, at its end, that the last k checkpoints are spread over
    notes: str = ""
    demos: tuple[str, ...] = ()  # `robopolicy demos generate` options of the row's store (none: the task's data)
    teacher: str = ""  # a student row: the teacher's checkpoint, RUN/checkpoints/STEP under runs/quality
    best_k: int = 0  # when set, the score is also the mean of the best k checkpoints (DP3's mean of its best 5)
    group: str = ""  # rows reported together with one mean (MetaWorld's difficulty groups)
    page: str = "quality"  # the results page that reports the row (bench/mt10.py reports its own)


DP_PUSHT = ("training.num_workers=0", "training.val_every=250", "training.val_batches=8", "training.top_k=1000")
# Diffusion Policy samples its policies with DDPM, 100 steps. The sampler moves the score: the default row's
# step-2,000 checkpoint scored 0.771 with DDIM 10 steps, 0.817 with DDPM 10 and 0.877 with DDPM 100 (same 50 seeds)
DP_EVAL = ("n_episodes=50", "n_envs=10", "n_videos=0", "sampler=ddpm", "num_inference_steps=100")
ROWS = {
    "pusht_keypoint": Row(
        task="pusht_keypoint",
        # 2,200 steps planned for 60 minutes on 2 cores of the AVX2 machine of 2026-11-30; at 1.73 s a step the
        # budget ended at step 2,087, with the cosine schedule's lr at 1% of its peak. The AVX-512 EPYC runs 1.13
        # steps/s: its run (-avx512) passed training.max_steps=4200 and ended at step 4,053
        train=("task=pusht_keypoint", "policy=diffusion_unet", "training.batch_size=256", "training.max_steps=2200",
               "training.checkpoint_every=250", *DP_PUSHT),
        budget_min=60.0, eval=DP_EVAL,
        anchor={"paper": "Diffusion Policy (CNN, state)", "max": 0.95, "mean": 0.91},
        notes="Diffusion Policy's demos (90 training episodes, its split), U-Net 128/256/512"),
    "pusht_image": Row(
        task="pusht_image",
        train=("task=pusht_image", "policy=diffusion_unet", "training.batch_size=64", "training.max_steps=20000",
               "training.checkpoint_every=1000", *DP_PUSHT),
        budget_min=180.0, eval=DP_EVAL,
        tail=0.16,  # Diffusion Policy's image runs: its last 10 checkpoints are 500 of 3,050 epochs
        anchor={"paper": "Diffusion Policy (CNN, image)", "mean": 0.84},
        notes="96x96 images, ResNet-18 encoder"),
    "pusht_keypoint_consistency": Row(
        task="pusht_keypoint",
        # the one-step student of the best Push-T keypoint checkpoint of the run it names; its own sampler: one
        # network pass. The teacher's DDIM ODE in 20 steps per distillation step; batch and split are the teacher's.
        # A distillation step takes 2.9 s at 2 threads on the AVX2 EPYC (teacher, target and student passes): 600
        # steps in 30 minutes; 0.86 steps/s on the AVX-512 EPYC, whose run passed training.max_steps=1500 (reached
        # in 29.2 minutes). The untagged result distilled pusht_keypoint-default step 2,000 (0.877, DDPM 100);
        # the -avx512 one the best of pusht_keypoint-avx512's tail checkpoints (step 3,948, 0.864; its step 3,000,
        # scored later, has 0.866)
        train=("training.batch_size=256", "training.max_steps=600", "training.checkpoint_every=100", *DP_PUSHT),
        budget_min=30.0, eval=("n_episodes=50", "n_envs=10", "n_videos=0", "num_inference_steps=1"),
        teacher="pusht_keypoint-avx512/checkpoints/step_00003948",
        anchor={},  # the teacher's score is its anchor (teacher_anchor)
        notes="distilled with `robopolicy distill` from the teacher's EMA weights"),
}
# robosuite from scripted demos (100 per task), the U-Net at 64/128/256 that trained Lift on this CPU
# (docs/results/simulation.md), sampled as Diffusion Policy samples (DDPM 100). Low-dim trains 4.0-4.8 steps/s at
# 2 threads on the machine of 2026-11-30 (Lift 4.0, Can 4.3, Square 4.8: its 5,000 steps ended at 17.3 minutes,
# without the dense tail); point clouds 2.0 (Lift: 7,000 steps in 58.2 minutes, with the encoder's MaxOfLinear
# backward; 1.38 before it) and 3.8-3.9 on the AVX-512 EPYC (Can: 13,676 of a planned 14,000 in 60 minutes), 2.3 with
# 1,024 points (the -cloud1024 run, made at commit a824941 and reverted: training.max_steps=8300); the image plan
# comes from an older Lift run (about 2 steps/s at one thread) and is to be set from the row's first run.
ROBOSUITE_RECIPE = ("policy=diffusion_unet", "policy.settings.backbone.unet.down_dims=[64,128,256]",
                    "training.batch_size=64", "training.num_workers=0", "training.top_k=1000")
ROBOSUITE_OBS = {  # obs: (budget minutes, recipe)
    "lowdim": (20.0, ("training.max_steps=5000", "training.checkpoint_every=1000", "training.val_every=1000")),
    "image": (90.0, ("training.max_steps=10000", "training.checkpoint_every=2000", "training.val_every=2000",
                     "encoder.image.base_width=16", "encoder.image.crop_shape=[76,76]")),
    "pointcloud": (60.0, ("training.max_steps=7000", "training.checkpoint_every=2000", "training.val_every=2000")),
}
for env_name in ("lift", "can", "square"):
    for obs, (minutes, recipe) in ROBOSUITE_OBS.items():
        ROWS[f"{env_name}_{obs}"] = Row(
            task=f"{env_name}_{obs}", train=(f"task={env_name}_{obs}", *ROBOSUITE_RECIPE, *recipe),
            budget_min=minutes, eval=DP_EVAL,
            anchor={"issue target": 0.95}, demos=(f"env={env_name}", f"obs={obs}", "n=100"),
            notes="scripted demos; Diffusion Policy's robomimic scores come from human demos and are not comparable")


# MetaWorld under DP3's protocol: 10 scripted demos per task (metaworld's own policies), one camera (corner2 at
# DP3's pose), DP3's crop, 512 points of xyz, horizon 4 / 2 observations / 3 actions, DDIM 10 at evaluation, 20
# episodes of 200 steps per checkpoint; the task config holds 1 of the 10 demos out, as DP3's code does. DP3
# evaluates every 200 of its 3,000 epochs and reports the mean of its best 5 evaluations, averaged over training
# seeds 0-2; here the budget's 10 checkpoints are spread evenly over the run (tail=1), the score is the mean of
# their best 5, and more seeds are tagged runs (`--tag seed1 seed=1`). Anchors: DP3's group means, Table I of
# the paper's later arXiv version. The 72.7 (medium) and 38.0 (hard) are the group means leaderboards list for
# DP3 (e.g. wizwand's page of arXiv 2403.03954, beside easy 90.9), from another version of the paper: both are shown.
# Training runs 2.3 steps/s at 2 threads on the AVX2 EPYC (reach-v3), so 1,350 steps fill the 10 minutes per task;
# on the AVX-512 EPYC it runs 4.4-4.7, and the runs there pass training.max_steps=2700.
DP3_GROUP_MEANS = {"easy": 0.909, "medium": 0.616, "hard": 0.317, "very_hard": 0.490}
DP3_GROUP_MEANS_LISTED = {"easy": 0.909, "medium": 0.727, "hard": 0.380}
METAWORLD_RECIPE = ("task=metaworld_pointcloud", "policy=diffusion_unet", "policy.settings.horizon=4",
                    "policy.settings.n_action_steps=3", "policy.settings.backbone.unet.down_dims=[64,128,256]",
                    "training.batch_size=64", "training.num_workers=0", "training.top_k=1000",
                    "training.max_steps=1350")
for group, group_tasks in DIFFICULTY.items():
    for metaworld_task in group_tasks:
        ROWS[f"metaworld_{metaworld_task}"] = Row(
            task=f"metaworld_{metaworld_task}", train=(*METAWORLD_RECIPE, f"task.env.task={metaworld_task}"),
            budget_min=10.0, tail=1.0, best_k=5, group=group,
            eval=("n_episodes=20", "n_envs=10", "n_videos=0", "sampler=ddim", "num_inference_steps=10"),
            anchor={f"paper DP3, {group} mean": DP3_GROUP_MEANS[group],
                    **({"as listed": DP3_GROUP_MEANS_LISTED[group]} if group in DP3_GROUP_MEANS_LISTED else {})},
            demos=("env=metaworld", f"task={metaworld_task}", "obs=pointcloud", "n=10"),
            notes="metaworld's scripted demos, DP3's camera, crop and points")


# MetaWorld MT10 as one policy told each task in words: the ten tasks' 9 training demos each (the episodes their
# single-task rows train on), merged by bench/mt10.py, the single-task recipe plus an instruction key (48 bytes:
# MT10's longest instruction is 42, and the policy is told only those), and the ten single-task rows' compute
# (10 x 10 minutes). It trains 3.7-3.8 steps/s on the AVX-512 EPYC (the single-task rows 4.4-4.7: the text encoder
# and the larger store cost the rest), so training.max_steps=22333 fills the 100 minutes there. Scored per task by
# bench/mt10.py (`eval ... --as TASK env.task=TASK`).
MT10_STORE = RUNS / "data" / "metaworld_mt10.zarr"
ROWS["metaworld_mt10"] = Row(
    task="metaworld_mt10",
    train=(*METAWORLD_RECIPE, "task.env.task=reach-v3", f"task.dataset.path={MT10_STORE}", "task.dataset.val_ratio=0",
           "task.shape_meta.obs.instruction={shape: [48], type: text}"),
    budget_min=100.0, tail=1.0, best_k=5, page="mt10",
    eval=("n_episodes=20", "n_envs=10", "n_videos=0", "sampler=ddim", "num_inference_steps=10"),
    anchor={"ten single-task rows (10 min each)": "docs/results/mt10.md"},
    notes="one policy for MT10's ten tasks, told each task's instruction")


def run_dir(name: str, tag: str) -> Path:
    return RUNS / (f"{name}-{tag}" if tag else name)


def result_file(name: str, tag: str) -> Path:
    return RESULTS / f"{run_dir(name, tag).name}.json"


def spent_minutes(directory: Path) -> list[dict]:
    """The budget ledger: one entry per training invocation (minutes, step reached)."""
    ledger = directory / "budget.json"
    return json.loads(ledger.read_text()) if ledger.is_file() else []


def last_step(directory: Path) -> int:
    log = directory / "train_log.jsonl"
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return max(steps, default=0)


def setting(recipe: list[str] | tuple[str, ...], key: str) -> str | None:
    """The value the last `key=value` item of a recipe gives `key` (later overrides win), or None."""
    values = [item.split("=", 1)[1] for item in recipe if item.startswith(f"{key}=")]
    return values[-1] if values else None


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("_")[1])


def by_step(result: dict) -> list[dict]:
    """A result's scored checkpoints in training order."""
    return sorted(result["checkpoints"].values(), key=lambda c: c["step"])


def planned_steps(row: Row, overrides: list[str]) -> int:
    """training.max_steps of the row's recipe with the variant's overrides (the cosine schedule's length)."""
    steps = setting([*row.train, *overrides], "training.max_steps")
    if steps is None:
        raise SystemExit("a row's recipe must set training.max_steps: the lr schedule should end with the budget")
    return int(steps)


def train(name: str, tag: str, budget_min: float | None, threads: int, overrides: list[str],
          at_most_min: float | None = None, ranks: int = 1, wall_factor: float = 1.0) -> None:
    """Train (or resume) a row within what is left of its budget, this time for at most `at_most_min` minutes (a
    run spread over sessions), as `ranks` torchrun processes sharing `threads`. The last `row.tail` of the budget
    runs with a checkpoint every planned_steps * tail / last_k steps, so the score's mean is over the last k
    checkpoints of the run's end, as Diffusion Policy's is (its last 10, saved every 50 of 5,000 epochs for
    low-dim Push-T: the last 10% of training)."""
    if threads % ranks:
        raise SystemExit(f"--threads {threads} must split evenly over --ranks {ranks}")
    row, directory = ROWS[name], run_dir(name, tag)
    budget = budget_min or row.budget_min
    wall = budget * wall_factor  # a run whose steps are fixed by max_steps may take longer on a shared CPU
    data = demo_store(row)
    planned = planned_steps(row, overrides)
    tail_every = max(1, round(planned * row.tail / row.last_k))
    session_left = at_most_min if at_most_min else float("inf")
    while last_step(directory) < planned:  # a run that ends its schedule early leaves the rest of its budget unused
        spent = sum(entry["minutes"] for entry in spent_minutes(directory))
        head_left = wall * (1 - row.tail) - spent
        in_tail = head_left <= 0.5
        now = min(wall - spent if in_tail else head_left, session_left)
        if now <= 0.5:
            break
        tail = [f"training.checkpoint_every={tail_every}", f"training.val_every={tail_every}"] if in_tail else []
        session_left -= train_once(directory, verb(row), [*row.train, *data, *overrides, *tail], now, threads, ranks, {
            "budget_min": budget, "wall_factor": wall_factor, "overrides": overrides,
            "phase": "tail" if in_tail else "head"})
    print(json.dumps({"row": name, "tag": tag, "entries": spent_minutes(directory)}))


def child_env(threads: int) -> dict[str, str]:
    """The environment of a robopolicy subprocess: its threads set, not inherited, and MuJoCo rendering on EGL."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def demo_store(row: Row) -> list[str]:
    """Generate (or complete) the row's demo store with the scripted expert; the override that trains on it. Demo
    collection is not part of the training budget."""
    if not row.demos:
        return []
    store = RUNS / "data" / f"{row.task}.zarr"
    env = child_env(1)
    subprocess.run([*ROBOPOLICY, "demos", "generate", *row.demos, f"out={store}", "resume=true"], cwd=ROOT,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return [f"task.dataset.path={store}"]


def verb(row: Row) -> list[str]:
    """The robopolicy command that trains the row: `train`, or `distill TEACHER` for a student row (whose teacher's
    run must have been trained first)."""
    if not row.teacher:
        return ["train"]
    teacher = RUNS / row.teacher
    if not teacher.is_dir():
        raise SystemExit(f"{teacher} is missing: train the teacher's row ({row.teacher.split('/')[0]}) first")
    return ["distill", str(teacher)]


def train_once(directory: Path, command_verb: list[str], recipe: list[str], minutes: float, threads: int, ranks: int,
               entry: dict) -> float:
    """One `robopolicy train` (or `distill`) invocation, resuming when the run has checkpoints, for at most
    `minutes`; appends its ledger entry (minutes, step reached, CPU minutes, command) to budget.json and returns the
    minutes."""
    resume = ["resume=true"] if (directory / "checkpoints" / "last").exists() else []
    launcher = ROBOPOLICY if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                              f"--nproc_per_node={ranks}", "-m", "robopolicy.cli"]
    per_rank = threads // ranks
    command = [*launcher, *command_verb, *recipe, f"run_dir={directory}", f"training.threads={per_rank}",
               f"training.time_budget_min={minutes:.2f}", *resume]
    directory.mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.monotonic(), child_cpu_seconds()
    env = child_env(per_rank)
    with (directory / "train.stderr.log").open("a") as stderr:
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=stderr)
    took = (time.monotonic() - start) / 60
    ledger = spent_minutes(directory)
    ledger.append({"minutes": round(took, 2), "step": last_step(directory),
                   "cpu_minutes": round((child_cpu_seconds() - cpu_start) / 60, 2), **entry, "threads": threads,
                   "ranks": ranks, "cpu": cpu_name(), "command": " ".join(["python", *command[1:]])})
    (directory / "budget.json").write_text(json.dumps(ledger, indent=1) + "\n")
    return took


def cpu_name() -> str:
    """The CPU's model and its widest vector unit. A budget in wall minutes holds on a named CPU only: the same
    point-cloud step ran 2.0 steps/s on an AVX2 EPYC and 3.9 on an AVX-512 one."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    fields = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in lines if ":" in line)}
    flags = fields.get("flags", "").split()
    vector = "AVX-512" if any(f.startswith("avx512") for f in flags) else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{fields.get('model name', 'unknown CPU')}, {vector}"


def tail_start(ledger: list[dict]) -> float:
    """The step where the run's dense-checkpoint tail began (inf for a run trained without one)."""
    before = 0
    for entry in ledger:
        if entry.get("phase") == "tail":
            return before
        before = entry["step"]
    return float("inf")


def child_cpu_seconds() -> float:
    """User + system CPU seconds of the finished child processes (the training run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def minutes_at(step: int, ledger: list[dict]) -> float:
    """Training minutes when `step` was reached, interpolated within the invocation that reached it."""
    before_minutes, before_step = 0.0, 0
    for entry in ledger:
        if step <= entry["step"]:
            share = (step - before_step) / max(1, entry["step"] - before_step)
            return round(before_minutes + share * entry["minutes"], 1)
        before_minutes, before_step = before_minutes + entry["minutes"], entry["step"]
    return round(before_minutes, 1)


def score_checkpoint(checkpoint: Path, eval_overrides: tuple[str, ...], as_name: str) -> dict:
    """`robopolicy eval` of one checkpoint with one thread (its files in the run's eval[-as_name]/); its summary."""
    env = child_env(1)
    out = checkpoint.parent.parent / "-".join(t for t in ("eval", as_name) if t) / checkpoint.name
    done = subprocess.run([*ROBOPOLICY, "eval", str(checkpoint), *eval_overrides, "threads=1", f"out={out}"],
                          cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def evaluate(name: str, tag: str, jobs: int = 1, only: tuple[int, ...] = (), overrides: tuple[str, ...] = (),
             as_name: str = "") -> dict:
    """Score every checkpoint of the row's run not yet scored (those of `only`, when given), `jobs` at a time, with
    the row's eval options plus `overrides`; write and return the row's result (ROW[-T][-as_name].json)."""
    if overrides and not as_name:
        raise SystemExit("eval overrides change what is measured: name the result with --as NAME")
    row, directory = ROWS[name], run_dir(name, tag)
    result_tag = "-".join(t for t in (tag, as_name) if t)
    out = result_file(name, result_tag)
    result = json.loads(out.read_text()) if out.is_file() else {"checkpoints": {}}
    ledger = spent_minutes(directory)
    eval_options = (*row.eval, *overrides)
    pending = [c for c in sorted((directory / "checkpoints").glob("step_*"), key=checkpoint_step)
               if c.name not in result["checkpoints"] and (not only or checkpoint_step(c) in only)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        summaries = pool.map(lambda c: score_checkpoint(c, eval_options, as_name), pending)
        for checkpoint, summary in zip(pending, summaries):
            step = checkpoint_step(checkpoint)
            result["checkpoints"][checkpoint.name] = {
                "step": step, "minutes": minutes_at(step, ledger), "mean_score": round(summary["mean_score"], 3),
                "mean_score_ci95": [round(x, 3) for x in summary["mean_score_ci95"]],
                "success_rate": round(summary["success_rate"], 3)}
            RESULTS.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")
    scored = by_step(result)
    scores = [c["mean_score"] for c in scored]
    tail_scores = [c["mean_score"] for c in scored if c["step"] >= tail_start(ledger)][-row.last_k:]
    result.update(row=name, tag=result_tag, task=row.task,
                  recipe=[*row.train, *(ledger[0]["overrides"] if ledger else [])], eval=list(eval_options),
                  anchor={**row.anchor, **teacher_anchor(row)}, notes=row.notes,
                  budget_min=ledger[-1]["budget_min"] if ledger else row.budget_min,
                  minutes_spent=round(sum(e["minutes"] for e in ledger), 1), ledger=ledger, last_k=row.last_k,
                  max=max(scores, default=None), last_k_scored=len(tail_scores),
                  mean_last_k=round(sum(tail_scores) / len(tail_scores), 3) if tail_scores else None)
    if row.best_k:
        best = sorted(scores)[-row.best_k:]
        result.update(best_k=row.best_k, best_k_scored=len(best),
                      mean_best_k=round(sum(best) / len(best), 3) if best else None)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def teacher_anchor(row: Row) -> dict:
    """A student row's anchor: its teacher checkpoint's score, from the teacher row's result (empty until scored)."""
    if not row.teacher:
        return {}
    run, _, step = row.teacher.split("/")
    teacher_result = RESULTS / f"{run}.json"
    scored = json.loads(teacher_result.read_text())["checkpoints"] if teacher_result.is_file() else {}
    if step not in scored:
        return {}
    return {f"teacher {run} step {scored[step]['step']}": scored[step]["mean_score"]}


def batch_size(result: dict) -> int:
    """The training batch size of a result's recipe (its last batch_size override)."""
    return int(setting(result["recipe"], "training.batch_size") or 64)  # 64: train.yaml's default


def tail_mean(result: dict) -> str:
    """The mean over the last k checkpoints as the table shows it: with how many were scored, or why there is none."""
    if result.get("mean_last_k") is None:
        return "- (no dense tail)"
    return f"{result['mean_last_k']} ({result['last_k_scored']} of {result['last_k']})"


def result_name(result: dict) -> str:
    return f"{result['row']}{'-' + result['tag'] if result['tag'] else ''}"


def anchor_text(anchor: dict) -> str:
    """An anchor as the tables show it: `name value` pairs."""
    return ", ".join(f"{k} {v}" for k, v in anchor.items())


def table_line(r: dict) -> str:
    """One result as a line of quality.md's table: what was changed, how it ran, and its scores."""
    ledger = r["ledger"]
    change = " ".join(ledger[0]["overrides"]) if ledger and ledger[0]["overrides"] else "-"
    shown = ("n_envs=", "sampler=", "num_inference_steps=")  # the sampler has its column; n_envs changes nothing
    extra = [item for item in r.get("eval", []) if item not in ROWS[r["row"]].eval and not item.startswith(shown)]
    change += f" (eval {' '.join(extra)})" if extra else ""
    timed = [e for e in ledger if "cpu_minutes" in e]
    share = f"{sum(e['cpu_minutes'] for e in timed) / sum(e['minutes'] for e in timed):.1f}" if timed else "-"
    threads = ",".join(sorted({str(e["threads"]) for e in ledger})) or "-"
    cpus = ", ".join(sorted({e["cpu"].rpartition(", ")[2] for e in ledger if "cpu" in e})) or "-"
    points = by_step(r)
    last = f"{points[-1]['mean_score']} (step {points[-1]['step']})" if points else "-"
    family = "consistency" if ROWS[r["row"]].teacher else "-"
    sampler = f"{setting(r['eval'], 'sampler') or family} {setting(r['eval'], 'num_inference_steps') or ''}".strip()
    return (f"| {result_name(r)} | {r['task']} | {change} | {sampler} | {cpus} | {threads} | {share} | "
            f"{r['budget_min']:g} | {r['minutes_spent']} | {ledger[-1]['step'] if ledger else '-'} | {len(points)} | "
            f"{last} | {r['max']} | {tail_mean(r)} | {anchor_text(r['anchor'])} |")


def group_tables(results: list[dict]) -> list[str]:
    """quality.md's MetaWorld part: a line per task run (its best-k mean) and each group's mean over its tasks
    (the mean of a task's runs, i.e. its training seeds), beside the anchor."""
    if not results:
        return []
    lines = ["## MetaWorld, DP3's protocol", "",
             "| group | row | budget (min) | spent (min) | steps | checkpoints scored | best | mean of the best k "
             "| last |",
             "|---|---|---|---|---|---|---|---|---|"]
    per_task: dict[str, dict[str, list[float]]] = {}
    for r in sorted(results, key=lambda r: (list(DIFFICULTY).index(ROWS[r["row"]].group), result_name(r))):
        row, points = ROWS[r["row"]], by_step(r)
        lines.append(f"| {row.group} | {result_name(r)} | {r['budget_min']:g} | {r['minutes_spent']} | "
                     f"{r['ledger'][-1]['step'] if r['ledger'] else '-'} | {len(points)} | {r['max']} | "
                     f"{r.get('mean_best_k')} ({r.get('best_k_scored')} of {r.get('best_k')}) | "
                     f"{points[-1]['mean_score'] if points else '-'} |")
        if r.get("mean_best_k") is not None:
            per_task.setdefault(row.group, {}).setdefault(r["row"], []).append(r["mean_best_k"])
    lines += ["", "| group | tasks scored | mean of the tasks' best-k means | anchor |", "|---|---|---|---|"]
    for group, tasks in per_task.items():
        means = [sum(runs) / len(runs) for runs in tasks.values()]
        lines.append(f"| {group} | {len(tasks)} of {len(DIFFICULTY[group])} | {sum(means) / len(means):.3f} | "
                     f"{anchor_text(ROWS[next(iter(tasks))].anchor)} |")
    return [*lines, ""]


def report() -> None:
    """docs/results/quality.md (one line per row result) and quality_curves.png (score against training minutes and
    against samples seen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = [r for r in (json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json")))
                  if "row" in r and ROWS[r["row"]].page == "quality"]  # an evaluation still running has no row yet
    results = [r for r in everything if not ROWS[r["row"]].group]
    lines = ["# Policy quality on this 2-core CPU", "",
             "Written by `python -m bench.quality report` from `quality/*.json`; how each number was made is in the "
             "docstring of `bench/quality.py`. Minutes are wall-clock training minutes (evaluation not counted); "
             "`CPU` names the vector unit of the 2-core EPYC the run trained on (- where the run predates the "
             "column; the hand notes below name the machine), `threads` how many threads the run used and "
             "`CPU share` how much of the machine it got (2.0 = both cores; 1.0 = one core, e.g. a recipe pilot "
             "beside another run).", "",
             "| row | task | recipe change | sampler | CPU | threads | CPU share | budget (min) | spent (min) | steps "
             "| checkpoints | last | max | mean of the last k | anchor |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    figure, (by_minutes, by_samples) = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    markers = dict(zip(sorted({r["task"] for r in results}), "os^DvPX*<>" * 3))  # a marker per task
    for index, r in enumerate(results):
        lines.append(table_line(r))
        points = by_step(r)
        scores = [p["mean_score"] for p in points]
        style = {"marker": markers[r["task"]], "color": plt.cm.tab20(index % 20), "label": result_name(r)}
        by_minutes.plot([p["minutes"] for p in points], scores, **style)
        by_samples.plot([p["step"] * batch_size(r) / 1e6 for p in points], scores, **style)
    by_minutes.set_xlabel("training minutes (wall)")
    by_samples.set_xlabel("training samples seen (millions)")
    by_minutes.set_ylabel("mean score (50 seeds)")
    by_samples.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(RESULTS.parent / "quality_curves.png", dpi=120)
    lines += ["", "![score against training minutes and samples](quality_curves.png)", "",
              *group_tables([r for r in everything if ROWS[r["row"]].group])]
    page = RESULTS.parent / "quality.md"
    kept = page.read_text().partition(FINDINGS)[2] if page.is_file() else ""
    page.write_text("\n".join(lines) + "\n" + FINDINGS + (kept or "\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("train", "eval", "report"))
    parser.add_argument("row", nargs="?", choices=sorted(ROWS))
    parser.add_argument("--tag", default="", help="a variant of the row's recipe (its own run directory)")
    parser.add_argument("--budget-min", type=float, default=None, help="override the row's budget")
    parser.add_argument("--wall-factor", type=float, default=1.0,
                        help="allow this many times the budget in wall minutes, for a run whose training.max_steps "
                             "fixes its steps (the budget measured alone) on a CPU shared with other work")
    parser.add_argument("--threads", type=int, default=2, help="train: threads in all (split over the ranks)")
    parser.add_argument("--ranks", type=int, default=1, help="train: torchrun processes (DDP over gloo)")
    parser.add_argument("--at-most-min", type=float, default=None, help="train at most this long now (resume later)")
    parser.add_argument("--jobs", type=int, default=1, help="eval: checkpoints scored at once (one thread each)")
    parser.add_argument("--only", type=lambda text: tuple(int(x) for x in text.split(",")), default=(),
                        help="eval: only the checkpoints of these steps (comma-separated)")
    parser.add_argument("--as", dest="as_name", default="", help="eval: names the result when overrides are given")
    parser.add_argument("overrides", nargs="*", help="train: robopolicy train overrides for this variant; "
                        "eval: robopolicy eval overrides (with --as)")
    args = parser.parse_intermixed_args()
    if args.action == "report":
        report()
    elif args.action == "train":
        train(args.row, args.tag, args.budget_min, args.threads, args.overrides, args.at_most_min, args.ranks,
              args.wall_factor)
    else:
        print(json.dumps(evaluate(args.row, args.tag, args.jobs, args.only, tuple(args.overrides),
                                  args.as_name), indent=1))


if __name__ == "__main__":
    main()
