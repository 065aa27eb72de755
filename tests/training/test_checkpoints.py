"""Checkpoints on a tiny synthetic store (a 4-step epoch): a run killed with SIGKILL and resumed equals an
uninterrupted one, DataLoader workers included; the top-k rule keeps exactly the k best checkpoints and `last`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from robopolicy.datasets.store import EpisodeStore
from robopolicy.training.run import train
from tests.conftest import synthetic_episode
from tests.tiny_runs import TWO_STEP_UNET

REPO = Path(__file__).resolve().parents[2]
# 3 training episodes of 20 steps give 3 x 13 = 39 windows: 4 steps of 8 per epoch
EPISODES, LENGTH = 4, 20
TIMING = ("samples_per_s", "data_wait_share")  # logged values that measure the machine, not the run


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "demos.zarr"
    store = EpisodeStore.create(path, attrs={"fps": 10})
    for index in range(EPISODES):
        store.append_episode(synthetic_episode(index, LENGTH, image=False))
    return path


def overrides(store_path: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"data={store_path}", *TWO_STEP_UNET, "task.dataset.val_ratio=0.25", "training.log_every=1",
            "training.threads=1", f"run_dir={run_dir}", *extra]


def logged(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


# The run of `robopolicy train` that is killed: it stops at the start of optimizer step PAUSE_AT + 1 (steps
# 1..PAUSE_AT done, their batches and the next ones prefetched by the workers), says so, and waits to be killed.
KILLED_RUN = """
import sys, threading
from robopolicy.training import trainer
from robopolicy.training.run import train

pause_at, real_step = int(sys.argv[1]), trainer.Trainer.train_step

def train_step(self, sampler, batches):
    if self.step == pause_at:
        print("paused", flush=True)
        threading.Event().wait()
    return real_step(self, sampler, batches)

trainer.Trainer.train_step = train_step
train(sys.argv[2:])
"""


def run_and_kill(args: list[str], pause_at: int) -> None:
    """Run training in a new process group, SIGKILL the group (trainer and DataLoader workers) once it pauses."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(pause_at), *args], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    said = []
    try:
        for line in child.stdout:  # until it pauses, or ends without pausing (end of its output)
            said.append(line.strip())
            if said[-1] == "paused":
                break
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    assert said and said[-1] == "paused", f"the run ended (exit {child.returncode}) before step {pause_at}: {said}"


@pytest.mark.slow
def test_a_run_killed_after_an_epoch_boundary_resumes_exactly_with_workers(store_path, tmp_path):
    common = ["training.max_steps=11", "training.checkpoint_every=3", "training.val_every=3", "training.num_workers=2"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(overrides(store_path, whole, *common))
    run_and_kill(overrides(store_path, split, *common), pause_at=7)
    checkpoints = split / "checkpoints"
    assert (checkpoints / "last").resolve().name == "step_00000006"  # past the boundary at step 4, killed in step 8
    assert max(line["step"] for line in logged(split)) == 7
    train(overrides(store_path, split, *common, "resume=true"))
    expected, got = logged(whole), logged(split)
    epoch = {line["step"]: line["epoch"] for line in expected if "epoch" in line}
    # the checkpoint (step 6) is past the first boundary and the resumed run crosses the next (after step 8)
    assert (epoch[4], epoch[6], epoch[8], epoch[11]) == (0, 1, 1, 2), epoch
    assert got == expected, "the loss log of the resumed run differs from the uninterrupted run's"
    for file in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(whole / "checkpoints" / "last" / file)), load_file(str(checkpoints / "last" / file))
        assert a.keys() == b.keys()
        differ = [key for key in a if not torch.equal(a[key], b[key])]
        assert not differ, f"{file}: {len(differ)} tensors differ after the resume, e.g. {differ[:3]}"


def ranked(run_dir: Path, monitor: str) -> dict[str, float]:
    """The monitored value of every checkpoint the run wrote, by checkpoint name (from the log)."""
    checkpoints = [line for line in logged(run_dir) if monitor in line]
    return {f"step_{line['step']:08d}": line[monitor] for line in checkpoints}


# over these 7 steps val_loss falls and action_error rises: val_loss/min keeps the last two (last among them),
# action_error/min and val_loss/max keep steps 1 and 2 and, outside the top-k, last
@pytest.mark.parametrize(("monitor", "mode"), [("val_loss", "min"), ("action_error", "min"), ("val_loss", "max")])
def test_top_k_keeps_exactly_the_k_best_checkpoints_and_last(store_path, tmp_path, monitor, mode):
    run = tmp_path / "run"
    train(overrides(store_path, run, "training.max_steps=7", "training.checkpoint_every=1", "training.val_every=1",
                    "training.top_k=2", f"training.monitor={monitor}", f"training.monitor_mode={mode}"))
    values = ranked(run, monitor)
    assert len(values) == 7 and len(set(values.values())) == 7, values  # seven checkpoints, no ties
    best = sorted(values, key=values.get, reverse=mode == "max")[:2]
    expected = {*best, "step_00000007"}
    kept = {p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_")}
    assert kept == expected, f"kept {sorted(kept)}, expected the best two {best} and last ({values})"
    index = json.loads((run / "checkpoints" / "index.json").read_text())
    assert {entry["name"] for entry in index} == expected
    assert (run / "checkpoints" / "last").resolve().name == "step_00000007"
