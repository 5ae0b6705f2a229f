"""Synthetic datasets in the real on-disk formats, with known ground truth."""
