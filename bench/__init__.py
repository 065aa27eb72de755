"""Benchmarks, each printing JSON: run from the repository root as `.venv/bin/python -m bench.NAME [options]`."""
