"""The real-time control loop: align observations, infer (in line or in a worker), time, blend, check, send.

Every tick (the artifact's control period) the loop files new readings, lets the watchdog decide
whether the robot must hold, folds a finished chunk into the plan and sends what is still on
time, and starts the next inference when few planned actions remain: at once when the plan runs
out (`sync`, the robot waits while the policy thinks), or early enough to cover the measured
inference latency (`async`). Latency matching (`match_latency`) uses the configured sensor and
actuation latencies; without it they are taken as zero, as a naive loop would. Blending rule
`inpaint` (diffusion and flow artifacts) samples each chunk with the actions that will already be
committed when it lands held fixed (real-time chunking), then replaces the plan from there.
With `reactive`, the artifact's reactive layer (runtime/reactive.py) corrects the planned actions not yet
sent at every tick that brings a newer observation, and sends them again (a send replaces what has not
gone out).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robopolicy.robots.interface import RobotInterface
from robopolicy.runtime.alignment import ObservationAligner
from robopolicy.runtime.artifact import ArtifactBase
from robopolicy.runtime.blending import RULES, ChunkBlender, boundary_jump
from robopolicy.runtime.inference import (
    ArtifactRunner,
    InferenceResult,
    InferenceWorker,
    key_specs,
    measure_latency,
)
from robopolicy.runtime.reactive import ReactiveLayer
from robopolicy.runtime.safety import EmergencyStop, SafetyConfig, Watchdog
from robopolicy.runtime.timing import ActionPlan, TimingConfig, chunk_plan, to_send
from robopolicy.settings import build_settings

log = logging.getLogger(__name__)
INFERENCE_MODES = ("sync", "async")
INPAINT = "inpaint"


@dataclass
class RuntimeConfig:
    """How the loop compensates latency, schedules inference and blends chunks."""

    sensor_latency: dict[str, float] = field(default_factory=dict)  # seconds, per sensor name
    actuation_latency: float = 0.0  # seconds from command to effect
    match_latency: bool = True  # compensate the latencies above; False treats them as zero
    inference: str = "async"
    blending: str = "replace"  # replace | crossfade | ensemble | inpaint
    ensemble_coeff: float | None = None  # temporal ensembling's weight decay (default: the policy's, else 0.01)
    n_action_steps: int | None = None  # actions used per chunk (default: every predicted one from now on, since
    # latency makes the first ones late and replanning, not this cap, decides how many run)
    replan_steps: int | None = None  # async: infer when this many planned actions remain (default: from latency)
    margin: float = 0.005  # seconds: actions due to be sent sooner than this are late
    seed: int = 0
    interpolation: dict[str, str] = field(default_factory=dict)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    instruction: str | None = None  # what a policy told its task in words is told (a topic may change it)
    reactive: bool = False  # correct planned actions with the newest observation at every tick (the artifact's
    # reactive layer, fitted by `robopolicy reactive`)

    def __post_init__(self) -> None:
        if self.inference not in INFERENCE_MODES:
            raise ValueError(f"inference must be one of {INFERENCE_MODES}, got {self.inference!r}")
        if self.blending not in (*RULES, INPAINT):
            raise ValueError(f"blending must be one of {(*RULES, INPAINT)}, got {self.blending!r}")
        if isinstance(self.safety, Mapping):
            self.safety = build_settings(SafetyConfig, self.safety, "safety")


def percentiles_ms(seconds: np.ndarray) -> dict[str, float]:
    return {"p50": float(1000 * np.percentile(seconds, 50)), "p99": float(1000 * np.percentile(seconds, 99))}


@dataclass
class RunStats:
    """What happened in one run, with per-tick arrays for the run log."""

    ticks: list[dict[str, float]] = field(default_factory=list)
    sent: int = 0
    dropped: int = 0
    late_chunks: int = 0
    chunks: int = 0
    missed_deadlines: int = 0
    inference_s: list[float] = field(default_factory=list)
    jumps: list[np.ndarray] = field(default_factory=list)  # per action dim, the largest step where a chunk takes over
    holds: dict[str, int] = field(default_factory=dict)  # ticks held, by the watchdog's reason
    skipped_ticks: int = 0
    discarded: int = 0  # finished chunks not used because their observations had gone stale
    non_finite_actions: int = 0  # actions with NaN or inf, dropped with their chunk (the arm holds)
    non_finite_observations: dict[str, int] = field(default_factory=dict)  # readings refused, by store key
    corrections: list[np.ndarray] = field(default_factory=list)  # reactive layer: per action dim, the largest change
    stopped: str = ""

    def summary(self) -> dict[str, Any]:
        jitter = np.abs([t["jitter"] for t in self.ticks]) if self.ticks else np.zeros(1)
        inference = np.array(self.inference_s) if self.inference_s else np.zeros(1)
        work = np.array([t["work"] for t in self.ticks]) if self.ticks else np.zeros(1)
        return {"ticks": len(self.ticks), "sent": self.sent, "dropped": self.dropped, "chunks": self.chunks,
                "late_chunks": self.late_chunks, "missed_deadlines": self.missed_deadlines, "holds": self.holds,
                "discarded": self.discarded, "non_finite_actions": self.non_finite_actions,
                "non_finite_observations": self.non_finite_observations,
                "skipped_ticks": self.skipped_ticks,
                "tick_jitter_ms": percentiles_ms(jitter), "tick_work_ms": percentiles_ms(work),
                "inference_ms": percentiles_ms(inference), "corrections": len(self.corrections),
                "mean_correction": np.mean(self.corrections, axis=0).tolist() if self.corrections else None,
                "mean_jump": np.mean(self.jumps, axis=0).tolist() if self.jumps else None, "stopped": self.stopped}


@dataclass
class _LoopState:
    """What the control loop carries from tick to tick."""

    plan: ActionPlan | None = None
    last_t_obs: float = -math.inf  # observation time of the latest inference
    deadline: float | None = None  # when the running inference must be done: the plan's last send time
    holding: bool = False
    sent_time: float = math.nan  # execution time of the first action sent in this tick
    submitted: dict[float, np.ndarray] = field(default_factory=dict)  # reactive: observation time -> its values
    chunk_obs: tuple[float, np.ndarray] | None = None  # reactive: the current chunk's observation (time, values)
    reacted_at: float = -math.inf  # reactive: observation time of the last correction

    def take_sent_time(self) -> float:
        sent, self.sent_time = self.sent_time, math.nan
        return sent

    def remaining(self, time: float) -> int:
        """Planned actions executing after `time`."""
        return 0 if self.plan is None else int((self.plan.times > time).sum())


class Runtime:
    """Drives a RobotInterface with an exported artifact."""

    def __init__(self, artifact: ArtifactBase, robot: RobotInterface, config: RuntimeConfig,
                 estop: EmergencyStop | None = None):
        meta = artifact.meta
        self.robot, self.config = robot, config
        self.estop = estop or EmergencyStop()
        self.dt = 1.0 / float(meta["control_hz"])
        match = config.match_latency
        self.timing = TimingConfig(self.dt, meta["action_start"], meta["latency"]["n_latency_steps"],
                                   config.actuation_latency if match else 0.0, config.margin)
        latency = config.sensor_latency if match else {}
        self.aligner = ObservationAligner(key_specs(artifact, config.interpolation), self.dt, latency)
        self.runner = ArtifactRunner(artifact, config.seed)
        self.text_sources = {spec["source"] for spec in self.runner.text_inputs}
        if config.instruction is not None:
            if not self.text_sources:
                raise ValueError(f"instruction= is for a policy told its task in words; {artifact.directory} takes no "
                                 "instruction")
            self.runner.set_instruction(config.instruction)
        self.n_action_steps = config.n_action_steps or meta["horizon"] - meta["action_start"]
        self.inpaint = config.blending == INPAINT
        if self.inpaint and not artifact.takes_prefix:
            raise ValueError(f"blending=inpaint needs a diffusion or flow artifact; {artifact.directory} is a "
                             f"{meta['policy']} (use replace, crossfade or ensemble)")
        coeff = config.ensemble_coeff if config.ensemble_coeff is not None else meta.get("temporal_ensemble_coeff")
        self.blender = ChunkBlender("replace" if self.inpaint else config.blending, 0.01 if coeff is None else coeff)
        self.latency_estimate = 0.0
        self.watchdog = Watchdog(config.safety)
        self.bounds = config.safety.training_bounds(meta.get("action_range"))
        self.worker = InferenceWorker(self.runner, robot.now)
        self.replan_steps = config.replan_steps
        self.reactive = ReactiveLayer(artifact.directory) if config.reactive else None
        inputs = [key.name for key in self.aligner.keys]
        if self.reactive is not None and set(self.reactive.keys) - set(inputs):
            raise ValueError(f"the reactive layer of {artifact.directory} reads {self.reactive.keys}, which the "
                             f"artifact's inputs {inputs} do not all name: fit it again for this artifact")

    def reset(self) -> None:
        """Forget the observations, plan and deadline record of the last run (the latency estimate stays)."""
        self.aligner = ObservationAligner(self.aligner.keys, self.dt, self.aligner.sensor_latency)
        self.blender.reset()
        self.watchdog = Watchdog(self.config.safety)
        self.worker.wait(timeout=30.0)  # a chunk for the last run's observations is of no use now

    def warm_up(self, repeats: int = 5, warmup: int = 3, timeout: float = 10.0) -> None:
        """Run the policy on the first full window (waiting `timeout` s for it), and pick the async replan
        point from its latency."""
        t_ref = self._wait_for_observations(timeout)
        durations = measure_latency(self.runner, self.aligner.window(t_ref), repeats, warmup)
        slow = self.latency_estimate = max(durations)
        if self.replan_steps is None:
            self.replan_steps = 0 if self.config.inference == "sync" else min(
                self.n_action_steps - 1, math.ceil(slow / self.dt) + 1)
        log.info("inference %.0f ms (slowest of %d), control period %.0f ms: %s inference, replan with %d actions left",
                 1000 * slow, len(durations), 1000 * self.dt, self.config.inference, self.replan_steps)
        self._check_reach(slow)

    def _check_reach(self, inference_s: float) -> None:
        """Refuse a setting in which no action of any chunk can be on time (the robot would only hold)."""
        sensor = max(self.aligner.sensor_latency.values(), default=0.0)
        needed = sensor + inference_s + self.timing.actuation_latency + self.timing.margin
        reach = (self.n_action_steps - 1 + self.timing.n_latency_steps) * self.dt
        if needed >= reach:
            raise ValueError(
                f"no action can be on time: observations are {1000 * sensor:.0f} ms old, inference takes "
                f"{1000 * inference_s:.0f} ms and actuation {1000 * self.timing.actuation_latency:.0f} ms, "
                f"{1000 * needed:.0f} ms in all, but a chunk reaches only {1000 * reach:.0f} ms past its "
                f"observation. Train with task.dataset.n_latency_steps >= "
                f"{math.ceil(needed / self.dt) - self.n_action_steps + 1} (actions that far ahead), predict a "
                "longer horizon, or reduce the latency")

    def _file(self, reading: Any) -> None:
        """File a reading: an instruction (a text input's source, as a string) goes to the runner, the rest to the
        aligner. A bad instruction is logged and the last good one kept: the arm must not stop over a message."""
        for source in self.text_sources & set(reading.values):
            text = str(reading.values[source])
            if text == self.runner.instruction:  # a topic repeats it: nothing new to check or log
                continue
            try:
                self.runner.set_instruction(text)
                log.info("instruction from %s: %r", reading.sensor, text)
            except ValueError as error:
                log.warning("instruction from %s refused: %s", reading.sensor, error)
        self.aligner.add(reading)

    def _wait_for_observations(self, timeout: float) -> float:
        deadline = self.robot.now() + timeout
        while self.robot.now() < deadline:
            for reading in self.robot.poll():
                self._file(reading)
            t_ref = self.aligner.reference_time()
            if t_ref is not None and (self.runner.instruction is not None or not self.text_sources):
                return t_ref
            if self.estop.wait(self.dt / 4):
                raise RuntimeError(f"emergency stop while waiting for observations: {self.estop.reason}")
        missing = sorted(source for source, buffer in self.aligner.buffers.items() if buffer.newest is None)
        if self.runner.instruction is None:
            missing += [f"{source} (an instruction: deploy with instruction=...)" for source in self.text_sources]
        raise TimeoutError(f"no observation of {missing} within {timeout} s: check that the robot sends them "
                           "(and the sensors option that maps them to sensors)")

    def run(self, duration: float, until: Callable[[], bool] | None = None,
            on_tick: Callable[[RunStats], None] | None = None) -> RunStats:
        """Control for `duration` seconds (or until `until()` or the emergency stop); returns the stats.

        `on_tick(stats)` runs after every tick (diagnostics). The robot holds when the run ends and
        stops when it fails (an inference error, say)."""
        stats, loop = RunStats(), _LoopState()
        if self.replan_steps is None:
            self.warm_up()
        self._wait_for_observations(timeout=10.0)
        start = next_tick = self.robot.now()
        try:
            while not self.estop.triggered:
                now = self.robot.now()
                if now - start >= duration or (until is not None and until()):
                    break
                sent, dropped = stats.sent, stats.dropped
                t_ref = self._tick(now, loop, stats)
                stats.ticks.append({"time": now - start, "jitter": now - next_tick, "work": self.robot.now() - now,
                                    "obs_time": (t_ref if t_ref is not None else math.nan) - start,
                                    "action_time": loop.take_sent_time() - start, "planned": loop.remaining(now),
                                    "obs_age": now - t_ref if t_ref is not None else math.nan,
                                    "held": float(loop.holding), "sent": stats.sent - sent,
                                    "dropped": stats.dropped - dropped})
                if on_tick is not None:
                    on_tick(stats)
                next_tick += self.dt
                behind = self.robot.now() - next_tick
                if behind > self.dt:  # a blocking inference overran whole periods: skip them rather than rush
                    skipped = math.floor(behind / self.dt)
                    stats.skipped_ticks += skipped
                    next_tick += skipped * self.dt
                self.estop.wait(max(0.0, next_tick - self.robot.now()))
        except BaseException as error:
            self.robot.stop()
            stats.stopped = f"error: {error!r}"
            raise
        if self.estop.triggered:
            self.robot.stop()
            stats.stopped = self.estop.reason
        else:
            self.robot.hold()
        stats.holds = dict(self.watchdog.holds)
        stats.non_finite_observations = dict(self.aligner.non_finite)
        return stats

    def _tick(self, now: float, loop: _LoopState, stats: RunStats) -> float | None:
        """One control period: file readings, take a finished chunk, hold or start the next inference."""
        for reading in self.robot.poll():
            self._file(reading)
        t_ref = self.aligner.reference_time()
        busy = self.worker.busy  # read before take(): a result that lands in between waits for the next tick
        result = self.worker.take()
        if result is not None:
            if self.watchdog.observations_fresh(now, t_ref):
                self._apply(result, now, loop, stats, loop.deadline)
            else:  # computed from observations that have since gone stale: never send it
                stats.discarded += 1
        reason = self.watchdog.reason_to_hold(now, t_ref, bool(self.aligner.unusable))
        if reason is not None and not loop.holding:
            self._hold(loop)
        can_infer = reason in (None, "missed_deadlines") and not busy and t_ref > loop.last_t_obs
        if can_infer and loop.remaining(now + self.timing.actuation_latency) <= self.replan_steps:
            window = self.aligner.window(t_ref)
            plan = loop.plan
            loop.deadline = plan.times[-1] - self.timing.actuation_latency if plan is not None and len(plan) else None
            loop.last_t_obs = t_ref
            if self.reactive is not None:
                loop.submitted[t_ref] = self.reactive.observation(window)
            prefix, held_until = self._prefix(plan, t_ref, now) if self.inpaint else (None, None)
            if self.config.inference == "async":
                self.worker.submit(window, t_ref, prefix, held_until)
            else:
                started = self.robot.now()
                result = InferenceResult(self.runner(window, prefix), t_ref, started, self.robot.now(), held_until)
                self._apply(result, self.robot.now(), loop, stats, deadline=None)
        if self.reactive is not None:
            self._react(now, t_ref, loop, stats)
        return t_ref

    def _react(self, now: float, t_ref: float | None, loop: _LoopState, stats: RunStats) -> None:
        """Correct the planned actions still to be sent with the newest observation, and send them again."""
        if loop.plan is None or loop.holding or loop.chunk_obs is None or t_ref is None or t_ref <= loop.reacted_at:
            return
        t0, obs0 = loop.chunk_obs
        pending = loop.plan.after(now + self.timing.actuation_latency + self.timing.margin)
        if t_ref <= t0 or not len(pending):
            return
        newest = self.reactive.observation(self.aligner.window(t_ref))
        corrected = self.reactive.correct(pending.values, (pending.times - t0) / self.dt, obs0, newest,
                                          (t_ref - t0) / self.dt)
        safe = self.config.safety.clamp(ActionPlan(pending.times, corrected),
                                        *rate_reference(loop.plan, pending.times[0]), bounds=self.bounds)
        actions, _ = to_send(safe, now, self.timing)
        if actions:
            self.robot.send(actions)
            stats.corrections.append(np.nan_to_num(np.abs(corrected - pending.values)).max(axis=0))
        loop.reacted_at = t_ref

    def _hold(self, loop: _LoopState) -> None:
        """Hold the arm where it is and forget the plan."""
        self.robot.hold()
        self.blender.reset()
        loop.plan, loop.holding = None, True

    def _prefix(self, plan: ActionPlan | None, t_ref: float,
                now: float) -> tuple[tuple[np.ndarray, np.ndarray] | None, float | None]:
        """((actions, mask) over the new chunk's rows, time of the last held row): the planned actions that
        will have been sent by the time the new chunk is applied, or (None, None) when there are none."""
        if plan is None or not len(plan):
            return None, None
        horizon = self.runner.artifact.noise_shape[0]
        times = t_ref + (np.arange(horizon) - self.timing.action_start + self.timing.n_latency_steps) * self.dt
        values, covered = plan.at(times)
        wait = self.latency_estimate
        if self.config.inference == "async":  # a finished chunk is picked up at the next tick
            wait = math.ceil(wait / self.dt) * self.dt
        lands = now + wait + self.timing.actuation_latency + self.timing.margin
        mask = covered & (times < lands)
        if not mask.any():
            return None, None
        return (np.where(mask[:, None], values, 0.0), mask.astype(np.float32)), float(times[mask][-1])

    def _apply(self, result: InferenceResult, now: float, loop: _LoopState, stats: RunStats,
               deadline: float | None) -> None:
        """Blend a finished chunk into the loop's plan, check it, and send the actions still on time."""
        previous = loop.plan
        stats.chunks += 1
        stats.inference_s.append(result.finished - result.started)
        self.latency_estimate = float(np.percentile(stats.inference_s[-10:], 90))
        missed = deadline is not None and result.finished > deadline
        stats.missed_deadlines += int(missed)
        self.watchdog.deadline(missed)
        if self.estop.triggered:
            return
        bad = int((~np.isfinite(result.chunk).all(axis=-1)).sum())
        if bad:  # a policy that outputs NaN or inf has left its domain: none of its chunk is sent
            log.warning("dropped a chunk with %d non-finite actions; the arm holds", bad)
            stats.non_finite_actions += bad
            self.watchdog.count("non_finite_action")
            self._hold(loop)
            return
        new = chunk_plan(result.chunk, result.t_obs, self.timing, self.n_action_steps)
        start = now + self.timing.actuation_latency + self.timing.margin  # the earliest time still sendable
        stats.dropped += int((new.times < start).sum())
        blended = self.blender.blend(new, start)
        if not len(blended):  # the whole chunk is late: keep what is planned, or hold when nothing is
            stats.late_chunks += 1
            if previous is None or not len(previous.after(now)):
                self.robot.hold()
                loop.holding = True
            return
        safe = self.config.safety.clamp(blended, *rate_reference(previous, blended.times[0]), bounds=self.bounds)
        held = result.held_until
        jump = boundary_jump(previous, safe if held is None else safe.after(held))  # held rows are the old plan
        if jump is not None:
            stats.jumps.append(jump)
        actions, _ = to_send(safe, now, self.timing)
        self.robot.send(actions)
        self.blender.commit(new, safe)
        stats.sent += len(actions)
        loop.plan, loop.holding, loop.sent_time = safe, False, safe.times[0]
        if self.reactive is not None:
            observed = loop.submitted.get(result.t_obs)
            loop.chunk_obs = (result.t_obs, observed) if observed is not None else None
            loop.submitted = {t: values for t, values in loop.submitted.items() if t > result.t_obs}
            loop.reacted_at = result.t_obs


def rate_reference(previous: ActionPlan | None,
                   first: float) -> tuple[tuple[float, np.ndarray] | None, np.ndarray | None]:
    """((time, action) of the last planned action before `first`, its velocity): where rate limits start."""
    if previous is None:
        return None, None
    before = previous.times < first
    if not before.any():
        return None, None
    times, values = previous.times[before], previous.values[before]
    velocity = (values[-1] - values[-2]) / (times[-1] - times[-2]) if len(times) > 1 else None
    return (float(times[-1]), values[-1]), velocity
