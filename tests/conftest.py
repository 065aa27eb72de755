"""Shared fixtures: the real Push-T store from ../shared (skipped when absent) and small stores."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import robopolicy.envs  # noqa: F401  (picks the off-screen GL backend before any test imports MuJoCo)
from robopolicy.datasets.store import EpisodeStore
from tests.needs import NEEDS, in_ci
from tests.tiny_runs import TWO_STEP_UNET

# Tests use tiny networks: one intra-op thread is as fast, deterministic, and does not stall when
# DataLoader workers or other processes share the two cores.
torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A `realtime` test asserts wall-clock timing, which a stall of a shared machine can break (CI once saw a
    3-second ROS run tick 15 times instead of ~57): it runs once more on failure (pytest-rerunfailures, which
    reports the rerun as R), so a real timing fault still fails, twice."""
    for item in items:
        if item.get_closest_marker("realtime"):
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=5))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `ros` or `sim` whose needs are missing skips here (and fails in CI, below)."""
    for marker, (modules, how) in NEEDS.items():
        missing = [m for m in modules if item.get_closest_marker(marker) and importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f"marked {marker!r}, needs {missing}: {how}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI every skip is a failure (a missing ../shared, extra or ROS): CI has all of them, so a test that skips
    there hides a broken setup step."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        marked = [m for m in NEEDS if item.get_closest_marker(m)]
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid}{f' (marked {marked})' if marked else ''} skipped in CI "
                           f"({report.longrepr}); CI has everything a test needs, so it must run there")


PUSHT_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"


@pytest.fixture(scope="session")
def pusht_path() -> Path:
    """Diffusion Policy's Push-T demos; a fresh clone has no ../shared, so tests skip there."""
    if not (PUSHT_PATH / "meta" / "episode_ends").exists():
        pytest.skip(f"shared Push-T store not found at {PUSHT_PATH} (present in CI, absent in a fresh clone)")
    return PUSHT_PATH


@pytest.fixture(scope="session")
def pusht(pusht_path: Path) -> EpisodeStore:
    return EpisodeStore.open(pusht_path)


@pytest.fixture(scope="session")
def pusht_memory(pusht: EpisodeStore) -> EpisodeStore:
    """The image, state and action keys loaded into memory once per test session."""
    return pusht.load(["img", "state", "action"])


def synthetic_episode(index: int, length: int, image: bool = True) -> dict[str, np.ndarray]:
    """A deterministic episode whose values encode (episode, step) so reads can be checked."""
    steps = np.arange(length, dtype=np.float32)
    data = {
        "action": np.stack([np.full(length, index, np.float32), steps], axis=1),
        "state": np.stack([steps * 2.0, steps + 1000.0 * index, -steps], axis=1).astype(np.float32),
    }
    if image:
        frames = np.zeros((length, 16, 16, 3), np.uint8)
        frames[..., 0] = index % 256
        frames[..., 1] = (steps % 256).astype(np.uint8)[:, None, None]
        data["img"] = frames
    return data


TINY_LIFT = ["task=lift_lowdim", *TWO_STEP_UNET, "task.dataset.val_ratio=0.5"]


@pytest.fixture(scope="session")
def lift_artifact(tmp_path_factory):
    """A tiny Lift low-dim diffusion policy exported as an artifact (2 training steps: for plumbing, not skill)."""
    from robopolicy.cli import main
    from robopolicy.runtime.artifact import load_artifact
    from robopolicy.training.run import train

    root = tmp_path_factory.mktemp("lift_artifact")
    assert main(["demos", "generate", "env=lift", "obs=lowdim", "n=2", f"out={root / 'demos.zarr'}"]) == 0
    train([*TINY_LIFT, f"task.dataset.path={root / 'demos.zarr'}", f"run_dir={root / 'run'}"])
    assert main(["export", str(root / "run" / "checkpoints" / "last"), f"out={root / 'artifact'}"]) == 0
    return load_artifact(root / "artifact")


@pytest.fixture(scope="session")
def state_artifact(tmp_path_factory) -> Path:
    """An ONNX artifact of a tiny diffusion policy trained 2 steps on a synthetic low-dim store (no simulator, no
    shared data): for the server and the runtime's plumbing, not skill."""
    from robopolicy.cli import main
    from robopolicy.training.run import train

    root = tmp_path_factory.mktemp("state_artifact")
    store = EpisodeStore.create(root / "demos.zarr", attrs={"fps": 10})
    for index in range(6):
        store.append_episode(synthetic_episode(index, 40, image=False))
    train([f"data={root / 'demos.zarr'}", *TWO_STEP_UNET, f"run_dir={root / 'run'}"])
    assert main(["export", str(root / "run" / "checkpoints" / "last"), f"out={root / 'artifact'}"]) == 0
    return root / "artifact"
