"""Appends are atomic: a killed writer never costs an earlier episode, readers never see half of one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from robopolicy.datasets.inspect import validate
from robopolicy.datasets.store import EpisodeStore
from tests.conftest import synthetic_episode

REPO = Path(__file__).resolve().parents[1]
EPISODE_LENGTH = 120
WRITER = """
import sys
import numpy as np
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
