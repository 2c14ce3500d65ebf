"""Training and evaluation data, and training utilities."""
