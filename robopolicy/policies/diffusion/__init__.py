"""Diffusion policies: a denoising backbone over action chunks, conditioned on observation features."""
