"""ACT (Action Chunking with Transformers): a conditional VAE whose transformer decoder predicts a
whole action chunk from observation tokens and a style latent; optional temporal ensembling."""
