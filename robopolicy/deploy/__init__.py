"""Deployment verbs: export (a checkpoint -> an artifact, using the policy code), evaluating an artifact in its
simulator, and running an artifact on a robot (the runtime with the simulated arm or the ROS bridge)."""
