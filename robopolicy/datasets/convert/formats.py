"""The source formats `robopolicy dataset convert --from FORMAT` reads, and their options."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robopolicy.datasets.convert.run import Source

# format -> (module, class, options it takes)
FORMATS = {
    "robomimic": ("robopolicy.datasets.convert.robomimic", "RobomimicSource", ("keys",)),
    "lerobot": ("robopolicy.datasets.convert.lerobot", "LeRobotSource", ("resize", "tolerance_s")),
    "video": ("robopolicy.datasets.convert.raw_video", "RawVideoSource", ("rate", "actions", "resize")),
    "rosbag": ("robopolicy.datasets.convert.rosbag", "RosbagSource",
               ("map", "rate", "reference", "max_age", "split_topic")),
}


def open_source(name: str, path: str | Path, options: Mapping[str, Any]) -> Source:
    """The source reader for `name` over `path`, with its options checked by name."""
    import importlib

    if name not in FORMATS:
        raise ValueError(f"--from {name!r} is not a known format; use one of {sorted(FORMATS)}")
    module, cls, known = FORMATS[name]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{name} takes the options {list(known)}, not {unknown}")
    return getattr(importlib.import_module(module), cls)(path, **options)
