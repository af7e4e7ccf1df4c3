"""Models: every kind behind the Detector interface, the model directory, and exports."""
