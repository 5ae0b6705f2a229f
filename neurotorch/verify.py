"""`verify_path`: read every file of a dataset in full and check what its format and family prove.

Two levels of checks run on each file:

* the format (`neurotorch.io.integrity.check_file`): gzip CRC and length, HDF5 ``fletcher32``
  checksums and every object's attributes, NPZ zip CRCs, table and JSON parses, NIfTI headers;
* the dataset family, for a file that passes the first level: a connectome batch file's header
  (`neurotorch.connectome.batches.read_batch_header`: attributes, ``mask_indices``,
  ``mask_affine`` and shapes agree) and a leadfield NPZ's schema and units
  (`neurotorch.meeg.leadfield_data.load_leadfield_npz`).

Files that pass are recorded as verified, so `BetasStream` and later runs skip them.

::

    from neurotorch.verify import verify_path

    results = verify_path("/data/laion-fmri")
    bad = [r for r in results if r.status == "bad"]
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Callable

from neurotorch.connectome import layout as connectome_layout
from neurotorch.connectome.batches import read_batch_header
from neurotorch.errors import DataNotDownloadedError, DataNotFoundError
from neurotorch.io.files import file_root
from neurotorch.io.integrity import FileCheck, bad_check, check_file, check_files, file_kind
from neurotorch.io.storage import DataRoot
from neurotorch.meeg import layout as meeg_layout
from neurotorch.meeg.leadfield_data import load_leadfield_npz

__all__ = ["verify_file", "verify_path"]

#: ends of the names of leadfield files (``<subject>_fixed_leadfield.npz``, ...)
_LEADFIELD_ENDINGS = tuple(
    meeg_layout.leadfield_name("s", orientation)[1:] for orientation in meeg_layout.ORIENTATIONS
)


def _batch_header(root: DataRoot, relpath: str) -> str:
    header = read_batch_header(root.path(relpath), root.storage_options)
    return (
        f"connectome batch header: {header.n_subjects} subjects × {header.n_timepoints} "
        f"timepoints × {header.n_voxels} voxels"
    )


def _leadfield(root: DataRoot, relpath: str) -> str:
    data = load_leadfield_npz(
        root.path(relpath), storage_options=root.storage_options, require_src_coords=False
    )
    return f"leadfield {data.n_sensors} sensors × {data.n_sources} sources ({data.units})"


def family_check(relpath: str) -> Callable[[DataRoot, str], str] | None:
    """The dataset-family check that applies to a file, from its name (None: format only)."""
    name = posixpath.basename(relpath)
    if file_kind(relpath) == "hdf5" and connectome_layout.batch_index(name) is not None:
        return _batch_header
    if name.endswith(_LEADFIELD_ENDINGS) and name not in _LEADFIELD_ENDINGS:
        return _leadfield
    return None


def verify_file(root: DataRoot, relpath: str) -> FileCheck:
    """Check one file at both levels (see the module docstring).

    Returns
    -------
    FileCheck
        ``status`` is ``"bad"`` with the reader's error as ``detail`` when either level fails.
    """
    result = check_file(root, relpath)
    check = family_check(relpath)
    if not result.ok or check is None:
        return result
    try:
        detail = check(root, relpath)
    except Exception as exc:  # noqa: BLE001 - any failure of the reader is a damaged file
        return bad_check(root, relpath, exc)
    return dataclasses.replace(result, detail=f"{result.detail}; {detail}")


def verify_path(
    source: str | os.PathLike, storage_options: dict | None = None, *, progress: bool | None = None
) -> list[FileCheck]:
    """`verify_file` for every file of a folder (or URL prefix), or for a single file.

    Parameters
    ----------
    source
        A dataset folder, one of its files, or a URL (``s3://bucket/prefix``).
    storage_options
        fsspec options of a URL.
    progress
        Show a progress bar in bytes (default: on unless ``NEUROTORCH_PROGRESS=0``).

    Raises
    ------
    DataNotDownloadedError
        ``source`` does not exist.
    DataNotFoundError
        ``source`` holds no file of a kind neurotorch checks (an empty folder, say).
    """
    root = DataRoot(source, storage_options)
    if root.isdir():
        results = check_files(root, progress=progress, check=verify_file)
    elif root.exists():
        parent, name = file_root(source, storage_options)
        results = check_files(parent, [name], progress=progress, check=verify_file)
    else:
        raise DataNotDownloadedError(
            f"{root.url} does not exist; give a dataset folder, one of its files or a URL."
        )
    if all(result.status == "skipped" for result in results):
        held = f"holds {len(results)} file(s), none of them" if results else "is empty, no file"
        raise DataNotFoundError(
            f"{root.url} {held} of a kind neurotorch checks (.nii.gz, .nii, .h5, .npz, .npy, "
            "tables, JSON); give the folder of a dataset."
        )
    return results
