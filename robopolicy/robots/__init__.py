"""Robots: the RobotInterface every runtime part is written against, the simulated arm (one builder from the
options every verb takes), latency calibration, teleop devices and recording demonstrations from a robot."""
