"""Runtime logic against hand-computed cases: observation alignment, action timing, blending, safety,
latency calibration."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from robopolicy.robots.calibrate import estimate_lag, excitation
from robopolicy.robots.interface import Reading
from robopolicy.runtime.alignment import KeySpec, ObservationAligner, TimedBuffer, slerp
from robopolicy.runtime.blending import ChunkBlender, boundary_jump
from robopolicy.runtime.inference import InferenceWorker
from robopolicy.runtime.safety import Box, EmergencyStop, SafetyConfig, Watchdog
from robopolicy.runtime.timing import ActionPlan, TimingConfig, chunk_plan, to_send

DT = 0.1


def aligner() -> ObservationAligner:
    keys = [KeySpec("pos", "eef_pos", (-1, 0), "linear"), KeySpec("img", "camera_rgb", (-1, 0), "nearest"),
            KeySpec("quat", "eef_quat", (0,), "slerp"), KeySpec("xy", "state", (0,), "linear", dims=(0, 2))]
    return ObservationAligner(keys, DT, {"camera": 0.15, "arm": 0.02})


def arm(received: float, x: float) -> Reading:
    angle = x  # a rotation about z by x radians
    quat = np.array([0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2)])
    return Reading("arm", received, {"eef_pos": np.array([x, 2 * x, 0.0]), "eef_quat": quat,
                                     "state": np.array([x, -x, 7.0])})


def test_window_interpolates_low_dim_and_takes_the_nearest_frame_at_capture_times():
    align = aligner()
    for i in range(6):  # arm samples captured at 0.00, 0.05, ..., 0.25 with x = capture time
        align.add(arm(0.02 + 0.05 * i, 0.05 * i))
    for i in range(4):  # frames captured at 0.0, 0.08, 0.16, 0.24 (received 0.15 s later)
        align.add(Reading("camera", 0.15 + 0.08 * i, {"camera_rgb": np.full((2, 2, 3), i, np.uint8)}))
    t_ref = align.reference_time()
    assert t_ref == pytest.approx(0.24)  # the camera's newest capture: nothing is extrapolated
    window = align.window(t_ref)
    np.testing.assert_allclose(window["pos"], [[0.14, 0.28, 0.0], [0.24, 0.48, 0.0]], atol=1e-6)
    assert window["img"][:, 0, 0, 0].tolist() == [2, 3]  # 0.14 is nearest 0.16, 0.24 is a frame
    np.testing.assert_allclose(window["quat"][0], [0, 0, np.sin(0.12), np.cos(0.12)], atol=1e-6)
    np.testing.assert_allclose(window["xy"], [[0.24, -0.24]], atol=1e-6)


def test_inputs_sliced_from_one_store_key_keep_their_own_interpolation():
    keys = [KeySpec("quat", "pose", (0,), "slerp", dims=(3, 7)), KeySpec("pos", "pose", (0,), "linear", dims=(0, 3))]
    align = ObservationAligner(keys, DT, {})
    for t, angle in [(0.0, 0.0), (1.0, np.pi / 2)]:
        align.add(Reading("arm", t, {"pose": np.array([10 * t, 0, 0, 0, 0, np.sin(angle / 2), np.cos(angle / 2)])}))
    window = align.window(0.5)
    np.testing.assert_allclose(window["quat"][0], [0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)], atol=1e-6)
    np.testing.assert_allclose(window["pos"][0], [5.0, 0, 0], atol=1e-6)


def test_slerp_takes_the_short_way_and_keeps_unit_norm():
    q0 = np.array([0.0, 0.0, 0.0, 1.0])
    q1 = -np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])  # 90 degrees about z, opposite sign
    half = slerp(q0, q1, 0.5)
    assert np.linalg.norm(half) == pytest.approx(1.0)
    np.testing.assert_allclose(np.abs(half), [0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)], atol=1e-9)


def test_a_sensor_that_stops_holds_back_the_reference_time_and_shows_as_stale():
    align = aligner()
    align.add(Reading("camera", 0.15, {"camera_rgb": np.zeros((2, 2, 3), np.uint8)}))
    assert align.reference_time() is None  # the arm has not reported yet
    for i in range(20):
        align.add(arm(0.02 + 0.05 * i, 0.05 * i))
    assert align.reference_time() == pytest.approx(0.0)
    assert align.stalest() == ("camera_rgb", pytest.approx(0.0))
    watchdog = Watchdog(SafetyConfig(max_obs_age=0.3))
    assert watchdog.reason_to_hold(now=1.0, newest_capture=align.reference_time()) == "stale_observation"
    assert watchdog.reason_to_hold(now=0.2, newest_capture=align.reference_time()) is None


def test_out_of_order_and_repeated_messages_are_ignored():
    buffer = TimedBuffer(4)
    for t, v in [(0.0, 0.0), (0.2, 2.0), (0.1, 99.0), (0.2, 99.0), (0.3, 3.0)]:
        buffer.add(t, np.array([v]))
    assert list(buffer.times) == [0.0, 0.2, 0.3]
    assert buffer.at(0.1)[0] == pytest.approx(1.0) and buffer.at(-5)[0] == 0.0 and buffer.at(9)[0] == 3.0


def test_actions_get_execution_times_from_the_obs_time_and_leave_early_by_the_actuation_latency():
    config = TimingConfig(dt=DT, action_start=1, n_latency_steps=2, actuation_latency=0.1, margin=0.01)
    chunk = np.arange(16, dtype=float)[:, None] * np.ones((1, 2))
    plan = chunk_plan(chunk, t_obs=10.0, config=config, n_steps=8)
    np.testing.assert_allclose(plan.times, 10.0 + np.arange(2, 10) * DT)  # row 1 -> t_obs + 2 dt
    assert plan.values[0, 0] == 1.0 and len(plan) == 8
    sent, dropped = to_send(plan, now=10.25, config=config)
    # send times are 10.1, 10.2, ..., 10.8; those before now + margin = 10.26 are late
    assert dropped == 2 and sent[0].time == pytest.approx(10.3) and sent[0].value[0] == 3.0
    sent, dropped = to_send(plan, now=11.0, config=config)
    assert sent == [] and dropped == 8


def adopt(blender: ChunkBlender, chunk: ActionPlan, start: float) -> ActionPlan:
    plan = blender.blend(chunk, start)
    blender.commit(chunk, plan)
    return plan


def test_replace_crossfade_and_ensemble_blend_as_specified():
    times = 1.0 + np.arange(4) * 0.125  # exact in binary, so the overlap is exactly two actions
    old, new = ActionPlan(times, np.zeros((4, 1))), ActionPlan(times + 0.25, np.ones((4, 1)))
    for rule, expected in [("replace", [1, 1, 1, 1]), ("crossfade", [1 / 3, 2 / 3, 1, 1]),
                           ("ensemble", [0.5, 0.5, 1, 1])]:
        blender = ChunkBlender(rule, ensemble_coeff=0.0)
        adopt(blender, old, start=0.0)
        plan = adopt(blender, new, start=0.0)
        np.testing.assert_allclose(plan.values[:, 0], expected, err_msg=rule)
        np.testing.assert_allclose(plan.times, new.times)
    weighted = ChunkBlender("ensemble", ensemble_coeff=np.log(3.0))  # weights 1 (older) : 1/3 (newer)
    adopt(weighted, old, start=0.0)
    assert adopt(weighted, new, start=0.0).values[0, 0] == pytest.approx(0.25)
    assert boundary_jump(old, new).tolist() == [1.0] and boundary_jump(None, new) is None


def test_crossfade_ramps_over_the_actions_that_can_still_be_sent():
    times = np.arange(8) * 0.125
    old = ActionPlan(times, times[:, None].copy())  # a ramp
    new = ActionPlan(times, times[:, None] + 0.5)  # the same ramp, offset by 0.5, from the past on
    jumps = {}
    for rule in ("replace", "crossfade"):
        blender = ChunkBlender(rule)
        adopt(blender, old, start=-1.0)
        plan = adopt(blender, new, start=0.25)  # rows before 0.25 can no longer be sent
        assert plan.times[0] == 0.25
        jumps[rule] = boundary_jump(old, plan)
    # steps of the ramp are 0.125; replace adds the whole 0.5 offset to one step, crossfade 1/7 of it to each
    assert jumps["replace"][0] == pytest.approx(0.625) and jumps["crossfade"][0] == pytest.approx(0.125 + 0.5 / 7)
    late = ChunkBlender("ensemble")
    late.blend(new, start=0.0)  # proposed but never sent: not kept
    assert late.plan is None and not late.chunks


def test_safety_clamps_to_the_workspace_and_limits_speed_and_acceleration():
    limits = SafetyConfig(boxes=(Box(0, 2, [-1.0, -1.0], [1.0, 1.0]),), max_velocity=2.0, max_acceleration=10.0)
    plan = ActionPlan(np.array([0.1, 0.2, 0.3]), np.array([[5.0, 0.0, 9.0], [5.0, 0.0, 9.0], [5.0, -5.0, 9.0]]))
    box_only = SafetyConfig(boxes=limits.boxes).clamp(plan, last=None)
    np.testing.assert_allclose(box_only.values, [[1, 0, 9], [1, 0, 9], [1, -1, 9]])
    limited = limits.clamp(plan, last=(0.0, np.zeros(3)))
    # from rest: acceleration allows 1 unit/s at 0.1 s (x += 0.1), then 2 (the speed limit): +0.2, +0.2
    np.testing.assert_allclose(limited.values[:, 0], [0.1, 0.3, 0.5])
    np.testing.assert_allclose(limited.values[:, 1], [0.0, 0.0, -0.1])
    np.testing.assert_allclose(limited.values[:, 2], 9.0)  # dims outside the boxes pass through
    with pytest.raises(ValueError, match="exceeds"):
        Box(0, 1, [1.0], [0.0])
    from_cli = SafetyConfig(boxes=[{"start": 2, "stop": 3, "low": [0.0], "high": [1.0]}])  # as YAML gives it
    assert from_cli.clamp(plan, last=None).values[:, 2].tolist() == [1.0, 1.0, 1.0]


def test_clamp_drops_non_finite_rows_and_keeps_actions_in_the_widened_training_range():
    limits = SafetyConfig(boxes=(Box(0, 1, [-1.0], [1.0]),), max_velocity=2.0, range_margin=0.5)
    bounds = limits.training_bounds({"low": [-1.0, 0.0], "high": [1.0, 2.0]})
    np.testing.assert_allclose(bounds, [[-2.0, -1.0], [2.0, 3.0]])  # half the span beyond each end
    values = np.array([[0.1, 1e30], [np.nan, 0.0], [0.3, -np.inf], [0.5, 1.0]])
    safe = limits.clamp(ActionPlan(np.array([0.1, 0.2, 0.3, 0.4]), values), last=(0.0, np.zeros(2)), bounds=bounds)
    assert np.isfinite(safe.values).all(), safe.values
    # the NaN row is gone (its time too), -inf is a row too: rate limits run over the finite rows only
    np.testing.assert_allclose(safe.times, [0.1, 0.4])
    np.testing.assert_allclose(safe.values, [[0.1, 3.0], [0.5, 1.0]])
    assert SafetyConfig(range_margin=None).training_bounds({"low": [0.0], "high": [1.0]}) is None
    with pytest.raises(ValueError, match="range_margin"):
        SafetyConfig(range_margin=-0.1)


def test_a_reading_with_nan_is_refused_and_marks_its_key_unusable_until_a_finite_one():
    aligned = aligner()
    aligned.add(arm(1.0, 0.1))
    nan = Reading("arm", 1.1, {"eef_pos": np.array([np.nan, 0.0, 0.0]), "eef_quat": np.array([0, 0, 0, 1.0]),
                               "state": np.array([0.0, 0.0, np.inf])})
    aligned.add(nan)
    assert aligned.unusable == {"eef_pos", "state"} and aligned.non_finite == {"eef_pos": 1, "state": 1}
    assert aligned.buffers["eef_pos"].newest == pytest.approx(0.98)  # the NaN value was never filed
    watchdog = Watchdog(SafetyConfig())
    assert watchdog.reason_to_hold(1.1, 1.0, non_finite=bool(aligned.unusable)) == "non_finite_observation"
    aligned.add(arm(1.2, 0.2))
    assert not aligned.unusable and watchdog.reason_to_hold(1.2, 1.18, bool(aligned.unusable)) is None


def test_watchdog_holds_after_consecutive_missed_deadlines():
    watchdog = Watchdog(SafetyConfig(max_missed=2))
    for missed in (True, False, True):
        watchdog.deadline(missed)
    assert watchdog.reason_to_hold(1.0, 1.0) is None
    watchdog.deadline(True)
    assert watchdog.reason_to_hold(1.0, 1.0) == "missed_deadlines"
    assert watchdog.reason_to_hold(1.0, None) == "no_observation"
    assert watchdog.holds == {"missed_deadlines": 1, "no_observation": 1}


class GatedRunner:
    """A runner that returns its window's value as a chunk once `gate` opens, or raises what `error` holds."""

    def __init__(self):
        self.gate, self.error = threading.Event(), None

    def __call__(self, window, prefix=None):
        self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return np.full((4, 2), window["x"][0], np.float32) + (0 if prefix is None else prefix[0])


def test_the_inference_worker_runs_one_window_at_a_time_and_hands_back_results_and_errors():
    ticks = iter(range(100))
    runner = GatedRunner()
    worker = InferenceWorker(runner, clock=lambda: float(next(ticks)))
    worker.submit({"x": np.array([3.0])}, t_obs=7.5, held_until=9.0)
    assert worker.busy and worker.take() is None
    with pytest.raises(RuntimeError, match="already running"):
        worker.submit({"x": np.array([0.0])}, t_obs=8.0)
    runner.gate.set()
    result = worker.wait(timeout=10)
    assert not worker.busy and worker.take() is None  # a result is handed back once
    np.testing.assert_array_equal(result.chunk, np.full((4, 2), 3.0))
    assert (result.t_obs, result.started, result.finished, result.held_until) == (7.5, 0.0, 1.0, 9.0)
    worker.submit({"x": np.array([1.0])}, t_obs=8.0, prefix=(np.ones((4, 2)), np.ones(4)))
    np.testing.assert_array_equal(worker.wait(timeout=10).chunk, np.full((4, 2), 2.0))
    runner.error = ValueError("server said no")
    worker.submit({"x": np.array([1.0])}, t_obs=9.0)
    with pytest.raises(ValueError, match="server said no"):  # raised in the control loop's thread
        worker.wait(timeout=10)
    assert worker.take() is None


def test_emergency_stop_from_another_thread_wakes_the_waiting_loop():
    stop = EmergencyStop()
    threading.Timer(0.05, stop.trigger, args=("operator",)).start()
    assert stop.wait(timeout=5.0) and stop.triggered and stop.reason == "operator"


def test_lag_estimate_finds_the_pure_delay_of_a_slow_second_order_arm():
    dt, delay = 0.05, 0.13
    command_times = np.arange(0.0, 12.0, dt)
    commands = excitation(len(command_times), 2, 0.02, 4, seed=1)
    # a critically damped arm (natural frequency 15 rad/s) following the commands `delay` late, sampled at 20 Hz
    fine = np.arange(0.0, 12.0, 0.001)
    target = commands[np.clip(np.searchsorted(command_times, fine - delay, side="right") - 1, 0, None)]
    position, velocity, omega = np.zeros(2), np.zeros(2), 15.0
    trace = []
    for goal in target:
        velocity = velocity + 0.001 * (omega**2 * (goal - position) - 2 * omega * velocity)
        position = position + 0.001 * velocity
        trace.append(position.copy())
    samples = np.arange(0, len(fine), 50)
    lag, score = estimate_lag(command_times, commands, fine[samples], np.array(trace)[samples], max_lag=0.5)
    # this arm is slow (15 rad/s): its acceleration peaks ~20 ms after a step starts, which the estimate keeps
    assert abs(lag - delay) <= 0.02 + 1e-9 and score > 0.1, (lag, score)


