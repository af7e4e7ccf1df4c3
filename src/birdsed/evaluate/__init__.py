"""Scoring against truth: metrics, evaluate, threshold tuning, the HTML report."""
