"""Inference and predict: windows -> 5 s rows over long recordings, decisions, and every output of predict."""
