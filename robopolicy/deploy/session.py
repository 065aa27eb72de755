"""`robopolicy deploy ARTIFACT robot=sim|ros ...`: the runtime driving the simulated arm for a set of
episodes, or a ROS robot through the bridge node (robot=ros robot.map=NAME; see robopolicy.ros.node).

ARTIFACT is an artifact directory (trusted=true to allow TorchScript, which runs code when loaded), or
tcp://HOST:PORT of `robopolicy serve` (remote inference; keys=DIR from `robopolicy serve keygen` when the
server is off loopback).

Options (key=value): episodes, seed_start, out (run log directory), latency.<sensor>=seconds
(injected in the simulator and, with match_latency=true, compensated by the runtime),
actuation_latency, jitter, sensors.<sensor>=[store keys] (default: images, depth and point clouds
come from "camera", everything else from "arm"), env.<key> (simulator overrides), and every
RuntimeConfig field (inference, blending, match_latency, n_action_steps, replan_steps, margin,
seed, safety.<field>, instruction: what a policy told its task in words is told; robot=sim defaults it
to the simulated task's instruction, robot=ros also takes it from the topic map's text topic).
Writes run_log.zarr (one episode per run: per-tick times, jitter, time spent in the tick, capture
time of the observation used, execution time of the first action sent, observation age,
planned/sent/dropped counts, holds) and results.json (success per seed).
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

from robopolicy.atomic import write_json_atomic
from robopolicy.envs.registry import env_instruction
from robopolicy.progress import progress
from robopolicy.robots.kinds import split_robot
from robopolicy.robots.sim import SIM_OPTIONS, SimRobot, SimRobotConfig, sensor_latencies, sim_robot_config
from robopolicy.runtime.artifact import ArtifactBase
from robopolicy.runtime.loop import Runtime, RuntimeConfig, percentiles_ms
from robopolicy.runtime.remote import SCHEME, open_artifact
from robopolicy.runtime.run_log import RunLog
from robopolicy.settings import build_settings, parse_overrides
from robopolicy.stats import wilson_interval

log = logging.getLogger(__name__)
SESSION_OPTIONS = ("out", "max_seconds", "threads", "trusted", "keys", "episodes", "seed_start")
SIM_ONLY = ("episodes", "seed_start", *(k for k in SIM_OPTIONS if k not in ("latency", "actuation_latency")))
CAMERA_TYPES = ("rgb", "depth", "point_cloud")


def default_sensors(artifact: ArtifactBase) -> dict[str, list[str]]:
    """Image, depth and point-cloud inputs come from the camera; the rest from the arm."""
    return {"camera": sorted({s["source"] for s in artifact.obs_inputs if s["type"] in CAMERA_TYPES})}


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


def deploy(artifact_dir: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run the artifact on the robot the options name; returns the results written to results.json.

    results.json is rewritten and the run log appended after every episode (run), so a run that
    dies keeps what it measured."""
    if str(artifact_dir) in ("calibrate", "sim-driver") and not Path(artifact_dir).exists():
        raise ValueError(f"`robopolicy deploy {artifact_dir}` is now `robopolicy robot {artifact_dir}` (same options)")
    kind, robot_options, overrides = split_robot(overrides)
    options = parse_overrides(overrides)
    session = {k: options.pop(k) for k in SESSION_OPTIONS if k in options}
    sim_only = sorted((set(session) | set(options)) & set(SIM_ONLY))
    if kind == "ros" and sim_only:
        raise ValueError(f"{sim_only} set the simulated arm (robot=sim); a ROS robot takes robot.* options and "
                         "latency.<sensor>, actuation_latency, out, max_seconds")
    if kind == "sim" and robot_options:
        raise ValueError(f"robot.{sorted(robot_options)[0]} is an option of robot=ros; robot=sim takes none")
    artifact = open_artifact(artifact_dir, session.get("threads"), session.get("trusted") is True, session.get("keys"))
    sim = simulated_arm(artifact, str(artifact_dir), options) if kind == "sim" else None
    latency = sim.latency if sim else sensor_latencies(options)
    actuation = sim.actuation_latency if sim else float(options.pop("actuation_latency", 0.0))
    options.pop("latency", None)  # robot=ros: compensated by the runtime only
    if sim is not None and "instruction" not in options and artifact.text_inputs:
        options["instruction"] = env_instruction(sim.env)  # the simulated task's own, as `robopolicy eval` tells it
    config = build_settings(RuntimeConfig, {"sensor_latency": latency, "actuation_latency": actuation, **options},
                            "deploy")
    local = not str(artifact_dir).startswith(SCHEME)
    root = Path(artifact_dir) / "deploy" if local else Path("runs") / "deploy"
    out = Path(session.get("out") or root / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    max_seconds = float(session.get("max_seconds", 3600.0))
    if sim is None:
        from robopolicy.ros.node import bridge_config, serve_bridge  # only robot=ros loads the ROS side

        results = serve_bridge(artifact, config, bridge_config(robot_options), out, max_seconds)
        return {**results, "results": str(out / "results.json")}
    return deploy_sim(artifact, str(artifact_dir), config, sim, session, out, max_seconds)


def simulated_arm(artifact: ArtifactBase, name: str, options: dict[str, Any]) -> SimRobotConfig:
    """The simulated arm for robot=sim: the artifact's env and control rate, its camera inputs from the camera."""
    if not artifact.meta.get("env"):
        raise ValueError(f"{name}/meta.json has no env: export a checkpoint whose task has an env section")
    return sim_robot_config(options, artifact.meta["control_hz"], "deploy robot=sim", env_base=artifact.meta["env"],
                            sensors=default_sensors(artifact))


def deploy_sim(artifact: ArtifactBase, name: str, config: RuntimeConfig, sim: SimRobotConfig,
               session: dict[str, Any], out: Path, max_seconds: float) -> dict[str, Any]:
    """Episodes on the simulated arm, from seed_start on."""
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
