"""The one error type for bad demonstration data, so callers can catch it and users read it."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or unreadable episode data; the message names the path, the key and a fix."""

    def __init__(self, path: str, problem: str, key: str | None = None, fix: str | None = None):
        self.path = str(path)
        self.key = key
        self.problem = problem
        self.fix = fix
        where = f"{self.path} [{key}]" if key else self.path
        message = f"{where}: {problem}"
        if fix:
            message += f"\n  fix: {fix}"
        super().__init__(message)
