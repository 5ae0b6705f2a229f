"""Every name of the Lacuna connectome batch layout, in one place.

A connectome is a folder of HDF5 batch files ``<prefix>_chunk_000.h5``, ``..._001.h5``, ... each
holding the resting-state time series of a group of subjects inside one brain mask. Lacuna's
second converter (``lacuna.utils.create_connectome_batches``) names them
``connectome_batch_000.h5``, ... and writes no ``space`` attribute; both are read.
"""

from __future__ import annotations

import re

DEFAULT_PREFIX = "gsp1000"
DEFAULT_SPACE = "MNI152NLin6Asym"
UNKNOWN_SPACE = "unknown"  # the space of files without a ``space`` attribute, unless given

TIMESERIES = "timeseries"  # (n_subjects_in_file, n_timepoints, n_voxels) float32
# (n_voxels, 3) integer voxel indices in C order; older files store (3, n_voxels)
MASK_INDICES = "mask_indices"
MASK_AFFINE = "mask_affine"  # (4, 4) voxel -> world (mm)
SUBJECT_IDS = "subject_ids"  # optional (n_subjects_in_file,) strings, written by neurotorch

REQUIRED_DATASETS = (TIMESERIES, MASK_INDICES, MASK_AFFINE)
REQUIRED_ATTRS = ("n_subjects", "n_timepoints", "n_voxels", "mask_shape")
SPACE = "space"  # optional attribute, e.g. "MNI152NLin6Asym"

GZIP_LEVEL = 1

_BATCH_FILE = re.compile(r"^(?P<prefix>.+)_(?:chunk|batch)_(?P<index>\d+)\.h5$")


def batch_file_name(index: int, prefix: str = DEFAULT_PREFIX) -> str:
    """``"gsp1000_chunk_003.h5"`` for batch 3."""
    return f"{prefix}_chunk_{index:03d}.h5"


def batch_index(name: str) -> int | None:
    """The batch number in a batch file name, or ``None`` if the name is not a batch file."""
    match = _BATCH_FILE.match(name)
    return int(match.group("index")) if match else None


def sorted_batch_names(names: list[str]) -> list[str]:
    """The batch file names among ``names``, ordered by batch number."""
    batches = [name for name in names if batch_index(name) is not None]
    return sorted(
        batches, key=lambda name: (_BATCH_FILE.match(name).group("prefix"), batch_index(name))
    )
