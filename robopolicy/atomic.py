"""Writing small files so that a reader never sees half of one (write beside, then rename over), and the
exclusive lock that keeps a second writer off what one process is writing."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
import weakref
from pathlib import Path
from typing import Any

COMMAND_CHARS = 300  # how much of the holder's command line a lock file keeps


def write_text_atomic(path: Path, text: str) -> None:
    """`text` at `path`, replacing any old file in one rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, content: Any) -> None:
    """`content` as indented JSON at `path`, replacing any old file in one rename."""
    write_text_atomic(path, json.dumps(content, indent=2))


class LockHeld(RuntimeError):
    """Another open file (another process, or another writer in this one) holds the lock."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path = path
        self.holder = holder
        super().__init__(f"{path} is locked by {describe_holder(holder)}")


def describe_holder(holder: dict[str, Any]) -> str:
    """'pid 12 on host h since 2024-01-01 10:00:00 (python ...)' from a lock file's content."""
    if not holder:
        return "a process that has not yet written its name into the lock file"
    return (f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('since')} "
            f"(command: {holder.get('command')})")


def _this_process() -> dict[str, Any]:
    """Who holds a lock: pid, host, start time of the hold and the command line."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": shlex.join(sys.orig_argv)[:COMMAND_CHARS]}


def _read_holder(fd: int) -> dict[str, Any]:
    """The holder a lock file names; {} while the holder is still writing it."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
    except (UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _unlock(fd: int, owner_pid: int) -> None:
    """Release the lock and close its file; a forked child only closes its copy and leaves its parent's lock held."""
    if os.getpid() == owner_pid:
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class ExclusiveLock:
    """A non-blocking flock(LOCK_EX) on `path`, whose content names the holder (pid, host, since, command).

    Released by release(), when the object is garbage collected, or by the OS when the process dies (so a
    crashed holder never leaves a stale lock). flock locks an open file, so a second ExclusiveLock on the same
    path fails in the same process too. Raises LockHeld naming the holder.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeld(self.path, holder) from None
        self.holder = _this_process()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.holder).encode(), 0)
        self._release = weakref.finalize(self, _unlock, fd, os.getpid())

    @property
    def held(self) -> bool:
        """True until released."""
        return self._release.alive

    def release(self) -> None:
        """Let the next writer in (a second call does nothing)."""
        self._release()
