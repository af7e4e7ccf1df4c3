"""Training: the Lightning recipe, augmentations, head warm-up, heads on BirdNET embeddings, pseudo-labels and
self-training."""
