"""Names a user types (a policy family, an env, a convert format, a teleop device, a robot kind) mapped to the
module that serves each. A module is imported only when its name is used, so a layer can name a plugin that
sits above it without importing it, and a mistyped name is answered with the closest known ones."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any


class UnknownName(KeyError, ValueError):
    """A name no registry entry has; the message names the closest known ones and all of them."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry:
    """name -> "package.module" or "package.module:attribute", looked up lazily."""

    def __init__(self, what: str, entries: Mapping[str, str], explain: str = ""):
        self.what = what
        self.entries = dict(entries)
        self.explain = explain  # what the names mean, appended to the error for an unknown one

    def names(self) -> list[str]:
        return sorted(self.entries)

    def check(self, name: str) -> str:
        """`name` itself, or UnknownName with the closest known names."""
        if name not in self.entries:
            if name is None:
                raise UnknownName(f"no {self.what} given; known: {self.names()}{self.explain}")
            close = difflib.get_close_matches(str(name), self.entries, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
            raise UnknownName(f"unknown {self.what} {name!r}{hint} Known: {self.names()}{self.explain}")
        return name

    def load(self, name: str) -> Any:
        """The module (or its attribute) registered under `name`, imported now."""
        module, _, attribute = self.entries[self.check(name)].partition(":")
        loaded = importlib.import_module(module)
        return getattr(loaded, attribute) if attribute else loaded
