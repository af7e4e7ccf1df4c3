"""Training data: data-set layouts (manifest), the prepared store, training items and crops, synthetic data."""
