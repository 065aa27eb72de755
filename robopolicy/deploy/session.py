"""`robopolicy deploy ARTIFACT robot=sim|ros ...`: the runtime driving the simulated arm for a set of
episodes, or a ROS robot through the bridge node (robot=ros robot.map=NAME; see deploy.ros.node).

ARTIFACT is an artifact directory, or tcp://HOST:PORT of `robopolicy serve` (remote inference).

Options (key=value): episodes, seed_start, out (run log directory), latency.<sensor>=seconds
(injected in the simulator and, with match_latency=true, compensated by the runtime),
actuation_latency, jitter, sensors.<sensor>=[store keys] (default: images, depth and point clouds
come from "camera", everything else from "arm"), env.<key> (simulator overrides), and every
RuntimeConfig field (inference, blending, match_latency, n_action_steps, replan_steps, margin,
seed, safety.<field>). Writes run_log.zarr (one episode per run: per-tick times, jitter,
time spent in the tick, capture time of the observation used, execution time of the first
action sent, observation age, planned/sent/dropped counts, holds) and results.json (success per seed).
robot=ros takes out, latency.<sensor>, actuation_latency, max_seconds (per run), the RuntimeConfig
fields and robot.* options, and logs one run per operator start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.atomic import write_json_atomic
from robopolicy.deploy.artifact import ArtifactBase
from robopolicy.deploy.calibrate import CalibrationSettings, calibrate_actuation
from robopolicy.deploy.remote import SCHEME, open_artifact
from robopolicy.deploy.runtime import Runtime, RuntimeConfig, percentiles_ms
from robopolicy.deploy.sim_robot import SimRobot, SimRobotConfig
from robopolicy.progress import progress
from robopolicy.settings import build_settings, parse_overrides

log = logging.getLogger(__name__)
SIM_OPTIONS = ("episodes", "seed_start", "jitter", "sensors", "env")
SESSION_OPTIONS = ("out", "latency", "actuation_latency", "max_seconds", "threads", *SIM_OPTIONS)
CAMERA_TYPES = ("rgb", "depth", "point_cloud")
TICK_KEYS = ("time", "jitter", "work", "obs_time", "action_time", "obs_age", "planned", "held", "sent", "dropped")


def default_sensors(artifact: ArtifactBase) -> dict[str, list[str]]:
    """Image, depth and point-cloud inputs come from the camera; the rest from the arm."""
    return {"camera": sorted({s["source"] for s in artifact.obs_inputs if s["type"] in CAMERA_TYPES})}


class RunLog:
    """The run log store, one episode per run appended as soon as the run ends (a crash keeps the runs before)."""

    def __init__(self, path: Path, attrs: dict[str, Any]):
        from robopolicy.datasets.store import EpisodeStore

        self.store = EpisodeStore.create(path, overwrite=True, attrs=attrs)

    def append(self, ticks: list[dict[str, float]]) -> None:
        """The per-tick arrays of one run, stamped with the tick times."""
        if ticks:
            data = {key: np.array([t[key] for t in ticks], dtype=np.float64) for key in TICK_KEYS}
            self.store.append_episode(data, timestamps={key: data["time"] for key in TICK_KEYS})


def run_episode(robot: SimRobot, runtime: Runtime, seed: int, max_seconds: float) -> tuple[dict[str, Any], list]:
    """One episode from `seed`: (its results, its per-tick log)."""
    robot.reset(seed)
    runtime.reset()
    stats = runtime.run(max_seconds, until=lambda: robot.status["done"])
    robot.poll()
    errors = robot.executed_errors()
    timing = percentiles_ms(errors) if len(errors) else None
    return {"seed": seed, "success": bool(robot.status["is_success"]), "steps": robot.status["steps"],
            "executed_abs_error_ms": timing, **stats.summary()}, stats.ticks


def split_robot(overrides: Sequence[str]) -> tuple[str, dict[str, Any], list[str]]:
    """("sim" | "ros", the robot.* options, the other overrides): robot=ros and robot.map=... side by side."""
    kind, robot, rest = "sim", [], []
    for item in overrides:
        if item.startswith("robot="):
            kind = item.partition("=")[2]
        elif item.startswith("robot."):
            robot.append(item[len("robot."):])
        else:
            rest.append(item)
    if kind not in ("sim", "ros"):
        raise ValueError(f"robot={kind!r} is not known: robot=sim drives the simulated arm, robot=ros a ROS robot "
                         "through the bridge (with robot.map=NAME)")
    return kind, parse_overrides(robot), rest


def deploy(artifact_dir: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run the artifact on the robot the options name; returns the results written to results.json.

    results.json is rewritten and the run log appended after every episode (run), so a run that
    dies keeps what it measured."""
    kind, robot_options, overrides = split_robot(overrides)
    options = parse_overrides(overrides)
    session = {k: options.pop(k) for k in SESSION_OPTIONS if k in options}
    sim_only = sorted(set(session) & set(SIM_OPTIONS))
    if kind == "ros" and sim_only:
        raise ValueError(f"{sim_only} set the simulated arm (robot=sim); a ROS robot takes robot.* options and "
                         "latency.<sensor>, actuation_latency, out, max_seconds")
    artifact = open_artifact(artifact_dir, session.get("threads"))
    latency = {k: float(v) for k, v in (session.get("latency") or {}).items()}
    actuation = float(session.get("actuation_latency", 0.0))
    config = build_settings(RuntimeConfig, {"sensor_latency": latency, "actuation_latency": actuation, **options},
                            "deploy")
    local = not str(artifact_dir).startswith(SCHEME)
    root = Path(artifact_dir) / "deploy" if local else Path("runs") / "deploy"
    out = Path(session.get("out") or root / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    max_seconds = float(session.get("max_seconds", 3600.0))
    if kind == "ros":
        from robopolicy.deploy.ros.node import bridge_options, serve_bridge

        results = serve_bridge(artifact, config, bridge_options(robot_options), out, max_seconds)
        return {**results, "results": str(out / "results.json")}
    if robot_options:
        raise ValueError(f"robot.{sorted(robot_options)[0]} is an option of robot=ros; robot=sim takes none")
    return deploy_sim(artifact, str(artifact_dir), config, session, out, max_seconds)


def deploy_sim(artifact: ArtifactBase, name: str, config: RuntimeConfig, session: dict[str, Any], out: Path,
               max_seconds: float) -> dict[str, Any]:
    """Episodes on the simulated arm, from seed_start on."""
    from robopolicy.envs.report import wilson_interval

    if not artifact.meta.get("env"):
        raise ValueError(f"{name}/meta.json has no env: export a checkpoint whose task has an env section")
    env = {**artifact.meta["env"], **(session.get("env") or {})}
    sim = SimRobotConfig(env=env, sensors=session.get("sensors") or default_sensors(artifact),
                         latency=config.sensor_latency, actuation_latency=config.actuation_latency,
                         jitter=float(session.get("jitter", 0.0)), control_hz=float(artifact.meta["control_hz"]))
    episodes, seed_start = int(session.get("episodes", 20)), int(session.get("seed_start", 100000))
    results: dict[str, Any] = {"artifact": name, "episodes": episodes, "run_log": str(out / "run_log.zarr")}
    runs: list[dict[str, Any]] = []
    with SimRobot(sim) as robot:
        runtime = Runtime(artifact, robot, config)
        robot.reset(seed_start)
        runtime.warm_up()
        results["settings"] = {"sim": asdict(sim), "runtime": asdict(config), "replan_steps": runtime.replan_steps}
        run_log = RunLog(out / "run_log.zarr", {"artifact": name, "settings": results["settings"]})
        bar = progress(range(seed_start, seed_start + episodes), desc="deploy sim", total=episodes)
        for seed in bar:
            run, ticks = run_episode(robot, runtime, seed, max_seconds)
            runs.append(run)
            run_log.append(ticks)
            successes = sum(r["success"] for r in runs)
            results.update(success_rate=successes / len(runs), completed=len(runs),
                           success_rate_ci95=list(wilson_interval(successes, len(runs))), runs=runs)
            write_json_atomic(out / "results.json", results)
            bar.set_postfix(success=f"{successes / len(runs):.2f}")
    log.info("deploy: success %d/%d; results in %s", successes, episodes, out / "results.json")
    return {**results, "results": str(out / "results.json")}


ROBOSUITE_CALIBRATION = {"position_key": "robot0_eef_pos", "action_keys": ["robot0_eef_pos", "robot0_eef_rot6d"],
                         "action_tail": [-1.0]}


def calibrate(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """`robopolicy deploy calibrate robot=sim env.name=robosuite env.task=Lift actuation_latency=0.1 ...`.

    The simulated arm gets the injected latencies (actuation_latency, jitter, latency.<sensor>);
    the estimate comes from its motion alone. CalibrationSettings fields are options too; for
    robosuite's absolute controller the pose keys default to the grip site's.
    """
    options = parse_overrides(overrides)
    if options.pop("robot", "sim") != "sim":
        raise ValueError("calibration runs on robot=sim here (a ROS robot is calibrated through its bridge)")
    env = options.pop("env", None)
    if not env or "name" not in env:
        raise ValueError("calibrate needs the simulator: env.name=robosuite env.task=Lift (and env.* options)")
    env = {"max_steps": 10**6, **env}
    injected = {"actuation_latency": float(options.pop("actuation_latency", 0.0)),
                "jitter": float(options.pop("jitter", 0.0)),
                "latency": {k: float(v) for k, v in (options.pop("latency", None) or {}).items()}}
    defaults = ROBOSUITE_CALIBRATION if env["name"] == "robosuite" and env.get("controller", "absolute") == "absolute" \
        else {}
    values = {**defaults, **options}
    for key in ("action_keys", "action_tail"):
        if key in values:
            values[key] = tuple(values[key])
    settings = build_settings(CalibrationSettings, values, "calibrate")
    sim = SimRobotConfig(env=env, control_hz=settings.control_hz, **injected)
    with SimRobot(sim) as robot:
        robot.reset(settings.seed)
        estimate = calibrate_actuation(robot, settings)
    log.info("actuation latency %.0f ms (injected %.0f ms)", 1000 * estimate["actuation_latency"],
             1000 * injected["actuation_latency"])
    return {**estimate, "injected": injected, "settings": asdict(settings)}
