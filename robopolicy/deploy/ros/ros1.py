"""The ROS 1 transport's pieces: message classes and times from rospy and Debian's message packages."""

from __future__ import annotations

from robopolicy.deploy.ros.convert import MessageTypes


def ros1_types() -> MessageTypes:
    """MessageTypes for ROS 1 (needs rospy and the sensor / trajectory / geometry message packages)."""
    import rospy
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    return MessageTypes(image=Image, joint_state=JointState, joint_trajectory=JointTrajectory,
                        joint_trajectory_point=JointTrajectoryPoint, pose_stamped=PoseStamped,
                        time=rospy.Time.from_sec, duration=rospy.Duration.from_sec)
