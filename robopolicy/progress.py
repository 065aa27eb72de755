"""Progress bars for long work: shown on a terminal, silent in logs and CI."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None, desc: str, total: int | None = None) -> tqdm:
    """A tqdm bar over `iterable` (None: update it by hand) that disables itself when stderr is not a terminal."""
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None)
