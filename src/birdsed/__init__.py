"""birdsed: find which bird species call, and when, in audio recordings."""

__version__ = "0.1.0"

SAMPLE_RATE_HZ = 32_000
"""Every recording is decoded and resampled to this rate before anything else."""
