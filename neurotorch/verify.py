"""`verify_path`: read every file of a dataset in full and check what its format and family prove.

Two levels of checks run on each file:

* the format (`neurotorch.io.integrity.check_file`): gzip CRC and length, HDF5 ``fletcher32``
  checksums and every object's attributes, NPZ zip CRCs, table and JSON parses, NIfTI headers;
* the dataset family, for a file that passes the first level: a connectome batch file's header
  (`neurotorch.connectome.batches.read_batch_header`: attributes, ``mask_indices``,
  ``mask_affine`` and shapes agree) and a leadfield NPZ's schema and units
  (`neurotorch.meeg.leadfield_data.load_leadfield_npz`).

Files that pass are recorded as verified (with the outcome of their check), so `BetasStream` and
later runs skip them until they change.

Each file is one unit of work (`VerifyUnit`, `neurotorch.parallel`): ``workers=`` checks files in
local worker processes, ``scheduler=`` on a Dask cluster, ``only=`` one file of a job array.

::

    from neurotorch.verify import verify_path

    results = verify_path("/data/laion-fmri")
    bad = [r for r in results if r.status == "bad"]
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from neurotorch.connectome import layout as connectome_layout
from neurotorch.connectome.batches import read_batch_header
from neurotorch.errors import DataNotDownloadedError, DataNotFoundError, UnitsFailedError
from neurotorch.io.files import file_root
from neurotorch.io.integrity import (
    FileCheck,
    bad_check,
    check_file,
    check_files,
    file_kind,
    record_lock_path,
    recorded_check,
)
from neurotorch.io.storage import DataRoot
from neurotorch.meeg import layout as meeg_layout
from neurotorch.meeg.leadfield_data import load_leadfield_npz
from neurotorch.parallel import UnitResult, run_units

__all__ = ["VerifyUnit", "verify_file", "verify_path", "verify_units"]

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


@dataclasses.dataclass(frozen=True)
class VerifyUnit:
    """One file, read in full and checked at both levels (`verify_file`): a unit of work of
    `neurotorch.parallel`. Its output is the file's record as verified (`neurotorch.io.integrity`),
    so it is done until the file changes (``recheck``: never done)."""

    root: DataRoot
    relpath: str
    recheck: bool = False

    @property
    def key(self) -> str:
        return f"verify/{self.relpath}"

    @property
    def lock_path(self) -> Path:
        return record_lock_path(self.root, self.relpath)

    def done(self) -> bool:
        return not self.recheck and recorded_check(self.root, self.relpath) is not None

    def run(self) -> FileCheck:
        # HDF5 in a child process, recorded when sound
        return check_files(self.root, [self.relpath], progress=False, check=verify_file)[0]


def _listing(source: str | os.PathLike, storage_options: dict | None) -> tuple[DataRoot, list[str]]:
    """The root and the files to verify: every file of a folder, or the one file given."""
    root = DataRoot(source, storage_options)
    if root.isdir():
        return root, list(root.files())
    if root.exists():
        parent, name = file_root(source, storage_options)
        return parent, [name]
    raise DataNotDownloadedError(
        f"{root.url} does not exist; give a dataset folder, one of its files or a URL."
    )


def verify_units(
    source: str | os.PathLike, storage_options: dict | None = None, *, recheck: bool = False
) -> list[VerifyUnit]:
    """The units of `verify_path`: one per file of a kind neurotorch checks, in path order."""
    return _units(*_listing(source, storage_options), recheck)


def _units(root: DataRoot, relpaths: list[str], recheck: bool) -> list[VerifyUnit]:
    return [VerifyUnit(root, rel, recheck) for rel in relpaths if file_kind(rel) != "other"]


def _outcome(unit: VerifyUnit, result: UnitResult) -> FileCheck:
    if result.status == "ran":
        return result.value
    if result.status == "skipped":
        recorded = recorded_check(unit.root, unit.relpath)
        if recorded is not None:
            return recorded
        return verify_file(unit.root, unit.relpath)  # changed again since it was checked
    crash = OSError(f"checking it failed in its worker ({result.error})")
    return bad_check(unit.root, unit.relpath, crash)


def verify_path(
    source: str | os.PathLike,
    storage_options: dict | None = None,
    *,
    progress: bool | None = None,
    recheck: bool = False,
    workers: int | None = None,
    scheduler: Any = None,
    only: Iterable[int] | None = None,
) -> list[FileCheck]:
    """`verify_file` for every file of a folder (or URL prefix), or for a single file.

    Files recorded as verified (by an earlier run, unchanged since) are not read again; their
    recorded outcome is returned.

    Parameters
    ----------
    source
        A dataset folder, one of its files, or a URL (``s3://bucket/prefix``).
    storage_options
        fsspec options of a URL.
    progress
        Show a progress bar (default: on unless ``NEUROTORCH_PROGRESS=0``).
    recheck
        Read every file again, also those recorded as verified.
    workers, scheduler, only
        Where the units (one per file, `verify_units`) run: see `neurotorch.parallel.run_units`.
        With ``only``, the outcomes of those units alone are returned.

    Raises
    ------
    DataNotDownloadedError
        ``source`` does not exist.
    DataNotFoundError
        ``source`` holds no file of a kind neurotorch checks (an empty folder, say).
    """
    root, relpaths = _listing(source, storage_options)
    units = _units(root, relpaths, recheck)
    try:
        ran = run_units(
            units, workers=workers, scheduler=scheduler, only=only, progress=progress, desc="verify"
        )
    except UnitsFailedError as failed:  # a worker died on a file: that file is bad
        ran = failed.results
    by_key = {unit.key: unit for unit in units}
    checked = {by_key[r.key].relpath: _outcome(by_key[r.key], r) for r in ran}
    if only is not None:
        return list(checked.values())
    results = [checked.get(relpath) or check_file(root, relpath) for relpath in relpaths]
    if all(result.status == "skipped" for result in results):
        held = f"holds {len(results)} file(s), none of them" if results else "is empty, no file"
        raise DataNotFoundError(
            f"{root.url} {held} of a kind neurotorch checks (.nii.gz, .nii, .h5, .npz, .npy, "
            "tables, JSON); give the folder of a dataset."
        )
    return results
