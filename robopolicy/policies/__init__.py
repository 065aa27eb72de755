"""Policies: observation encoders plus action heads behind one Policy API (see ARCHITECTURE.md)."""
