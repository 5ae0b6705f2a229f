"""Every file name of the connectome family, in one place: the Lacuna batch layout, the outputs of
lesion network mapping and the tree of the synthetic connectome.

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
DESCRIPTION, SOURCE = "description", "source"  # optional text attributes
# written by neurotorch: SHA-256 of the attributes below, the mask indices and the affine
# (`neurotorch.connectome.checksum.metadata_digest`); HDF5 checksums do not cover attributes
METADATA_DIGEST = "metadata_sha256"
DIGESTED_ATTRS = (*REQUIRED_ATTRS, SPACE, DESCRIPTION, SOURCE)

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
    batches = [(match, name) for name in names if (match := _BATCH_FILE.match(name))]
    batches.sort(key=lambda pair: (pair[0].group("prefix"), int(pair[0].group("index"))))
    return [name for _, name in batches]


# -- the outputs of lesion network mapping (`NetworkMapResult.save`, ``neurotorch lnm --out``) ---
# marks a folder neurotorch wrote, listing its files: only such a folder is ever replaced
OUTPUT_MARKER = ".neurotorch-output.json"
PROVENANCE_FILE = "provenance.json"
SUMMARY_TABLE = "summary"
TABLE_FORMATS = {"csv": ",", "tsv": "\t"}  # table format -> column separator


def map_file_name(lesion: str, kind: str) -> str:
    """``"<lesion>_desc-<kind>_map.nii.gz"``: one map of one lesion."""
    return f"{lesion}_desc-{kind}_map.nii.gz"


def mask_file_name(lesion: str, desc: str) -> str:
    """``"<lesion>_desc-<desc>_mask.nii.gz"``: a binary (thresholded) map of one lesion."""
    return f"{lesion}_desc-{desc}_mask.nii.gz"


def group_map_file_name(desc: str) -> str:
    """``"group_desc-<desc>_map.nii.gz"``: a map over all lesions."""
    return f"group_desc-{desc}_map.nii.gz"


def figure_file_name(lesion: str) -> str:
    """``"<lesion>_figure.png"``: the figure of one lesion's network map."""
    return f"{lesion}_figure.png"


def table_file_name(key: str, table_format: str) -> str:
    """``"<key>.csv"`` or ``"<key>.tsv"``."""
    return f"{key}.{table_format}"


# -- the synthetic connectome (`neurotorch.synthetic.connectome`) ------------------------------
BATCH_DIR = "batches"
LESION_DIR = "lesions"
MASK_FILE = "mask.nii.gz"
NETWORKS_FILE = "_groundtruth/networks.nii.gz"
LESIONS_TABLE = "_groundtruth/lesions.csv"
COMPLETE_FILE = "_groundtruth/parameters.json"  # written last: the dataset is complete


def synthetic_lesion_file_name(name: str) -> str:
    """``"<name>_mask.nii.gz"``: a lesion of the synthetic connectome."""
    return f"{name}_mask.nii.gz"
