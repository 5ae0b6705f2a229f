"""Integrity of data files: full-pass checks and the record of files already verified.

`check_file` reads a file in full and checks what its format can prove: the CRC-32 and length
trailer of every gzip member (``.nii.gz`` and any other ``.gz``), every HDF5 dataset read through
h5py's filter pipeline (which verifies ``fletcher32`` checksums where the writer stored them), the
CRC-32 of every NPZ member, the parse of TSV/CSV/JSON tables, and the size a NIfTI or ``.npy``
header implies. A file whose format carries no checksum (plain ``.nii``, ``.npy``, tables,
unfiltered HDF5) is reported as ``"no checksum"``: it is readable and complete, but flipped bytes
inside it cannot be detected.

A file that passes is recorded in the cache (``<NEUROTORCH_CACHE>/verified/``), keyed by its full
path or URL, its size and its version (for local files size, modification time, inode and change
time, see `neurotorch.io.storage.local_version`: a rewrite with the modification time restored
changes it; the ETag for remote ones), so that `verify_before_use` reads each file once in full, on
first use, and never again until the file changes.

HDF5 files are read in a child process (`check_files`): the HDF5 library can crash the process on
damaged metadata, and such a file must come out ``"bad"``, not end the run. A daemonic process
(Dask's default worker) may not start one; it reads the file itself, and a crash ends that worker
(Dask retries the unit elsewhere, then reports it failed, see `neurotorch.parallel`). The dataset-aware
checks on top of these (batch headers, leadfields) are in `neurotorch.verify`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from filelock import FileLock
from tqdm.auto import tqdm

from neurotorch._options import check_option
from neurotorch.config import cache_dir, show_progress
from neurotorch.errors import CorruptFileError, FormatError, NeurotorchError
from neurotorch.io.atomic import write_json
from neurotorch.io.inflate import SequentialReader
from neurotorch.io.nifti import NiftiHeader, read_header_from
from neurotorch.io.seek_index import build_index, can_seek
from neurotorch.io.storage import DataRoot

__all__ = [
    "VERIFY_MODES",
    "FileCheck",
    "check_file",
    "check_files",
    "is_verified",
    "record_verified",
    "record_lock_path",
    "recorded_check",
    "verify_before_use",
]

#: ``"first-use"`` reads an unverified file in full before serving from it; ``"off"`` does not
VERIFY_MODES = ("first-use", "off")
RECORD_DIR = "verified"
_HDF5_SLAB_BYTES = 1 << 26
_log = logging.getLogger(__name__)
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}

#: how each kind of file is checked, by the end of its name
_KINDS = (
    (".nii.gz", "nifti-gzip"),
    (".gz", "gzip"),
    (".nii", "nifti"),
    (".h5", "hdf5"),
    (".hdf5", "hdf5"),
    (".npz", "npz"),
    (".npy", "npy"),
    (".tsv", "table"),
    (".csv", "table"),
    (".json", "json"),
)


@dataclass(frozen=True)
class FileCheck:
    """The outcome of `check_file` for one file.

    Attributes
    ----------
    path
        Path relative to the data root.
    kind
        ``"nifti-gzip"``, ``"gzip"``, ``"nifti"``, ``"hdf5"``, ``"npz"``, ``"npy"``, ``"table"``,
        ``"json"`` or ``"other"`` (not checked).
    status
        ``"verified"`` (a checksum covers every byte of content and matched), ``"no checksum"``
        (complete and readable, but the format carries no checksum), ``"skipped"`` (a kind of file
        that is not checked) or ``"bad"``.
    detail
        What was checked, or what is wrong.
    error
        The error a reader would raise for this file (``status == "bad"`` only).
    """

    path: str
    kind: str
    status: str
    detail: str
    error: Exception | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """Whether nothing wrong was found."""
        return self.status != "bad"


def file_kind(relpath: str) -> str:
    """The kind of check that applies to a file, from its name (see `FileCheck.kind`)."""
    name = relpath.lower()
    return next((kind for suffix, kind in _KINDS if name.endswith(suffix)), "other")


def _corrupt(name: str, detail: str) -> CorruptFileError:
    return CorruptFileError(
        f"{name} is corrupt: {detail}. Download or copy the file again (a partial or damaged "
        "transfer is the usual cause)."
    )


def _check_affine(header: NiftiHeader, name: str) -> None:
    """The voxel-to-world matrix of a NIfTI header is finite and invertible."""
    affine = header.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise FormatError(
            f"{name} has a NIfTI header whose affine is not a finite, invertible matrix "
            f"({affine.tolist()}); the header is damaged. Download or copy the file again."
        )


def _check_gzip(root: DataRoot, relpath: str, nifti: bool) -> str:
    """Inflate every member, so that each CRC-32 and length trailer is compared."""
    name = root.path(relpath)
    with root.open(relpath) as handle, SequentialReader(handle, name=name) as reader:
        if not reader.compressed:
            raise _corrupt(name, "the name ends in .gz but the content is not gzip-compressed")
        needed = 0
        if nifti:
            header = read_header_from(reader)
            _check_affine(header, name)
            needed = header.vox_offset + header.n_volumes * header.volume_nbytes
        reader.finish()
        if reader.position < needed:
            raise _corrupt(
                name,
                f"its header needs {needed} bytes of image data but it holds {reader.position}",
            )
    return "gzip CRC-32 and length of every member"


def _check_nifti(root: DataRoot, relpath: str) -> str:
    name = root.path(relpath)
    with root.open(relpath) as handle, SequentialReader(handle, name=name) as reader:
        header = read_header_from(reader)
    _check_affine(header, name)
    needed = header.vox_offset + header.n_volumes * header.volume_nbytes
    size = root.size(relpath)
    if size < needed:
        raise _corrupt(name, f"its header needs {needed} bytes but the file has {size}")
    return "complete (uncompressed NIfTI has no checksum)"


def _read_dataset(dataset: h5py.Dataset) -> None:
    """Read every element (through the filter pipeline) in slabs of bounded size."""
    if dataset.shape is None or dataset.size == 0:
        return
    if dataset.ndim == 0:
        dataset[()]
        return
    row_bytes = max(1, dataset.dtype.itemsize * dataset.size // dataset.shape[0])
    step = max(1, _HDF5_SLAB_BYTES // row_bytes)
    for start in range(0, dataset.shape[0], step):
        dataset[start : start + step]


def _check_hdf5(root: DataRoot, relpath: str) -> tuple[str, str]:
    """Read every object's attributes and every dataset in full (through the filter pipeline)."""
    objects: list[h5py.Group | h5py.Dataset] = []
    with h5py.File(root.local_path(relpath), "r") as handle:
        handle.visititems(lambda _, obj: objects.append(obj))
        for obj in [handle, *objects]:
            dict(obj.attrs)
        datasets = [obj for obj in objects if isinstance(obj, h5py.Dataset)]
        for dataset in datasets:
            _read_dataset(dataset)
        unchecked = [d.name for d in datasets if d.ndim and d.size and not d.fletcher32]
        n_data = sum(1 for d in datasets if d.ndim and d.size)
    if n_data and not unchecked:
        return "verified", f"{len(datasets)} dataset(s); fletcher32 checksums match"
    if len(unchecked) == n_data:
        return "no checksum", f"{len(datasets)} dataset(s) read; no fletcher32 checksums"
    return "no checksum", f"read; no fletcher32 checksum on {', '.join(unchecked)}"


def _check_npz(root: DataRoot, relpath: str) -> str:
    name = root.path(relpath)
    try:
        with root.open(relpath) as handle, zipfile.ZipFile(handle) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as exc:
        raise _corrupt(name, f"not a readable zip archive ({exc})") from exc
    if bad is not None:
        raise _corrupt(name, f"the member {bad} fails its zip CRC-32")
    return "zip CRC-32 of every member"


def _check_npy(root: DataRoot, relpath: str) -> str:
    name = root.path(relpath)
    with root.open(relpath) as handle:
        try:
            read_header = _NPY_HEADER_READERS.get(np.lib.format.read_magic(handle))
            if read_header is None:
                raise ValueError("unsupported .npy format version")
            shape, _, dtype = read_header(handle)
        except ValueError as exc:
            raise _corrupt(name, f"not a readable .npy file ({exc})") from exc
        needed = handle.tell() + int(np.prod(shape)) * dtype.itemsize
    size = root.size(relpath)
    if size != needed:
        raise _corrupt(name, f"its header implies {needed} bytes but the file has {size}")
    return "complete (.npy has no checksum)"


def _check_table(root: DataRoot, relpath: str) -> str:
    name = root.path(relpath)
    sep = "\t" if relpath.lower().endswith(".tsv") else ","
    try:
        with root.open(relpath) as handle:
            table = pd.read_csv(handle, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise FormatError(f"{name} cannot be parsed as a table ({exc}).") from exc
    return f"parsed, {len(table)} rows × {table.shape[1]} columns (tables have no checksum)"


def _check_json(root: DataRoot, relpath: str) -> str:
    name = root.path(relpath)
    try:
        with root.open(relpath) as handle:
            json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{name} is not valid JSON ({exc}).") from exc
    return "parsed (JSON has no checksum)"


def check_file(root: DataRoot, relpath: str) -> FileCheck:
    """Read one file in full and check what its format can prove (see the module docstring).

    Parameters
    ----------
    root
        The data root (local folder or URL).
    relpath
        The file, relative to ``root``.

    Returns
    -------
    FileCheck
        ``status`` is ``"bad"`` with the error message as ``detail`` when the file is damaged; any
    failure of a format library on it (a damaged zip directory, HDF5 object header or attribute)
    counts as damage.
    """
    kind = file_kind(relpath)
    try:
        if kind in ("nifti-gzip", "gzip"):
            status, detail = "verified", _check_gzip(root, relpath, nifti=kind == "nifti-gzip")
        elif kind == "hdf5":
            status, detail = _check_hdf5(root, relpath)
        elif kind == "npz":
            status, detail = "verified", _check_npz(root, relpath)
        elif kind == "other":
            status, detail = "skipped", "not a format neurotorch checks"
        else:
            check = {"nifti": _check_nifti, "npy": _check_npy, "table": _check_table}
            status, detail = "no checksum", check.get(kind, _check_json)(root, relpath)
    except Exception as exc:  # noqa: BLE001 - whatever a format library raises on a damaged file
        return bad_check(root, relpath, exc)
    return FileCheck(relpath, kind, status, detail=detail)


def bad_check(root: DataRoot, relpath: str, exc: Exception) -> FileCheck:
    """The ``"bad"`` outcome of a file whose check raised ``exc``; an error that is not one of
    neurotorch's becomes a `CorruptFileError` naming the file."""
    if not isinstance(exc, NeurotorchError):
        exc = _corrupt(root.path(relpath), f"reading it failed ({type(exc).__name__}: {exc})")
    return FileCheck(relpath, file_kind(relpath), "bad", detail=str(exc), error=exc)


Check = Callable[[DataRoot, str], FileCheck]


class _ChildProcess:
    """Runs checks in one child process, so that a library that crashes the process on a damaged
    file (HDF5 on damaged object headers) marks that file bad instead of ending the run."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def run(self, check: Check, root: DataRoot, relpath: str) -> FileCheck:
        if multiprocessing.current_process().daemon:  # may not start children (a Dask worker)
            return check(root, relpath)
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
        try:
            return self._pool.submit(check, root, relpath).result()
        except BrokenProcessPool:
            self.close()
            crash = OSError(f"the {file_kind(relpath)} library crashed the process reading it")
            return bad_check(root, relpath, crash)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


#: kinds of file whose checks run in a child process (see `_ChildProcess`)
ISOLATED_KINDS = ("hdf5",)


def check_files(
    root: DataRoot,
    relpaths: Iterable[str] | None = None,
    *,
    progress: bool | None = None,
    check: Check = check_file,
) -> list[FileCheck]:
    """``check(root, relpath)`` for every file under ``root`` (or for ``relpaths``), with a
    progress bar; HDF5 files are checked in a child process.

    Files that pass are recorded as verified (see `is_verified`). ``check`` defaults to
    `check_file`; `neurotorch.verify` adds the checks of each dataset family on top of it.
    """
    if relpaths is None:
        listing = root.files()
    else:
        listing = {relpath: root.info(relpath) for relpath in relpaths}
    results = []
    child = _ChildProcess()
    with (
        tqdm(
            total=sum(info["size"] for info in listing.values()),
            desc="verify",
            unit="B",
            unit_scale=True,
            disable=not show_progress(progress),
        ) as bar,
        contextlib.closing(child),
    ):
        for relpath, info in listing.items():
            isolated = file_kind(relpath) in ISOLATED_KINDS
            result = child.run(check, root, relpath) if isolated else check(root, relpath)
            if result.status in ("verified", "no checksum"):
                record_verified(root, relpath, info, check=result)
            results.append(result)
            bar.update(info["size"])
    return results


# -- the record of verified files -------------------------------------------------------------------


def _record_path(root: DataRoot, relpath: str, info: dict) -> Path:
    """Where the record of this version of a file lives (keyed by path or URL, size, version)."""
    identity = f"{root.path(relpath)}\0{int(info['size'])}\0{info['version']}"
    key = hashlib.sha256(identity.encode()).hexdigest()
    return cache_dir() / RECORD_DIR / key[:2] / f"{key}.json"


def is_verified(root: DataRoot, relpath: str) -> bool:
    """Whether this version of the file passed a full check before (on this machine's cache);
    False for a missing file."""
    try:
        info = root.info(relpath)
    except FileNotFoundError:
        return False
    return _record_path(root, relpath, info).is_file()


def record_verified(
    root: DataRoot, relpath: str, info: dict | None = None, check: FileCheck | None = None
) -> None:
    """Record a file as verified after a full pass over it found nothing wrong.

    ``info`` is the ``root.info(relpath)`` taken before that pass (read now by default); ``check``
    the outcome of that pass, kept in the record (see `recorded_check`). A cache that cannot be
    written is only logged: it costs a later re-check, nothing else.
    """
    info = info or root.info(relpath)
    path = _record_path(root, relpath, info)
    record = {"path": root.path(relpath), "size": int(info["size"]), "version": info["version"]}
    if check is not None:
        record.update(kind=check.kind, status=check.status, detail=check.detail)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
    except OSError as exc:
        _log.warning("could not record %s as verified in %s: %s", record["path"], path, exc)


def recorded_check(root: DataRoot, relpath: str) -> FileCheck | None:
    """The outcome recorded for this version of the file by a full check (`check_files`), or
    ``None``: not verified, changed since, or recorded without its outcome (by first use)."""
    try:
        record = json.loads(_record_path(root, relpath, root.info(relpath)).read_text())
        return FileCheck(relpath, record["kind"], record["status"], detail=record["detail"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def record_lock_path(root: DataRoot, relpath: str) -> Path:
    """The lock file of the record of this version of a file: whoever checks the file holds it,
    so two runs started at once check it once."""
    return _record_path(root, relpath, root.info(relpath)).with_suffix(".lock")


def check_verify_mode(mode: str) -> str:
    """Return ``mode`` if it is one of `VERIFY_MODES`; raise `ParameterError` otherwise."""
    return check_option("verify", mode, VERIFY_MODES)


def _lock(record: Path) -> contextlib.AbstractContextManager:
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only cache: check without the lock (and without recording)
        return contextlib.nullcontext()
    return FileLock(record.with_suffix(".lock"))


def verify_before_use(
    root: DataRoot, relpath: str, mode: str = "first-use", *, seek_index: bool = False
) -> None:
    """Check a file in full unless this version of it is recorded as verified.

    Parameters
    ----------
    root, relpath
        The file.
    mode
        ``"first-use"`` (check once per file version) or ``"off"`` (do nothing).
    seek_index
        For a local ``.nii.gz`` (with ``rapidgzip`` installed): the check is the pass that
        builds its seek index (`neurotorch.io.seek_index.build_index`, which verifies the gzip
        CRC and length and the size the NIfTI header needs), so readers can then start at any
        volume without a second pass.

    Raises
    ------
    CorruptFileError, FormatError
        The file is damaged; the message names it.
    """
    if check_verify_mode(mode) == "off":
        return
    info = root.info(relpath)
    record = _record_path(root, relpath, info)
    if record.is_file():
        return
    with _lock(record):  # one full pass, however many readers start at once
        if record.is_file():
            return
        if seek_index and _verified_by_index(root, relpath):
            record_verified(root, relpath, info)
            return
        result = check_file(root, relpath)
        if result.error is not None:
            raise result.error
        record_verified(root, relpath, info)


def _verified_by_index(root: DataRoot, relpath: str) -> bool:
    """Verify a local ``.nii.gz`` by building its seek index (one pass, in parallel); False
    when that does not apply (remote, not gzip, no rapidgzip)."""
    if not root.is_local or file_kind(relpath) != "nifti-gzip":
        return False
    path = root.path(relpath)
    with SequentialReader(path) as reader:
        if not reader.compressed or not can_seek(path):
            return False
        header = read_header_from(reader)
    _check_affine(header, path)
    build_index(path)
    return True


STATUSES = ("verified", "no checksum", "bad", "skipped")


def _aligned(rows: list[tuple[str, ...]]) -> Iterator[str]:
    """Rows as text columns (the last column is not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        yield "  ".join(cell.ljust(width) for cell, width in zip(row, [*widths, 0], strict=True))


def file_table(results: Iterable[FileCheck]) -> Iterator[str]:
    """Lines of a plain-text table of ``results``, one file per row: status, kind, path, detail."""
    yield from _aligned(
        [
            ("status", "kind", "path", "detail"),
            *((r.status, r.kind, r.path, r.detail) for r in results),
        ]
    )


def summary_table(results: Iterable[FileCheck]) -> Iterator[str]:
    """Lines of a plain-text table counting ``results`` per kind of file and status."""
    results = list(results)
    kinds = sorted({r.kind for r in results})
    counts = [
        (kind, *(str(sum(r.kind == kind and r.status == s for r in results)) for s in STATUSES))
        for kind in kinds
    ]
    total = ("all", *(str(sum(r.status == s for r in results)) for s in STATUSES))
    yield from _aligned([("kind", *STATUSES), *counts, total])
