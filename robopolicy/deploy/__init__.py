"""Export and the real-time runtime; imports nothing from training or policies."""
