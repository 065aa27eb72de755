"""Converted messages travel between separate node processes through each transport: a real ROS 1
master, and ROS 2 over DDS on loopback; a latched topic reaches a subscriber that joins later."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.ros_graph import ROS_VERSIONS, running_graph

pytestmark = pytest.mark.slow

PUBLISHER = """
import sys, time
import numpy as np
from robopolicy.ros.convert import joint_trajectory
from robopolicy.ros.transport import open_transport
transport = open_transport(int(sys.argv[1]), "test_publisher")
topic = transport.publisher("/arm/command", "joint_trajectory", qos="latched")
times = 1000.0 + 0.05 * np.arange(4)
topic.publish(joint_trajectory(transport.types, ["j1", "j2"], times, np.arange(8.0).reshape(4, 2)))
print("published", flush=True)
time.sleep(30.0)
"""
SUBSCRIBER = """
import json, sys, threading
from robopolicy.ros.convert import trajectory_to_arrays
from robopolicy.ros.transport import open_transport
transport = open_transport(int(sys.argv[1]), "test_subscriber")
received, got = [], threading.Event()
transport.subscribe("/arm/command", "joint_trajectory", lambda msg: (received.append(msg), got.set()), qos="latched")
assert got.wait(20.0), "no trajectory within 20 s"
msg = received[0]
times, positions = trajectory_to_arrays(msg)
print(json.dumps({"joints": list(msg.joint_names), "times": times.tolist(), "positions": positions.tolist()}))
transport.shutdown("done")
"""


@pytest.mark.parametrize("ros", ROS_VERSIONS)
def test_a_latched_trajectory_reaches_a_later_node_with_its_times(ros):
    with running_graph(ros) as env:
        publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(ros)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        try:
            assert publisher.stdout.readline().strip() == "published", publisher.stderr.read()[-2000:]
            result = subprocess.run([sys.executable, "-c", SUBSCRIBER, str(ros)], env=env, capture_output=True,
                                    text=True, timeout=60)
        finally:
            publisher.kill()
            publisher.wait()
    assert result.returncode == 0, result.stderr[-2000:]
    received = json.loads(result.stdout.strip().splitlines()[-1])
    assert received["joints"] == ["j1", "j2"]
    assert received["times"] == pytest.approx([1000.0, 1000.05, 1000.1, 1000.15], abs=2e-9)
    assert received["positions"] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
