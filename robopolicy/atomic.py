"""Writing small files so that a reader never sees half of one: write beside, then rename over."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, content: Any) -> None:
    """`content` as indented JSON at `path`, replacing any old file in one rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2))
    os.replace(tmp, path)
