"""One-step policies distilled from a trained diffusion or flow teacher (consistency distillation)."""
