"""`robopolicy record`: teleop sources, resampling by capture time, and recording the simulated arm
into a store that survives a kill and resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from robopolicy.datasets.store import EpisodeStore
from robopolicy.robots.record import resample, split_instruction
from robopolicy.robots.teleop import (
    CLOSED,
    OPEN,
    KeyboardTeleop,
    ScriptedTeleop,
    SpaceMouseTeleop,
)

POSE = np.array([0.1, 0.2, 1.0, 1, 0, 0, 0, 1, 0], dtype=np.float64)
LIFT = ["env.name=robosuite", "env.task=Lift", "env.obs_type=lowdim", "env.controller=absolute",
        "latency.camera=0.1", "sensors.camera=[object]"]


def test_keyboard_keys_move_the_target_and_choose_the_verdict():
    read, write = os.pipe()
    with os.fdopen(read) as stream, os.fdopen(write, "w") as keys:
        teleop = KeyboardTeleop(stream, step_m=0.01)
        teleop.begin(POSE)
        keys.write("wwa f")
        keys.flush()
        action = teleop.step(0.05)
        np.testing.assert_allclose(action[:3], [0.12, 0.21, 0.99])
        np.testing.assert_allclose(action[3:9], POSE[3:])
        assert action[9] == CLOSED and not teleop.finished()
        keys.write("\n")
        keys.flush()
        teleop.step(0.05)
        assert teleop.finished()
        keys.write("zo")  # an unknown key is ignored; o: redo
        keys.flush()
        assert teleop.verdict() == "redo"


def test_spacemouse_axes_move_at_speed_and_buttons_toggle_and_end():
    states = iter([SimpleNamespace(x=1.0, y=-0.5, z=0.01, buttons=[1, 0]),
                   SimpleNamespace(x=0.0, y=0.0, z=0.0, buttons=[1, 0]),
                   SimpleNamespace(x=0.0, y=0.0, z=0.0, buttons=[0, 1])])
    teleop = SpaceMouseTeleop(read=lambda: next(states), speed=0.1)
    teleop.begin(POSE)
    action = teleop.step(0.5)
    np.testing.assert_allclose(action[:3], [0.15, 0.175, 1.0])  # z under the deadband
    assert action[9] == CLOSED
    assert teleop.step(0.5)[9] == CLOSED and not teleop.finished()  # a held button toggles once
    teleop.step(0.5)
    assert teleop.finished() and teleop.verdict() == "keep"


def test_the_scripted_stand_in_follows_its_legs_then_ends():
    teleop = ScriptedTeleop(legs=[(0, 0, -0.04, OPEN), (0, 0, 0.02, CLOSED)], leg_seconds=1.0)
    teleop.begin(POSE)
    heights = [teleop.step(0.25)[2] for _ in range(8)]
    np.testing.assert_allclose(heights, [0.99, 0.98, 0.97, 0.96, 0.975, 0.99, 1.005, 1.02])
    assert teleop.finished()


def test_keys_are_resampled_to_the_control_ticks_by_capture_time():
    ticks = np.array([1.0, 1.05, 1.10, 1.15])
    streams = {"arm": [(t, np.array([t])) for t in np.round(np.arange(0.98, 1.2, 0.01), 6)],
               "camera": [(1.03, np.array([103.0])), (1.09, np.array([109.0])), (1.13, np.array([113.0]))]}
    data, timestamps = resample(streams, ticks, np.arange(8, dtype=np.float32).reshape(4, 2))
    # the first tick comes before any camera capture: trimmed
    np.testing.assert_allclose(timestamps["action"], ticks[1:])
    np.testing.assert_allclose(data["camera"][:, 0], [103, 109, 113])
    np.testing.assert_allclose(timestamps["camera"], [1.03, 1.09, 1.13])
    np.testing.assert_allclose(timestamps["arm"], [1.05, 1.10, 1.15], atol=1e-9)
    np.testing.assert_array_equal(data["action"], [[2, 3], [4, 5], [6, 7]])


def test_an_instruction_reading_is_the_episodes_task_not_a_data_key():
    streams = {"arm": [(1.0, np.array([1.0])), (1.1, np.array([2.0]))],
               "instruction": [(0.5, "lift the cube"), (1.05, "lift the red cube")]}
    assert split_instruction(streams) == "lift the red cube"  # the last one given
    assert set(streams) == {"arm"}
    assert split_instruction(streams) is None


@pytest.mark.slow
@pytest.mark.sim
@pytest.mark.realtime
def test_recording_the_simulated_arm_survives_a_kill_and_resumes(tmp_path):
    out = tmp_path / "demos.zarr"
    command = [sys.executable, "-m", "robopolicy.cli", "record", f"out={out}", "episodes=3",
               "teleop_options.leg_seconds=0.7", *LIFT]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and recorder.poll() is None:
        if (out / "meta").exists() and EpisodeStore.open(out).n_episodes >= 1:
            break
        time.sleep(0.2)
    os.kill(recorder.pid, signal.SIGKILL)  # the second episode is under way: recording goes on after the first
    recorder.wait()
    survived = EpisodeStore.open(out, mode="a")  # the killed writer's lock went with it
    assert 1 <= survived.n_episodes < 3  # the episode in progress is lost, nothing else
    survived.close()  # let the resumed recorder write
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    store = EpisodeStore.open(out)
    assert store.n_episodes == 3 and store.attrs["record"]["next_seed"] == 3 and store.fps == 20
    for index in range(3):
        values, rows = store.episode(index), store.episode_slice(index)
        ticks = store.timestamps("action")[rows]
        assert 38 <= len(ticks) <= 43  # 3 legs of 0.7 s at 20 Hz
        np.testing.assert_allclose(np.median(np.diff(ticks)), 0.05, atol=0.002)
        # every key holds its capture just before each tick: the object arrives 0.1 s late yet is time-aligned
        lag = ticks - store.timestamps("object")[rows]
        assert lag.min() >= 0 and lag.max() < 0.05 + 0.01
        # the arm followed the stand-in: down 4 cm, gripper closed, back up
        z = values["robot0_eef_pos"][:, 2]
        assert z[0] - z.min() > 0.03 and z[-1] - z.min() > 0.02
        assert values["action"][-1, 9] == CLOSED and values["action"][0, 9] == OPEN
