"""Converted messages travel through a real ROS 1 master between separate node processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.needs import require

require("ros")

from tests.ros_master import running_roscore  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ros]

PUBLISHER = """
import numpy as np, rospy
from trajectory_msgs.msg import JointTrajectory
from robopolicy.ros.convert import joint_trajectory
from robopolicy.ros.ros1 import ros1_types
rospy.init_node("test_publisher")
topic = rospy.Publisher("/arm/command", JointTrajectory, queue_size=1, latch=True)
types = ros1_types()
times = 1000.0 + 0.05 * np.arange(4)
topic.publish(joint_trajectory(types, ["j1", "j2"], times, np.arange(8.0).reshape(4, 2)))
rospy.sleep(5.0)
"""
SUBSCRIBER = """
import json, rospy
from trajectory_msgs.msg import JointTrajectory
from robopolicy.ros.convert import trajectory_to_arrays
rospy.init_node("test_subscriber")
msg = rospy.wait_for_message("/arm/command", JointTrajectory, timeout=20.0)
times, positions = trajectory_to_arrays(msg)
print(json.dumps({"joints": list(msg.joint_names), "times": times.tolist(), "positions": positions.tolist()}))
"""


def test_a_trajectory_goes_through_roscore_with_its_times():
    with running_roscore() as env:
        publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER], env=env, stderr=subprocess.PIPE, text=True)
        try:
            result = subprocess.run([sys.executable, "-c", SUBSCRIBER], env=env, capture_output=True, text=True,
                                    timeout=60)
        finally:
            publisher.kill()
            publisher.wait()
    assert result.returncode == 0, result.stderr[-2000:]
    received = json.loads(result.stdout.strip().splitlines()[-1])
    assert received["joints"] == ["j1", "j2"]
    assert received["times"] == pytest.approx([1000.0, 1000.05, 1000.1, 1000.15], abs=2e-9)
    assert received["positions"] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
