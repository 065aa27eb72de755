"""ROS bridge: message conversion (`convert`, free of any ROS client library) and the ROS 1 transport."""
