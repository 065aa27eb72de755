"""Observation encoders built from shape_meta: images, depth, point clouds and low-dim vectors."""
