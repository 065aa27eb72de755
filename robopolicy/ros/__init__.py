"""ROS: message conversion (`convert`, free of any ROS client library), topic maps, transports (ROS 1), the bridge
node that drives a robot, the simulated driver node, and the ROS bag source of `dataset convert`."""
