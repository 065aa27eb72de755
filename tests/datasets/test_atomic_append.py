"""Appends are atomic: a killed writer never costs an earlier episode, readers never see half of one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robopolicy.datasets.inspect import validate
from robopolicy.datasets.store import EpisodeStore
from tests.conftest import synthetic_episode

REPO = Path(__file__).resolve().parents[2]
EPISODE_LENGTH = 120
WRITER = """
import sys
import numpy as np
import pytest
from robopolicy.datasets.store import EpisodeStore
from tests.conftest import synthetic_episode
store = EpisodeStore.open(sys.argv[1], mode="a")
while True:
    index = store.n_episodes
    episode = synthetic_episode(index, {length})
    episode["img"] = np.repeat(np.repeat(episode["img"], 6, axis=1), 6, axis=2)  # 96x96 frames: slow appends
    store.append_episode(episode)
    print(index, flush=True)
""".format(length=EPISODE_LENGTH)


def _check_every_episode(path: Path) -> EpisodeStore:
    """Open the store and compare every committed episode with what the writer wrote."""
    store = EpisodeStore.open(path)
    assert store.episode_lengths.tolist() == [EPISODE_LENGTH] * store.n_episodes
    for index in range(store.n_episodes):
        expected = synthetic_episode(index, EPISODE_LENGTH)
        got = store.episode(index, ["action", "state", "img"])
        np.testing.assert_array_equal(got["action"], expected["action"])
        np.testing.assert_array_equal(got["state"], expected["state"])
        np.testing.assert_array_equal(got["img"][:, ::6, ::6], expected["img"])
    return store


def test_killed_writer_leaves_earlier_episodes_intact(tmp_path):
    path = tmp_path / "crash.zarr"
    EpisodeStore.create(path)
    interrupted_rounds = 0
    reads_during_writes = 0
    for kill_after in (0.01, 0.05, 0.09, 0.13, 0.17, 0.21):
        committed_before = EpisodeStore.open(path).n_episodes
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        printed = [int(writer.stdout.readline())]  # at least one append done by this writer
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline:
            _check_every_episode(path)  # a concurrent reader sees only whole episodes
            reads_during_writes += 1
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate()
        printed += [int(line) for line in out.split()]
        store = _check_every_episode(path)
        assert store.n_episodes >= printed[-1] + 1 >= committed_before + 1
        interrupted_rounds += store.has_interrupted_append
        assert all(f.level != "error" for f in validate(store))
    assert reads_during_writes > 0
    assert interrupted_rounds > 0, "no kill landed inside an append; the test did not exercise a crash"
    recovered = EpisodeStore.open(path, mode="a")
    assert not recovered.has_interrupted_append
    n = recovered.n_episodes
    recovered.append_episode(synthetic_episode(n, EPISODE_LENGTH) | {
        "img": np.repeat(np.repeat(synthetic_episode(n, EPISODE_LENGTH)["img"], 6, axis=1), 6, axis=2)})
    final = _check_every_episode(path)
    assert final.n_episodes == n + 1 and not final.has_interrupted_append
    assert all(final[k].shape[0] == final.n_steps for k in final.keys)


CRASHING_WRITER = """
import os
import sys

import numpy as np
import pytest
import zarr
from zarr.core.attributes import Attributes

from robopolicy.datasets.store import EpisodeStore
from tests.conftest import synthetic_episode

crash_at, calls = int(sys.argv[2]), [0]


def crash_before(method):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == crash_at:
            os._exit(17)
        return method(*args, **kwargs)
    return wrapper


for cls, name in [(zarr.Array, "resize"), (zarr.Array, "__setitem__"), (Attributes, "__setitem__"),
                  (Attributes, "__delitem__")]:
    setattr(cls, name, crash_before(getattr(cls, name)))
store = EpisodeStore.open(sys.argv[1], mode="a")
n = store.n_episodes
store.append_episode(synthetic_episode(n, 6 + n), timestamps={"img": np.arange(6 + n) / 10.0})
"""


def _episode_with_times(index: int) -> tuple[dict, dict]:
    return synthetic_episode(index, 6 + index), {"img": np.arange(6 + index) / 10.0}


@pytest.mark.slow
@pytest.mark.parametrize("existing", [0, 2])
def test_crash_at_every_write_of_an_append(tmp_path, existing):
    """os._exit before each zarr write of one append: readers and the next writer cope at every point."""
    crash_points = 0
    for crash_at in range(1, 40):
        path = tmp_path / f"store{crash_at}.zarr"
        with EpisodeStore.create(path) as store:  # closed, so that the crashing writer may take the lock
            for index in range(existing):
                store.append_episode(*_episode_with_times(index))
        result = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(path), str(crash_at)], cwd=REPO,
                                capture_output=True, text=True, check=False)
        if result.returncode == 0:
            break  # the append finished: every write before it has been a crash point
        assert result.returncode == 17, result.stderr
        crash_points += 1
        reader = EpisodeStore.open(path)
        assert reader.n_episodes in (existing, existing + 1)
        for index in range(reader.n_episodes):
            data, times = _episode_with_times(index)
            np.testing.assert_array_equal(reader.episode(index)["state"], data["state"])
            np.testing.assert_array_equal(reader.timestamps("img")[reader.episode_slice(index)], times["img"])
        writer = EpisodeStore.open(path, mode="a")
        assert not writer.has_interrupted_append
        while writer.n_episodes < existing + 2:
            writer.append_episode(*_episode_with_times(writer.n_episodes))
        final = EpisodeStore.open(path)
        assert final.episode_lengths.tolist() == [6 + i for i in range(existing + 2)]
        assert all(f.level != "error" for f in validate(final))
        np.testing.assert_array_equal(final.episode(existing + 1)["img"], synthetic_episode(existing + 1, 7 + existing)["img"])
    else:
        pytest.fail("the append never completed within 40 writes")
    assert crash_points >= 8, f"only {crash_points} crash points: the writer patches did not take"
