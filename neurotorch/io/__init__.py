"""File formats and storage: streaming NIfTI, worker-safe HDF5, fsspec roots, atomic writes."""
