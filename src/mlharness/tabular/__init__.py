"""The tabular engine: NumPy models on tabular data (seed 000). Nothing here imports torch."""
