"""gradforge's NumPy backend: an importable module, vectorized over the sample axis."""
