"""Simulation environments used to generate demonstrations and to evaluate policies.

MuJoCo picks its GL backend when first imported; without a display the default (GLFW) fails,
so unless the user chose one, the simulators here render off-screen with EGL.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
