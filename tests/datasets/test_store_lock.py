"""One writer per store: a second writer (another process, or another store object in this one) is refused with the
holder named, readers are never blocked, and a killed writer's lock goes with its process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robopolicy.datasets.errors import DataError
from robopolicy.datasets.inspect import validate
from robopolicy.datasets.store import LOCK_NAME, EpisodeStore
from tests.conftest import synthetic_episode

REPO = Path(__file__).resolve().parents[2]
EPISODES, LENGTH = 50, 20
# Appends EPISODES episodes numbered from argv[2] * 1000; says "open" once it holds the store, "done" after its
# appends, then keeps the store open until a line arrives on stdin. A refused open prints the error and exits 3.
WRITER = """
import sys
from robopolicy.datasets.errors import DataError
from robopolicy.datasets.store import EpisodeStore
from tests.conftest import synthetic_episode

try:
    store = EpisodeStore.open(sys.argv[1], mode="a")
except DataError as error:
    print(str(error).replace("\\n", " "), flush=True)
    sys.exit(3)
print("open", flush=True)
for index in range(int(sys.argv[3])):
    store.append_episode(synthetic_episode(int(sys.argv[2]) * 1000 + index, {length}, image=False))
print("done", flush=True)
sys.stdin.readline()
""".format(length=LENGTH)


def start_writer(path: Path, writer: int, episodes: int = EPISODES) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(writer), str(episodes)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_episodes_of(store: EpisodeStore, writer: int, count: int) -> None:
    """The store holds exactly `count` episodes, all the given writer's, in order."""
    assert store.n_episodes == count and store.episode_lengths.tolist() == [LENGTH] * count
    expected = [synthetic_episode(writer * 1000 + i, LENGTH, image=False)["action"] for i in range(count)]
    np.testing.assert_array_equal(store.read("action"), np.concatenate(expected))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_second_writer_process_is_refused_and_the_store_keeps_the_first_writers_episodes(tmp_path, zarr_format):
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, zarr_format=zarr_format).close()
    first = start_writer(path, 1)
    assert first.stdout.readline().strip() == "open"
    second = start_writer(path, 2)  # while the first appends
    out, err = second.communicate(timeout=120)
    assert second.returncode == 3, err
    assert f"another writer has it open: pid {first.pid} on host {socket.gethostname()} since " in out
    assert "fix: wait for that writer to finish" in out
    reader = EpisodeStore.open(path)  # a reader opens while the writer holds the lock
    assert reader.n_episodes <= EPISODES
    assert first.stdout.readline().strip() == "done"
    check_episodes_of(EpisodeStore.open(path), 1, EPISODES)  # and again, the writer still holding the lock
    first.communicate("\n", timeout=60)
    assert first.returncode == 0
    final = EpisodeStore.open(path)
    check_episodes_of(final, 1, EPISODES)
    assert validate(final, deep=True) == []
    assert np.all(np.diff(final.episode_ends) > 0)


def test_a_killed_writers_lock_is_released_by_the_os(tmp_path):
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path).close()
    writer = start_writer(path, 1, episodes=2)
    assert writer.stdout.readline().strip() == "open"
    with pytest.raises(DataError, match=f"another writer has it open: pid {writer.pid} "):
        EpisodeStore.open(path, mode="a")
    holder = json.loads((path / LOCK_NAME).read_text())
    assert holder["pid"] == writer.pid and holder["host"] == socket.gethostname() and "-c" in holder["command"]
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=60)
    with EpisodeStore.open(path, mode="a") as store:
        store.append_episode(synthetic_episode(7, LENGTH, image=False))
    assert json.loads((path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_second_writer_in_this_process_waits_for_close(tmp_path):
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path)
    store.append_episode(synthetic_episode(0, LENGTH))
    for second_writer in (lambda: EpisodeStore.open(path, mode="a"), lambda: EpisodeStore.create(path, overwrite=True)):
        with pytest.raises(DataError, match=f"(?s)pid {os.getpid()} .*fix: close that store first") as info:
            second_writer()
        assert info.value.path == str(path)
    assert EpisodeStore.open(path).n_episodes == 1  # the refused overwrite deleted nothing
    store.close()
    with pytest.raises(DataError, match="store is closed"):
        store.append_episode(synthetic_episode(1, LENGTH))
    with EpisodeStore.open(path, mode="a") as writer:
        writer.append_episode(synthetic_episode(1, LENGTH))
    assert EpisodeStore.create(path, overwrite=True).n_episodes == 0  # the `with` block released it


def test_copy_to_hands_its_lock_to_the_store_it_returns(tmp_path):
    source = EpisodeStore.from_arrays(synthetic_episode(0, LENGTH), np.array([LENGTH]))
    copy = source.copy_to(tmp_path / "copy.zarr")
    copy.append_episode(synthetic_episode(1, LENGTH))
    with pytest.raises(DataError, match="another writer has it open"):
        EpisodeStore.open(tmp_path / "copy.zarr", mode="a")
    copy.close()
    assert EpisodeStore.open(tmp_path / "copy.zarr", mode="a").n_episodes == 2


def test_remote_stores_are_written_without_a_lock_and_say_so(caplog):
    with caplog.at_level(logging.WARNING, logger="robopolicy.datasets.store"):
        store = EpisodeStore.create("memory://lockless.zarr")
        store.append_episode(synthetic_episode(0, LENGTH, image=False))
        EpisodeStore.open("memory://lockless.zarr", mode="a")
    assert [r.getMessage() for r in caplog.records].count(
        "memory://lockless.zarr: a remote store takes no writer lock; make sure no other process writes to it") == 2
