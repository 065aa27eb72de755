"""`types`: the message classes of ROS 1 (Debian's, marked `ros`) and ROS 2 (the DDS structs, marked `ros2`), so a
test that builds and reads messages through `types` runs once on each."""

from __future__ import annotations

import pytest

from robopolicy.ros.convert import MessageTypes
from tests.ros_graph import ROS_VERSIONS, require_ros


@pytest.fixture(params=ROS_VERSIONS)
def types(request) -> MessageTypes:
    require_ros(request.param)  # skips (fails in CI) the ROS 1 half where rospy is missing
    if request.param == 1:
        from robopolicy.ros.ros1 import ros1_types

        return ros1_types()
    from robopolicy.ros.ros2_messages import ros2_types

    return ros2_types()
