"""Episode stores, training-window sampling, normalization and point-cloud utilities."""
