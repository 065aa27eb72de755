"""ROS message latency, ROS 1 vs ROS 2, on loopback: publish to subscriber callback, p50 / p99.

Two node processes per transport and message: a publisher stamps each message with the wall clock just
before publishing (so serialization counts), a subscriber takes the wall clock in its callback; both run
on this machine's clock. Messages: a 7-joint JointState at 100 Hz and a 480x640 rgb8 Image at 20 Hz,
through robopolicy's transports (ROS 1: rospy and a roscore; ROS 2: DDS on `lo`, a domain of its own).
With --lift CHECKPOINT it then runs examples/ros_lift.sh over each transport (the Lift policy, simulated
driver and bridge each its own process, latency matched) and adds its summaries.
Run: .venv/bin/python -m bench.ros [--count 400] [--lift CHECKPOINT --episodes 24]; prints JSON.
The ROS graph helpers come from tests/ros_graph.py (a roscore on a free port, a loopback DDS domain).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from tests.ros_graph import running_graph

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = {"joint_state_7": {"kind": "joint_state", "hz": 100.0}, "image_480x640_rgb8": {"kind": "image", "hz": 20.0}}
TOPIC = "/bench/latency"


def build(transport, name: str, stamp: float):
    """The message `name` stamped `stamp`."""
    from robopolicy.ros.convert import array_to_image, joint_state

    if MESSAGES[name]["kind"] == "joint_state":
        return joint_state(transport.types, [f"joint{i}" for i in range(7)], np.linspace(-1, 1, 7), stamp)
    return array_to_image(transport.types, np.full((480, 640, 3), 128, np.uint8), stamp)


def publish(ros: int, name: str, count: int) -> None:
    """Wait for the subscriber, then publish `count` messages at the message's rate, each stamped as it goes."""
    from robopolicy.ros.transport import open_transport

    transport = open_transport(ros, "bench_publisher")
    publisher = transport.publisher(TOPIC, MESSAGES[name]["kind"])
    deadline = time.monotonic() + 30
    while publisher.subscribers() == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("no subscriber within 30 s")
        time.sleep(0.05)
    time.sleep(1.0)  # let the connection settle (ROS 1: TCP set-up; ROS 2: the reader's discovery of us)
    period = 1.0 / MESSAGES[name]["hz"]
    start = time.monotonic()
    for index in range(count):
        time.sleep(max(0.0, start + index * period - time.monotonic()))
        publisher.publish(build(transport, name, time.time()))
    time.sleep(1.0)
    transport.shutdown("bench done")


def subscribe(ros: int, name: str, count: int) -> None:
    """Print one JSON line: each message's latency (callback time minus its stamp), in ms."""
    from robopolicy.ros.convert import stamp_seconds
    from robopolicy.ros.transport import open_transport

    transport = open_transport(ros, "bench_subscriber")
    latencies: list[float] = []
    done = threading.Event()

    def on_message(msg) -> None:
        latencies.append(1000 * (time.time() - stamp_seconds(msg.header.stamp)))
        if len(latencies) >= count:
            done.set()

    transport.subscribe(TOPIC, MESSAGES[name]["kind"], on_message)
    print("ready", flush=True)
    done.wait(count / MESSAGES[name]["hz"] + 60)
    print(json.dumps(latencies), flush=True)
    transport.shutdown("bench done")


def measure(ros: int, name: str, count: int) -> dict[str, float]:
    """Latency percentiles of `count` messages `name` over ROS `ros` (publisher, subscriber: processes of their own)."""
    with running_graph(ros) as env:
        env = {**env, "OMP_NUM_THREADS": "1"}
        node = [sys.executable, "-m", "bench.ros", "--node"]
        subscriber = subprocess.Popen([*node, "subscribe", str(ros), name, str(count)], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, text=True)
        try:
            assert subscriber.stdout.readline().strip() == "ready"
            subprocess.run([*node, "publish", str(ros), name, str(count)], env=env, cwd=ROOT, check=True,
                           timeout=count / MESSAGES[name]["hz"] + 90)
            latencies = np.array(json.loads(subscriber.stdout.readline()))
        finally:
            subscriber.kill()
            subscriber.wait()
    return {"received": len(latencies), "sent": count, "p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "p99_ms": round(float(np.percentile(latencies, 99)), 3), "max_ms": round(float(latencies.max()), 3)}


def lift(checkpoint: str, episodes: int, ros: int) -> dict:
    """examples/ros_lift.sh over ROS `ros`: its JSON summary."""
    result = subprocess.run(["bash", "examples/ros_lift.sh", checkpoint, str(episodes), str(ros)], cwd=ROOT,
                            capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=400, help="messages per measurement")
    parser.add_argument("--lift", default="", help="a Lift low-dim checkpoint: also run examples/ros_lift.sh")
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--node", nargs=4, metavar=("ROLE", "ROS", "MESSAGE", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        role, ros, name, count = args.node
        {"publish": publish, "subscribe": subscribe}[role](int(ros), name, int(count))
        return
    results: dict = {"count": args.count, "latency": {}}
    for name in MESSAGES:
        row = {f"ros{ros}": measure(ros, name, args.count) for ros in (1, 2)}
        row["p50_ratio_ros2_over_ros1"] = round(row["ros2"]["p50_ms"] / row["ros1"]["p50_ms"], 2)
        results["latency"][name] = row
    if args.lift:
        results["lift"] = {f"ros{ros}": lift(args.lift, args.episodes, ros) for ros in (1, 2)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
