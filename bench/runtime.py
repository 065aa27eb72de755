"""Runtime timing on the simulated Push-T arm at 10 Hz: overhead, deadlines, executed-time error, chunk jumps.

The policy is a stand-in whose inference time is set exactly (a sleep): it steers the agent
around a circle, each chunk continuing from the observed position, with a per-chunk offset
(sampling spread, 3 px) so that chunk boundaries show what blending does. The policy executes 8
actions per call (0.8 s) of the 15 it predicts from now on; inference takes 50%, 80% and 120% of
those 0.8 s, in sync mode (the next inference starts when the plan runs out) and async mode (it
starts early, and the runtime may use the whole predicted chunk to cover the wait). A setting in
which no action can be on time is refused by the runtime, and reported as such. Then, per blending
rule (async, inference 50%, replanning with 10 actions left so that chunks overlap), the mean jump where a chunk takes over: the largest step of the commanded
position from the last old action through the first new ones (the circle itself steps about 7 px).
Inpainting needs a real model (the stand-in would only copy the held rows): see examples/deploy_latency.sh. Every run is on the real
Push-T simulator in its own process with 50 ms sensor and 50 ms actuation latency.
Run: .venv/bin/python -m bench.runtime [--seconds 12]; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from robopolicy.robots.sim import SimRobot, sim_robot_config
from robopolicy.runtime.artifact import ArtifactBase
from robopolicy.runtime.loop import Runtime, RuntimeConfig, percentiles_ms

CONTROL_HZ = 10.0
HORIZON, N_OBS, N_ACTION = 16, 2, 8
CENTER, RADIUS, SPEED = np.array([256.0, 256.0]), 120.0, 0.6  # px, px, rad/s
LATENCY, ACTUATION = {"arm": 0.05}, 0.05
BLEND_REPLAN = 10  # replan with 1 s of actions left, so chunks overlap by about 0.5 s for blending


class TimedCirclePolicy(ArtifactBase):
    """Artifact stand-in: (obs) -> chunk around a circle after sleeping a set time."""

    def __init__(self, inference_s: float, offset_px: float, seed: int = 0):
        super().__init__("<bench stand-in>", {
            "policy": "stand-in", "control_hz": CONTROL_HZ, "horizon": HORIZON, "n_obs_steps": N_OBS,
            "n_action_steps": N_ACTION, "action_start": N_OBS - 1, "latency": {"n_latency_steps": 0},
            "output": {"shape": [HORIZON, 2]},
            "inputs": [{"name": "agent_pos", "type": "low_dim", "source": "state", "dims": [0, 2],
                        "shape": [N_OBS, 2], "step_offsets": [-1, 0]}]})
        self.inference_s, self.offset_px = inference_s, offset_px
        self.rng = np.random.default_rng(seed)

    def _execute(self, arrays: list[np.ndarray]) -> np.ndarray:
        start = time.perf_counter()
        position = arrays[0][0, -1]
        angle = np.arctan2(*(position - CENTER)[::-1])
        steps = np.arange(HORIZON) - (N_OBS - 1)
        angles = angle + SPEED * steps / CONTROL_HZ
        chunk = CENTER + RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        chunk = chunk + self.rng.normal(0.0, self.offset_px, 2)
        time.sleep(max(0.0, self.inference_s - (time.perf_counter() - start)))
        return chunk[None].astype(np.float32)


def measure(robot: SimRobot, seconds: float, inference_s: float, mode: str, blending: str = "replace",
            replan_steps: int | None = None) -> dict:
    policy = TimedCirclePolicy(inference_s, offset_px=3.0)
    config = RuntimeConfig(sensor_latency=LATENCY, actuation_latency=ACTUATION, inference=mode, blending=blending,
                           n_action_steps=N_ACTION if mode == "sync" else None, replan_steps=replan_steps,
                           safety={"max_obs_age": 2.0, "max_missed": 10**6})
    robot.reset(0)
    runtime = Runtime(policy, robot, config)
    setting = {"inference_ms": round(1000 * inference_s), "mode": mode, "blending": blending}
    if replan_steps is None:
        try:
            runtime.warm_up(repeats=1, warmup=0)  # the stand-in's latency is exact: one call measures it
        except ValueError as refusal:  # no action of any chunk could be on time: the runtime will not start
            return {**setting, "refused": str(refusal)}
    runtime.reset()
    stats = runtime.run(seconds)
    robot.poll()
    errors = robot.executed_errors()
    summary = stats.summary()
    return {**setting, "replan_steps": runtime.replan_steps, "chunks": stats.chunks, "missed_deadlines": stats.missed_deadlines,
            "late_chunks": stats.late_chunks, "dropped": stats.dropped, "held_ticks": sum(stats.holds.values()),
            "tick_overhead_ms": {k: round(v, 3) for k, v in summary["tick_work_ms"].items()},
            "executed_abs_error_ms": {k: round(v, 1) for k, v in percentiles_ms(errors).items()} if len(errors) else None,
            "mean_jump_px": round(float(np.mean(np.linalg.norm(stats.jumps, axis=1))), 3) if stats.jumps else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    chunk_s = N_ACTION / CONTROL_HZ
    sim = sim_robot_config({"env": {"name": "pusht", "obs_type": "keypoint", "max_steps": 100000}, "latency": LATENCY,
                            "actuation_latency": ACTUATION}, CONTROL_HZ, "the runtime benchmark")
    with SimRobot(sim) as robot:
        deadlines = [measure(robot, args.seconds, fraction * chunk_s, mode)
                     for fraction in (0.5, 0.8, 1.2) for mode in ("sync", "async")]
        blending = [measure(robot, args.seconds, 0.5 * chunk_s, "async", rule, replan_steps=BLEND_REPLAN)
                    for rule in ("replace", "crossfade", "ensemble")]
    print(json.dumps({"control_hz": CONTROL_HZ, "chunk_s": chunk_s, "seconds_per_run": args.seconds,
                      "latency_s": {"sensor": LATENCY["arm"], "actuation": ACTUATION},
                      "deadlines": deadlines, "blending": blending}, indent=2))


if __name__ == "__main__":
    main()
