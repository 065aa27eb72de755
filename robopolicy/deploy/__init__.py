"""Export (`export.py`, which runs where the checkpoint is and uses the policy code) and the real-time
runtime (everything else), which imports nothing from training or policies, and no torch for remote inference."""
