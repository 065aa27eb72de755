"""Progress for long work: a bar on a terminal, and elsewhere (logs, CI, nohup, a pipe) a log line at least
every LOG_EVERY_S seconds with the count, the rate and the time left, so a run is never silent."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger(__name__)
LOG_EVERY_S = 30.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class Progress(Generic[T]):
    """tqdm's update / set_postfix / close over `iterable` (None: updated by hand), drawn as a bar on a terminal
    and logged every LOG_EVERY_S seconds otherwise."""

    def __init__(self, iterable: Iterable[T] | None, desc: str, total: int | None = None, initial: int = 0,
                 terminal: bool | None = None, enabled: bool = True):
        self.iterable, self.desc, self.total, self.n, self.enabled = iterable, desc, total, initial, enabled
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False) if self.terminal and enabled else None
        self.postfix: dict[str, Any] = {}
        self.started = self.last_log = time.monotonic()
        self.first = initial
        self.logged = False

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last_log >= LOG_EVERY_S:
            self._log()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def _log(self, final: bool = False) -> None:
        now = time.monotonic()
        elapsed = now - self.started
        done = self.n - self.first
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        left = ""
        if self.total and rate > 0 and not final:
            left = f", {_duration((self.total - self.n) / rate)} left"
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        log.info("%s %s%s: %s elapsed, %.3g/s%s%s", self.desc, count, " done" if final else "", _duration(elapsed),
                 rate, left, extra)
        self.last_log, self.logged = now, True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.logged:  # long work ends with a last line; short work stays quiet
            self._log(final=True)


def progress(iterable: Iterable[T] | None, desc: str, total: int | None = None, initial: int = 0,
             enabled: bool = True) -> Progress[T]:
    """Progress over `iterable` (None: call update by hand): a bar on a terminal, log lines elsewhere; nothing
    when not enabled (e.g. on the other ranks of a distributed run)."""
    return Progress(iterable, desc, total, initial, enabled=enabled)
