"""robopolicy: robot imitation learning from demonstrations to a real-time runtime."""

__version__ = "0.1.0"
