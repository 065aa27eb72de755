"""The bridge against the simulated driver node, every node its own process, over both transports: a real
ROS 1 master, and ROS 2 (DDS on loopback, a domain per graph). Observations carry capture-based stamps,
commands go out at their times and move the arm, the e-stop topic stops motion within a control period,
a stalled camera makes the runtime hold, and a run recorded over ROS 2 converts from its bag."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

from robopolicy.settings import CONFIG_DIR
from tests.deploy.test_relative_frame import relative_artifact  # noqa: F401 (a fixture used below)
from tests.needs import require
from tests.ros_graph import ROS_VERSIONS, running_graph, wait_for_topic

require("sim")
pytestmark = [pytest.mark.slow, pytest.mark.sim]
ROOT = Path(__file__).resolve().parents[2]
DT = 0.05
CAMERA_LATENCY = 0.125  # 2.5 periods: camera stamps fall half a period off the arm's
ACTUATION = 0.05
ROBOPOLICY = [sys.executable, "-m", "robopolicy.cli"]
LIFT = ["env.name=robosuite", "env.task=Lift", "env.obs_type=lowdim", "env.controller=absolute"]


@pytest.fixture(scope="module", params=ROS_VERSIONS)
def ros(request) -> int:
    return request.param


@contextmanager
def driver_node(root: Path, ros: int, topic: str, *options: str) -> Iterator[dict]:
    """A ROS graph and a simulated Lift driver node (no jitter) serving until the block ends; waits for `topic`."""
    log = root / "driver.log"
    with running_graph(ros) as env, log.open("w") as stderr:
        driver = subprocess.Popen([*ROBOPOLICY, "robot", "sim-driver", f"ros={ros}", *options, "env.max_steps=100000",
                                   f"latency.camera={CAMERA_LATENCY}", f"actuation_latency={ACTUATION}",
                                   f"out={root / 'driver'}"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=stderr)
        try:
            wait_for_topic(env, topic, driver, log)
            yield {"env": env, "root": root, "ros": ros}
        finally:
            driver.send_signal(signal.SIGINT)
            try:
                driver.wait(20)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()


@pytest.fixture(scope="module")
def graph(ros, tmp_path_factory):
    """The low-dim Lift arm as a driver node (latency.camera=0.125 s), shared by the tests below."""
    with driver_node(tmp_path_factory.mktemp(f"ros{ros}_graph"), ros, "/perception/object_state", "map=sim_lift",
                     *LIFT) as g:
        yield g


def probe(graph, name: str, *args: str, timeout: float = 120.0) -> dict:
    result = subprocess.run([sys.executable, "-m", "tests.ros_probes", name, str(graph["ros"]), *args],
                            env=graph["env"], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.realtime
def test_observations_arrive_stamped_at_capture_plus_latency_in_the_policy_layout(graph):
    readings = probe(graph, "observations", "sim_lift")["readings"]
    arm = [r for r in readings if "robot0_eef_pos" in r["values"]]  # one reading per message: the pose topic's
    fingers = [r for r in readings if "robot0_gripper_qpos" in r["values"]]
    camera = [r for r in readings if r["sensor"] == "camera"]
    assert len(arm) >= 30 and len(camera) >= 30 and abs(len(fingers) - len(arm)) <= 1  # the 2 s window cuts one
    assert {r["sensor"] for r in arm + fingers} == {"arm"} and set(arm[0]["values"]) == {"robot0_eef_pos",
                                                                                         "robot0_eef_rot6d"}
    assert len(fingers[0]["values"]["robot0_gripper_qpos"]) == 2
    assert set(camera[0]["values"]) == {"object"} and len(camera[0]["values"]["object"]) == 10
    arm_stamps = np.array([r["stamp"] for r in arm])
    assert np.median(np.diff(arm_stamps)) == pytest.approx(DT, abs=0.002)
    # stamps are on this computer's ROS clock: a reading is polled a few ms after its stamp
    ages = np.array([r["age"] for r in readings])
    assert ages.min() >= -0.001 and np.percentile(ages, 90) < 0.02
    # camera stamps lag capture by the camera latency: minus it, they fall on the arm's capture grid
    camera_stamps = np.array([r["stamp"] for r in camera])
    offset = np.abs(camera_stamps[:, None] - arm_stamps[None, :]).min(axis=1)
    matched = np.abs(camera_stamps[:, None] - CAMERA_LATENCY - arm_stamps[None, :])
    assert np.median(offset) > 0.02 and np.median(matched.min(axis=1)) < 0.002
    # the object state's grip-site offset agrees with the arm reading captured at the same time
    nearest, close = matched.argmin(axis=1), matched.min(axis=1) < 0.002
    for reading, index in zip(np.array(camera)[close], nearest[close], strict=True):
        obj = np.array(reading["values"]["object"])
        np.testing.assert_allclose(obj[:3] - obj[7:], arm[index]["values"]["robot0_eef_pos"], atol=1e-4)
    rot6d = np.array(arm[-1]["values"]["robot0_eef_rot6d"])
    np.testing.assert_allclose([np.linalg.norm(rot6d[:3]), np.linalg.norm(rot6d[3:]), rot6d[:3] @ rot6d[3:]],
                               [1.0, 1.0, 0.0], atol=1e-5)


def test_camera_images_arrive_as_ros_images_cropped_and_resized_by_the_map(ros, tmp_path):
    topics = yaml.safe_load((CONFIG_DIR / "robot" / "sim_lift_image.yaml").read_text())
    topics["observations"]["agentview_image"].update(crop=[4, 4, 76, 76], resize=[38, 38])
    topics["observations"]["robot0_eye_in_hand_image"]["type"] = "compressed_image"  # the driver sends JPEG
    map_path = tmp_path / "cameras.yaml"
    map_path.write_text(yaml.safe_dump(topics))
    lift_image = [option.replace("lowdim", "image") for option in LIFT]
    with driver_node(tmp_path, ros, "/camera/wrist/image_raw", f"map={map_path}", *lift_image) as images_graph:
        result = probe(images_graph, "images", str(map_path))
    assert result["front"] >= 10 and result["wrist"] >= 10
    assert result["front_shape"] == [38, 38, 3] and result["wrist_shape"] == [84, 84, 3]
    assert result["wrist_dtype"] == "uint8" and result["front_std"] > 10  # a rendered scene, not a blank frame
    # the bridge's image is the driver's rgb8 frame with the map's crop and resize, pixel for pixel
    assert result["front_max_difference"] == 0
    # every frame is its own message; rendering both cameras runs below 20 Hz here, so frames come a period
    # or more apart, except where the simulator catches up on a late step and two go out back to back
    steps = np.array(result["stamp_steps"])
    assert steps.min() > 0 and np.median(steps) >= DT - 0.002


@pytest.mark.realtime
def test_commands_go_out_at_their_times_and_move_the_arm(graph):
    result = probe(graph, "commands", "sim_lift")
    sent = np.array(result["sent_times"])
    assert result["trajectory_joints"] == ["gripper"]
    np.testing.assert_allclose(result["trajectory_times"], sent, atol=1e-6)
    np.testing.assert_allclose(result["trajectory_positions"], result["sent_gripper"])
    stamps, arrivals = np.array(result["pose_stamps"]), np.array(result["pose_arrivals"])
    np.testing.assert_allclose(stamps, sent, atol=1e-6)  # one pose target per action, stamped with its time
    lateness = arrivals - stamps
    assert lateness.min() >= 0.0 and np.percentile(lateness, 90) < 0.01  # each published when due
    assert result["pose_z"][-1] == pytest.approx(result["z_before"] + 0.03, abs=1e-4)
    assert result["z_after"] - result["z_before"] == pytest.approx(0.03, abs=0.01)


@pytest.mark.realtime
def test_the_estop_topic_stops_the_arm_within_one_control_period(graph):
    result = probe(graph, "estop", "sim_lift")
    assert result["halted"] and result["reason"].startswith("e-stop on /robopolicy/estop")
    times, z = np.array(result["heights"]).T
    stop = result["estop"]
    before = (times > stop - 0.5) & (times < stop)
    speed_before = np.polyfit(times[before], z[before], 1)[0]
    assert speed_before > 0.035  # rising: the plan is 0.15 m / 3 s (0.05 m/s), less when late steps are held
    # the first simulator step after the e-stop holds: from the state one period on, the arm only brakes
    # (OSC settles in ~2 periods, 1.6 mm here) where the plan would have raised it 2.5 mm every period
    after = z[times >= stop + DT - 0.001]
    assert len(after) >= 15 and after.max() - after[0] < 0.0025
    late = z[times > stop + 4 * DT]
    assert late.max() - late[0] < 0.0005  # no longer rising (it may sag as it settles)
    # the e-stop published an empty trajectory ("stop here"), and nothing was sent after it
    after = [points for t, points in result["trajectories"] if t > stop]
    assert after and after[0] == 0 and all(points == 0 for points in after)


def test_record_drives_a_ros_robot_and_stores_its_topics_at_capture_times(graph, tmp_path):
    """`record robot=ros`; over ROS 2 a bag recorder beside it writes a ROS 2 bag (rosbags), which converts with the
    same topic map into the same observations and actions."""
    from robopolicy.datasets.store import EpisodeStore

    out = tmp_path / "teleop.zarr"
    bag = None
    if graph["ros"] == 2:
        bag = subprocess.Popen([sys.executable, "-m", "tests.ros_probes", "bag", "2", "sim_lift",
                                str(tmp_path / "bag")],
                               env=graph["env"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert bag.stdout.readline().strip() == "recording", bag.stderr.read()[-3000:]
    result = subprocess.run([*ROBOPOLICY, "record", f"out={out}", "robot=ros", f"robot.ros={graph['ros']}",
                             "robot.map=sim_lift", "episodes=1", "teleop_options.leg_seconds=0.7",
                             f"latency.camera={CAMERA_LATENCY}"],
                            env=graph["env"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    store = EpisodeStore.open(out)
    assert set(store.keys) == {"robot0_eef_pos", "robot0_eef_rot6d", "robot0_gripper_qpos", "object", "action"}
    ticks = store.timestamps("action")[:]
    assert store.n_episodes == 1 and 38 <= len(ticks) <= 43
    lag = ticks - store.timestamps("object")[:]  # camera stamps minus the latency: capture times before each tick
    assert lag.min() >= 0 and lag.max() < DT + 0.01
    z = store.read("robot0_eef_pos")[:, 2]
    assert z[0] - z.min() > 0.03  # the arm followed the stand-in's pose targets through ROS
    if bag is None:
        return
    bag.send_signal(signal.SIGINT)
    stdout, stderr = bag.communicate(timeout=60)
    assert bag.returncode == 0, stderr[-3000:]
    counts = json.loads(stdout.strip().splitlines()[-1])["messages"]
    assert counts["/arm/target_pose"] >= 30 and counts["/gripper/command"] >= 30, counts
    converted = tmp_path / "from_bag.zarr"
    result = subprocess.run([*ROBOPOLICY, "dataset", "convert", "--from", "rosbag", str(tmp_path / "bag"),
                             str(converted), "map=sim_lift"], env=graph["env"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    bag_store = EpisodeStore.open(converted)
    from_bag = bag_store.episode(0)
    recorded = store.episode(0)
    assert len(from_bag["action"]) >= len(ticks)  # a tick per arm pose message, from the first command on
    for key in ("robot0_eef_pos", "robot0_eef_rot6d", "robot0_gripper_qpos"):
        # every arm reading the recording kept is one of the bag's messages, bit for bit
        rows = {row.tobytes() for row in from_bag[key]}
        kept = [row.tobytes() in rows for row in recorded[key][1:]]  # the first tick may precede the first command
        assert all(kept), f"{key}: {kept.count(False)} recorded rows are in no bag message"
    # the bag's pose targets are the recorded actions the bridge sent (rot6d through a quaternion and back), from
    # the recording's first kept tick on: the recorder trims the ticks before every key had a capture, and after a
    # stalled tick a bag tick can still fall before the first kept one and hold the command sent before it
    bag_ticks = bag_store.timestamps("action")[:]
    from_first_kept = bag_ticks >= ticks[0]
    assert (~from_first_kept).sum() <= CAMERA_LATENCY / DT + 1, (bag_ticks[:5], ticks[:5])
    sent = from_bag["action"][from_first_kept, None, :9]
    distance = np.abs(sent - recorded["action"][None, :, :9]).max(axis=2).min(axis=1)
    assert distance.max() < 1e-5, distance


def test_a_stalled_camera_topic_makes_the_runtime_hold(graph, lift_artifact, tmp_path):
    topics = yaml.safe_load((CONFIG_DIR / "robot" / "sim_lift.yaml").read_text())
    topics["observations"]["object"]["topic"] = "/camera/object_state"
    map_path = tmp_path / "relayed_camera.yaml"
    map_path.write_text(yaml.safe_dump(topics))
    relay = subprocess.Popen([sys.executable, "-m", "tests.ros_probes", "relay", str(graph["ros"]),
                              "/perception/object_state", "/camera/object_state"], env=graph["env"], cwd=ROOT,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        result = probe(graph, "watchdog", str(map_path), str(lift_artifact.directory), str(relay.pid))
    finally:
        os.kill(relay.pid, signal.SIGKILL)
        relay.wait()
    ticks = np.array(result["ticks"])
    stalled = result["stalled"]
    assert not ticks[ticks[:, 0] < stalled, 1].any()  # fresh observations: no hold
    # the newest camera capture is CAMERA_LATENCY old when the relay freezes; the watchdog (max_obs_age 0.5 s)
    # holds from when it passes 0.5 s, give or take a period
    first_held = ticks[ticks[:, 1] > 0, 0].min()
    assert first_held - stalled == pytest.approx(0.5 - CAMERA_LATENCY, abs=2 * DT)
    assert ticks[ticks[:, 0] > first_held, 1].all()
    assert result["holds"]["stale_observation"] > 10
    levels = [(t, level, message) for t, level, message in result["diagnostics"]]
    assert levels[0][1] == 0 and levels[0][2] == "running"
    assert any(level == 1 and "stale_observation" in message for t, level, message in levels if t > first_held)


def operator_runs(ros: int, artifact: Path, root: Path, runs: int) -> tuple[list[dict], list[dict]]:
    """`robopolicy deploy ARTIFACT robot=ros` beside the simulated driver playing the operator (per seed it resets the
    scene, starts a run and stops it after 3 s): (the bridge's runs, the driver's episodes)."""
    latency = [f"latency.camera={CAMERA_LATENCY}", f"actuation_latency={ACTUATION}"]
    with running_graph(ros) as env, (root / "driver.log").open("w") as stderr:
        driver = subprocess.Popen([*ROBOPOLICY, "robot", "sim-driver", f"ros={ros}", "map=sim_lift", *LIFT, *latency,
                                   f"episodes={runs}", "max_seconds=3", f"out={root / 'driver'}"], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            bridge = subprocess.run([*ROBOPOLICY, "deploy", str(artifact), "robot=ros", f"robot.ros={ros}",
                                     "robot.map=sim_lift", f"robot.runs={runs}", *latency, f"out={root / 'bridge'}"],
                                    env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert bridge.returncode == 0, bridge.stderr[-3000:]
            assert driver.wait(60) == 0, (root / "driver.log").read_text()[-3000:]
        finally:
            driver.kill()
            driver.wait()
    return (json.loads((root / "bridge" / "results.json").read_text())["runs"],
            json.loads((root / "driver" / "episodes.json").read_text())["episodes"])


@pytest.mark.realtime
def test_deploy_robot_ros_runs_what_the_operator_starts_and_logs_each_run(ros, lift_artifact, tmp_path):
    from robopolicy.datasets.store import EpisodeStore

    runs, episodes = operator_runs(ros, lift_artifact.directory, tmp_path, runs=2)
    assert len(runs) == 2
    for run in runs:
        assert run["ticks"] >= 50 and run["sent"] > 20 and run["stopped"] == ""  # ~3 s at 20 Hz, ended by stop
        assert run["tick_jitter_ms"]["p99"] < 25, run["tick_jitter_ms"]
    assert [e["seed"] for e in episodes] == [100000, 100001]
    # the arm applied the bridge's timed commands at the simulator step nearest their planned time (the median
    # command), and none more than one step off: on this loaded 2-core machine (roscore, driver, bridge and pytest) a
    # trajectory sometimes reaches the driver after its first point's step began, and that point applies one step
    # later (p99 29-49 ms measured with the code before and after the layering change, p50 under 1 ms)
    errors = [e["executed_abs_error_ms"] for e in episodes]
    assert all(e["p50"] <= 1000 * DT / 2 + 5 and e["p99"] <= 1000 * DT + 5 for e in errors), errors
    assert EpisodeStore.open(tmp_path / "bridge" / "run_log.zarr").n_episodes == 2


def test_a_policy_on_relative_trajectories_drives_the_arm_through_the_bridge(
        ros, relative_artifact, tmp_path):  # noqa: F811 (the fixture imported above)
    """The relative frame is inside the artifact: the bridge feeds it the arm's absolute pose topics and sends its
    absolute targets, unchanged."""
    (run,), (episode,) = operator_runs(ros, relative_artifact, tmp_path, runs=1)
    assert run["ticks"] >= 50 and run["sent"] > 20 and run["non_finite_actions"] == 0 and run["stopped"] == ""
    assert episode["steps"] >= 50


def test_bad_robot_options_are_refused_before_any_node_starts(lift_artifact, tmp_path):
    from robopolicy.deploy.session import deploy

    artifact = str(lift_artifact.directory)
    cases = [(["robot=arm"], ValueError, "unknown robot 'arm'"),
             (["robot=ros"], ValueError, "robot.map=NAME"),
             (["robot=ros", "robot.map=no_such_robot"], FileNotFoundError, "one of \\[.*'sim_lift'"),
             (["robot=ros", "robot.map=sim_lift", "robot.ros=3"], ValueError, "robot.ros=3: use robot.ros=1"),
             (["robot=ros", "robot.map=sim_lift", "robot.ros=2", "robot.namespace=a b"], ValueError,
              "'a b' is not a ROS 2 namespace"),
             (["robot=ros", "robot.map=sim_lift", "episodes=3"], ValueError, "\\['episodes'\\] set the simulated arm"),
             (["robot=sim", "robot.map=sim_lift"], ValueError, "robot.map is an option of robot=ros")]
    for overrides, error, message in cases:
        with pytest.raises(error, match=message):
            deploy(artifact, [*overrides, f"out={tmp_path / 'out'}"])
