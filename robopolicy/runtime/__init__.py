"""The real-time runtime: loads an exported artifact, aligns timestamped observations, plans timed action chunks,
blends them and enforces safety limits. It imports no policy, training or simulator code (import-linter checks it),
and no torch for remote inference."""
