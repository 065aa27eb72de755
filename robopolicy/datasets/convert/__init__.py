"""Converters from other demonstration formats into an episode store (one module per format)."""
