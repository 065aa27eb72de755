"""Flow-matching policies: rectified flow on action chunks, with Euler or adaptive-step sampling."""
