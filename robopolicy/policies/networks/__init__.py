"""Networks shared by policy families: denoising backbones, embeddings, observation tokens."""
