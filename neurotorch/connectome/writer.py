"""Write one connectome batch file in the Lacuna layout, atomically."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

from neurotorch._options import check_bool, check_option
from neurotorch.connectome import layout
from neurotorch.connectome.checksum import metadata_digest, with_fletcher32
from neurotorch.errors import ParameterError, ShapeMismatchError
from neurotorch.io.atomic import atomic_path

# how mask_indices are stored: (n_voxels, 3) as neurotorch writes them, (3, n_voxels) as older files
INDICES_LAYOUTS = ("rows", "columns")

try:  # ISA-L deflates an order of magnitude faster than zlib; both write standard zlib streams
    from isal.isal_zlib import compress as _deflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    from zlib import compress as _deflate


def write_batch(
    path: str | os.PathLike,
    subject_series: Iterable[np.ndarray],
    subject_ids: Sequence[str],
    mask_indices: np.ndarray,
    mask_affine: np.ndarray,
    mask_shape: tuple[int, int, int],
    n_timepoints: int,
    space: str | None = layout.DEFAULT_SPACE,
    description: str = "",
    source: str = "",
    indices_layout: str = "rows",
    compress: bool = True,
) -> Path:
    """Write a batch file; the file appears only once it is complete.

    Each subject is one HDF5 chunk (1, n_timepoints, n_voxels), deflated at level 1 and written
    directly; any HDF5 reader inflates it with the standard gzip filter. Every dataset carries
    HDF5's Fletcher-32 checksum, which h5py (and `ConnectomeBatches`) verify on each read.

    Parameters
    ----------
    path
        Destination ``.h5`` file.
    subject_series
        One (n_timepoints, n_voxels) array per subject, consumed one at a time (memory: one subject).
    subject_ids
        One id per subject, stored as the optional ``subject_ids`` dataset.
    mask_indices
        (n_voxels, 3) voxel indices of the mask in C order.
    mask_affine, mask_shape
        The mask's RAS+ affine and 3-D shape.
    n_timepoints
        Timepoints per subject.
    indices_layout
        ``"rows"`` stores ``mask_indices`` as (n_voxels, 3); ``"columns"`` as (3, n_voxels) like older
        files.
    compress
        ``False`` stores the time series without deflate (still checksummed).
    """
    path = Path(path)
    check_option("indices_layout", indices_layout, INDICES_LAYOUTS)
    check_bool("compress", compress)
    mask_indices = np.asarray(mask_indices, dtype=np.int32)
    n_subjects, n_voxels = len(subject_ids), len(mask_indices)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            series = f.create_dataset(
                layout.TIMESERIES,
                shape=(n_subjects, n_timepoints, n_voxels),
                dtype=np.float32,
                chunks=(1, n_timepoints, n_voxels),
                compression="gzip" if compress else None,
                compression_opts=layout.GZIP_LEVEL if compress else None,
                fletcher32=True,
            )
            written = 0
            for row, data in enumerate(subject_series):
                values = np.ascontiguousarray(data, dtype="<f4")
                if values.shape != (n_timepoints, n_voxels):
                    raise ShapeMismatchError(
                        f"{path}: subject {row} ({subject_ids[row]}) has shape {values.shape}, "
                        f"expected ({n_timepoints}, {n_voxels}) (timepoints, mask voxels)."
                    )
                payload = values.tobytes()
                if compress:
                    payload = _deflate(payload, layout.GZIP_LEVEL)
                series.id.write_direct_chunk((row, 0, 0), with_fletcher32(payload))
                written += 1
            if written != n_subjects:
                raise ParameterError(
                    f"{path}: got {written} subject series for {n_subjects} subject ids; give one "
                    "series per id."
                )
            metadata = {
                layout.MASK_INDICES: mask_indices if indices_layout == "rows" else mask_indices.T,
                layout.MASK_AFFINE: np.asarray(mask_affine, dtype=np.float64),
                layout.SUBJECT_IDS: np.array(list(subject_ids), dtype="S"),
            }
            for key, data in metadata.items():
                f.create_dataset(key, data=data, fletcher32=True)  # h5py chunks it
            attributes = {
                "n_subjects": n_subjects,
                "n_timepoints": n_timepoints,
                "n_voxels": n_voxels,
                "mask_shape": np.asarray(mask_shape, dtype=np.int64),
                layout.DESCRIPTION: description,
                layout.SOURCE: source,
            }
            if space is not None:
                attributes[layout.SPACE] = space
            f.attrs.update(attributes)
            digest = metadata_digest(attributes, mask_indices, mask_affine)
            f.attrs[layout.METADATA_DIGEST] = digest
    return path
