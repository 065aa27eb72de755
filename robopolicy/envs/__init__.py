"""Simulation environments used to generate demonstrations and to evaluate policies."""
