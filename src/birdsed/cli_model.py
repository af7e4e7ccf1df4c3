"""Verbs that train, run and score models (registered into birdsed.cli)."""
