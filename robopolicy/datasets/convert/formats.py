"""The source formats `robopolicy dataset convert --from FORMAT` reads, and their options."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robopolicy.datasets.convert.run import Source
from robopolicy.registry import Registry

# format -> its source class; the ROS bag source lives with the ROS code, above this layer, and is only named here
FORMATS = Registry("--from format", {
    "robomimic": "robopolicy.datasets.convert.robomimic:RobomimicSource",
    "lerobot": "robopolicy.datasets.convert.lerobot:LeRobotSource",
    "video": "robopolicy.datasets.convert.raw_video:RawVideoSource",
    "rosbag": "robopolicy.ros.bag_source:RosbagSource",
    "zarr": "robopolicy.datasets.convert.stores:StoresSource",
})
# the options each format takes, with what their values look like
FORMAT_OPTIONS = {"robomimic": {"keys": "[obs_key,...]"},
                  "lerobot": {"resize": "[H,W]", "tolerance_s": "0.003"},
                  "video": {"rate": "HZ", "actions": "absolute|relative", "resize": "[H,W]"},
                  "rosbag": {"map": "NAME|PATH", "rate": "HZ", "reference": "/topic", "max_age": "SECONDS",
                             "split_topic": "/topic", "action_from": "OBS_KEY"},
                  "zarr": {"task": "TEXT"}}


def open_source(name: str, path: str | Path, options: Mapping[str, Any]) -> Source:
    """The source reader for `name` over `path`, with its options checked by name."""
    known = list(FORMAT_OPTIONS[FORMATS.check(name)])
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{name} takes the options {list(known)}, not {unknown}")
    return FORMATS.load(name)(path, **options)
