"""The prepared store: per (subject, session, voxel selection) an uncompressed trials × voxels array.

Training reads random rows; a ``.nii.gz`` only gives sequential access at the speed of the
inflater. `build_store` therefore decompresses each session once, applies the voxel mask inline
and writes a memory-mappable ``.npy`` (rows in volume order, i.e. ``beta_index``), plus the
per-session voxel mean and standard deviation used for z-scoring.

Layout under ``<cache_dir>/laion-fmri-store/<root key>/<subject>/<mask key>-<dtype>/``::

    voxel_mask.npy          3-D boolean selection on the functional grid
    ses-01.npy              (n_trials, n_voxels) float32 or float16
    ses-01.stats.npz        mean, std (float64 accumulated, stored float32)
    ses-01.json             manifest (CRC-32 of both files); written last, so its presence marks
                            a complete session
    ses-01.lock             file lock held while the session is built

Every file is written to a temporary name and moved into place with ``os.replace``. A build that
is killed leaves at most a stale temporary file that the next build of that session removes;
sessions already complete are kept (the build resumes per session). Two processes building the
same session serialise on the lock and the second finds the session done. The manifest records
the source's size, modification version and header hash, the mask hash, dtype, shape and package
version; a mismatch in any of them rebuilds the session. It also records the size, modification
time and CRC-32 of the ``.npy`` as written: a file whose size differs, or whose modification time
changed and whose CRC-32 no longer matches, is damaged and rebuilt by `build_store`, and
`SessionStore.open_betas` refuses it. The CRC-32 of the statistics file ties it to its session:
another session's statistics copied over it (even with its times kept) are detected on every
open, rebuilt by `build_store` and refused by `SessionStore.stats`.

A float16 store refuses betas beyond float16's range (they would be served as ±inf) with
`DtypeRangeError`, naming the file and the largest value.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from neurotorch import __version__
from neurotorch._docs import fill_doc
from neurotorch._options import check_option
from neurotorch.config import cache_dir as default_cache_dir
from neurotorch.config import show_progress
from neurotorch.errors import CacheError, DtypeRangeError, NeurotorchError, ShapeMismatchError
from neurotorch.fmri import layout
from neurotorch.fmri.datafiles import require, resolve_root
from neurotorch.fmri.discovery import checked_subject, get_sessions
from neurotorch.fmri.masks import brain_mask_file
from neurotorch.fmri.nan_policy import (
    DEFAULT_NAN_POLICY,
    NAN_POLICIES,
    fix_nonfinite,
    nonfinite_error,
)
from neurotorch.fmri.session_checks import check_betas_grid, check_session_trials
from neurotorch.fmri.voxel_selection import VoxelSelection, voxel_selection_on_grid
from neurotorch.io.atomic import atomic_open, temporary_paths, write_bytes, write_npy
from neurotorch.io.inflate import SequentialReader
from neurotorch.io.integrity import record_verified
from neurotorch.io.nifti import iter_volumes, read_nifti_header
from neurotorch.io.storage import DataRoot

STORE_FORMAT = 2  # 2: the manifest records the statistics file's CRC-32
STORE_DIR = "laion-fmri-store"
_WRITE_BUFFER_BYTES = 1 << 25  # rows are written in blocks of at most this many bytes
DTYPES = ("float32", "float16")
HEADER_BYTES = 352  # NIfTI-1 header plus its extension flag; a prefix of a NIfTI-2 header
_CRC_CHUNK = 1 << 24
_log = logging.getLogger(__name__)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mask_hash(mask: np.ndarray) -> str:
    """Hash of a boolean grid mask (shape and bits)."""
    mask = np.asarray(mask, dtype=bool)
    return _sha256(repr(mask.shape).encode() + np.packbits(mask.ravel()).tobytes())


def cache_error(directory: Path, err: OSError) -> CacheError:
    """The error for a store folder that cannot be written (full disk, permissions)."""
    return CacheError(
        f"Cannot write the prepared store to {directory} ({err}); free space there, set "
        "NEUROTORCH_CACHE to another writable folder or pass cache_dir=. Sessions already "
        "complete are kept; the build resumes with the others."
    )


def source_identity(root: DataRoot, relpath: str) -> dict[str, Any]:
    """What identifies the content of a betas file: size, version (mtime or ETag), header hash."""
    info = root.info(relpath)
    with root.readable(relpath) as source, SequentialReader(source) as reader:
        header = reader.read_exact(HEADER_BYTES)
    return {
        "path": relpath,
        "size": int(info["size"]),
        "version": str(info["version"]),
        "header_sha256": _sha256(header),
    }


def _reserve_space(handle: IO[bytes], size: int) -> None:
    """Allocate ``size`` bytes of an open file's blocks now, so that a full disk fails at once
    with ENOSPC, not after most of a session was inflated. Filesystems that cannot preallocate
    are skipped."""
    if not hasattr(os, "posix_fallocate") or size == 0:
        return
    try:
        os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise


@dataclass(frozen=True)
class SessionStore:
    """The prepared files of one session (see `PreparedStore.session`)."""

    directory: Path
    session: str

    @property
    def betas_path(self) -> Path:
        return self.directory / f"{self.session}.npy"

    @property
    def stats_path(self) -> Path:
        return self.directory / f"{self.session}.stats.npz"

    @property
    def manifest_path(self) -> Path:
        return self.directory / f"{self.session}.json"

    @property
    def lock_path(self) -> Path:
        return self.directory / f"{self.session}.lock"

    def manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when the session is not (completely) built."""
        try:
            return json.loads(self.manifest_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def betas_damage(self, manifest: dict[str, Any] | None) -> str | None:
        """What is wrong with the ``.npy`` against ``manifest`` (None if nothing).

        The size is compared every time; the CRC-32 only when the modification time changed
        since the file was written (reading it all on every open would cost a full pass).
        """
        if manifest is None:
            return f"its manifest {self.manifest_path.name} is missing (the build did not finish)"
        written = manifest.get("betas_file")
        if written is None:
            return "the manifest has no record of it (written by an older version)"
        try:
            found = self.betas_path.stat()
        except FileNotFoundError:
            return "it is missing"
        if found.st_size != written["size"]:
            return f"it has {found.st_size} bytes where {written['size']} were written"
        if (
            found.st_mtime_ns != written["mtime_ns"]
            and file_crc32(self.betas_path) != written["crc32"]
        ):
            return "it was modified after it was written (its CRC-32 differs)"
        return None

    def stats_damage(self, manifest: dict[str, Any] | None) -> str | None:
        """What is wrong with the statistics file against ``manifest`` (None if nothing).

        The file is small, so its CRC-32 is recomputed every time: a copy of another session's
        statistics (times preserved or not) does not match."""
        if manifest is None:
            return f"its manifest {self.manifest_path.name} is missing (deleted, or never written)"
        written = manifest.get("stats_file")
        if written is None:
            return "the manifest has no record of it (written by an older version)"
        if not self.stats_path.exists():
            return "it is missing"
        if file_crc32(self.stats_path) != written["crc32"]:
            return "its CRC-32 differs from the one written for this session (replaced or modified)"
        return None

    def open_betas(self) -> np.ndarray:
        """The ``(n_trials, n_voxels)`` array, memory-mapped read-only.

        Raises
        ------
        CacheError
            The ``.npy`` does not match its manifest (truncated, modified or missing).
        """
        problem = self.betas_damage(self.manifest())
        if problem is not None:
            raise CacheError(
                f"The prepared betas {self.betas_path} are damaged: {problem}. Run "
                "`neurotorch prepare` (or create the dataset again) to rebuild them."
            )
        return np.load(self.betas_path, mmap_mode="r", allow_pickle=False)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-voxel ``(mean, std)`` over the session's trials, float32.

        Raises
        ------
        CacheError
            The statistics file is not the one written for this session (missing, modified, or
            another session's copied over it).
        """
        problem = self.stats_damage(self.manifest())
        if problem is not None:
            raise CacheError(
                f"The prepared statistics {self.stats_path} do not belong to this session: "
                f"{problem}. Run `neurotorch prepare` (or create the dataset again) to rebuild them."
            )
        with np.load(self.stats_path, allow_pickle=False) as stats:
            return stats["mean"], stats["std"]


class PreparedStore:
    """Prepared sessions of one subject under one voxel selection (returned by `build_store`).

    Attributes
    ----------
    subject
        Subject id.
    sessions
        Prepared sessions, in order.
    directory
        Folder of the store.
    voxel_mask
        3-D boolean selection; the voxel axis is ``voxel_mask`` flattened in C order.
    dtype
        Storage dtype of the betas (``"float32"`` or ``"float16"``).
    """

    def __init__(self, directory: Path, subject: str, sessions: Sequence[str], dtype: str):
        self.directory = Path(directory)
        self.subject = subject
        self.sessions = list(sessions)
        self.dtype = dtype
        self.voxel_mask = np.load(self.directory / "voxel_mask.npy", allow_pickle=False)

    def __repr__(self) -> str:
        return f"PreparedStore({self.subject!r}, sessions={self.sessions}, dir={str(self.directory)!r})"

    @cached_property
    def n_voxels(self) -> int:
        """Selected voxels (the length of each row)."""
        return int(self.voxel_mask.sum())

    def session(self, session: str) -> SessionStore:
        """The files of one prepared session."""
        if session not in self.sessions:
            raise KeyError(f"Session {session!r} is not in this store; prepared: {self.sessions}.")
        return SessionStore(self.directory, session)


def store_directory(
    root: DataRoot,
    subject: str,
    voxel_mask: np.ndarray,
    *,
    dtype: str,
    cache_dir: str | os.PathLike | None = None,
    values: str = "raw",
) -> Path:
    """Where the store of (dataset root, subject, selection, dtype, values) lives.

    ``values`` is ``"raw"`` (as read) or ``"zeroed"`` (non-finite values replaced by 0)."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root_key = _sha256(root.url.encode())[:16]
    suffix = "" if values == "raw" else f"-{values}"
    return base / STORE_DIR / root_key / subject / f"{mask_hash(voxel_mask)[:20]}-{dtype}{suffix}"


def file_crc32(path: Path) -> str:
    """CRC-32 of a file's bytes, as 8 hex digits."""
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CRC_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def is_current(store: SessionStore, expected: dict[str, Any], *, report: bool = True) -> bool:
    """Whether a session's manifest matches ``expected`` and its files are present and intact.

    A damaged ``.npy`` or statistics file (see `SessionStore.betas_damage`,
    `SessionStore.stats_damage`) is not current; ``report`` logs it."""
    found = store.manifest()
    if found is None or any(found.get(key) != value for key, value in expected.items()):
        return False
    checks = {store.betas_path: store.betas_damage, store.stats_path: store.stats_damage}
    damaged = {path: check(found) for path, check in checks.items()}
    for path, problem in damaged.items():
        if problem is not None and report:
            _log.warning("%s is damaged (%s); rebuilding it.", path, problem)
    return all(problem is None for problem in damaged.values())


def _remove_stale(store: SessionStore) -> None:
    for path in (store.betas_path, store.stats_path, store.manifest_path):
        for stale in temporary_paths(path):
            stale.unlink(missing_ok=True)


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header (format 1.0) of a C-ordered array of ``dtype`` and ``shape``."""
    header = io.BytesIO()
    description = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(shape),
    }
    np.lib.format.write_array_header_1_0(header, description)
    return header.getvalue()


class _RowWriter:
    """Appends rows to an open ``.npy`` file through one bounded buffer, computing the file's
    CRC-32 as it writes (the file is never mapped, nor read back)."""

    def __init__(self, handle: IO[bytes], dtype: str, n_voxels: int):
        self._handle = handle
        rows = max(1, _WRITE_BUFFER_BYTES // max(1, n_voxels * np.dtype(dtype).itemsize))
        self._buffer = np.empty((rows, n_voxels), dtype=dtype)
        self._filled = 0
        self.crc = 0

    def write_bytes(self, data: bytes | memoryview) -> None:
        self._handle.write(data)
        self.crc = zlib.crc32(data, self.crc)

    def next_row(self) -> np.ndarray:
        """The buffer row to fill next (written out when the buffer is full or at `flush`)."""
        if self._filled == len(self._buffer):
            self.flush()
        self._filled += 1
        return self._buffer[self._filled - 1]

    def flush(self) -> None:
        if self._filled:
            self.write_bytes(self._buffer[: self._filled].data.cast("B"))
            self._filled = 0


def _write_session(
    root: DataRoot,
    relpath: str,
    store: SessionStore,
    *,
    expected: dict[str, Any],
    on_volume: Callable[[], object] = lambda: None,
) -> tuple[int, str]:
    """One streaming pass: masked rows appended to the ``.npy`` through a bounded buffer, then
    the statistics; both files moved into place.

    Returns the number of non-finite values read (set to 0 when the manifest says
    ``values: zeroed``) and the CRC-32 of the ``.npy`` as written.

    Raises
    ------
    DtypeRangeError
        A finite beta that the store's dtype cannot hold (float16 beyond ±65504).
    """
    dtype, (n_volumes, n_voxels) = expected["dtype"], expected["shape"]
    policy = "zero" if expected["values"] == "zeroed" else "keep"
    voxel_mask = np.load(store.directory / "voxel_mask.npy", allow_pickle=False)
    nonfinite = 0
    total = np.zeros(n_voxels, dtype=np.float64)
    squares = np.zeros(n_voxels, dtype=np.float64)
    header = npy_header(dtype, (n_volumes, n_voxels))
    with atomic_open(store.betas_path) as handle:
        _reserve_space(handle, len(header) + n_volumes * n_voxels * np.dtype(dtype).itemsize)
        rows = _RowWriter(handle, dtype, n_voxels)
        rows.write_bytes(header)
        n_read = 0
        with root.readable(relpath) as source:
            for values in iter_volumes(source, voxel_mask, progress=False):
                nonfinite += fix_nonfinite(values, policy)
                row = rows.next_row()
                with np.errstate(over="ignore"):  # checked just below, with the file named
                    row[...] = values
                _check_range(row, values, root.path(relpath))
                total += values
                squares += np.square(values, dtype=np.float64)
                n_read += 1
                on_volume()
        if n_read != n_volumes:
            raise ShapeMismatchError(
                f"{root.path(relpath)}: header says {n_volumes} volumes, read {n_read}."
            )
        rows.flush()
    mean = total / max(n_volumes, 1)
    std = np.sqrt(np.clip(squares / max(n_volumes, 1) - mean**2, 0.0, None))

    with atomic_open(store.stats_path) as handle:
        np.savez(handle, mean=mean.astype(np.float32), std=std.astype(np.float32))
    return nonfinite, f"{rows.crc:08x}"


def _check_range(stored: np.ndarray, values: np.ndarray, where: str) -> None:
    """`DtypeRangeError` when a finite value became ±inf in the store's dtype."""
    if stored.dtype == values.dtype:
        return
    overflow = np.isfinite(values) & ~np.isfinite(stored)
    if overflow.any():
        largest = float(np.abs(values[overflow]).max())
        raise DtypeRangeError(
            f"{where} holds betas beyond the range of {stored.dtype} (|x| up to {largest:.6g}; "
            f"{stored.dtype} holds at most {float(np.finfo(stored.dtype).max):g}), which would "
            "be served as ±inf. Use dtype='float32'."
        )


@dataclass(frozen=True)
class SessionUnit:
    """Building one session of the prepared store: a unit of work of `neurotorch.parallel`.

    Idempotent and atomic: ``done()`` is true when the session's manifest (written last)
    matches the source and its files are intact; ``run()`` writes the session (temporary files,
    manifest last) and records the source as verified; the engine holds ``lock_path`` around
    both. Made by `prepare_units`, which writes the store's voxel mask first.
    """

    root: DataRoot
    relpath: str
    store: SessionStore
    expected: dict[str, Any]

    @property
    def key(self) -> str:
        subject, session = self.expected["subject"], self.store.session
        return f"prepare/{subject}/{self.store.directory.name}/{session}"

    @property
    def lock_path(self) -> Path:
        return self.store.lock_path

    def done(self) -> bool:
        return is_current(self.store, self.expected, report=False)

    def run(self, on_volume: Callable[[], object] = lambda: None) -> dict[str, Any]:
        """Build the session (the caller holds ``lock_path``); return its manifest.

        Raises
        ------
        CacheError
            The store folder cannot be written.
        CorruptFileError, DtypeRangeError, ShapeMismatchError
            The source is damaged or does not fit the store.
        """
        store = self.store
        try:
            store.manifest_path.unlink(missing_ok=True)
            _remove_stale(store)
            nonfinite, crc = _write_session(
                self.root, self.relpath, store, expected=self.expected, on_volume=on_volume
            )
            written = store.betas_path.stat()
            manifest = {
                **self.expected,
                "nonfinite": nonfinite,
                "betas_file": {
                    "size": written.st_size,
                    "mtime_ns": written.st_mtime_ns,
                    "crc32": crc,
                },
                "stats_file": {"crc32": file_crc32(store.stats_path)},
            }
            write_bytes(store.manifest_path, json.dumps(manifest, indent=1).encode())
        except OSError as err:
            if isinstance(err, NeurotorchError):  # a damaged source, not the cache
                raise
            raise cache_error(store.directory, err) from err
        # the build read the source in full, gzip trailer included: no need to verify it again
        record_verified(self.root, self.relpath, self.expected["source"])
        return manifest


@fill_doc
def prepare_units(
    data_dir: str | os.PathLike | DataRoot | None,
    subject: str,
    sessions: Sequence[str] | None = None,
    *,
    voxels: VoxelSelection | None = None,
    dtype: str = "float32",
    nan_policy: str = DEFAULT_NAN_POLICY,
    cache_dir: str | os.PathLike | None = None,
    storage_options: dict | None = None,
) -> list[SessionUnit]:
    """The sessions of a subject's prepared store as units of `neurotorch.parallel`, one per
    session (done or not), in session order.

    Checks every session's files first (grid, affine, trials table) and writes the store's
    voxel mask. Run them with `neurotorch.parallel.run_units` (``neurotorch prepare --workers
    N``, ``--scheduler ADDRESS``, ``--unit K``) or let `build_store` run them here.

    Parameters
    ----------
    data_dir, subject, sessions, voxels
        As in `build_store`.
    %(dtype)s
    %(nan_policy)s
    %(cache_dir)s
    %(storage_options)s

    Raises
    ------
    CacheError
        The cache folder cannot be written.
    ShapeMismatchError
        A session's betas do not lie on the selection's grid, or its trials table does not
        pair every volume with a trial.
    """
    check_option("dtype", dtype, DTYPES)
    values = "zeroed" if check_option("nan_policy", nan_policy, NAN_POLICIES) == "zero" else "raw"
    root = resolve_root(data_dir, storage_options)
    subject = checked_subject(root, subject)
    sessions = [
        layout.session_id(s)
        for s in (get_sessions(subject, root) if sessions is None else sessions)
    ]
    voxels = voxels or VoxelSelection()
    voxel_mask, affine = voxel_selection_on_grid(root, subject, voxels)
    grid = (brain_mask_file(subject, voxels.mask_source), voxel_mask, affine)
    directory = store_directory(
        root, subject, voxel_mask, dtype=dtype, cache_dir=cache_dir, values=values
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with FileLock(directory / "voxel_mask.lock"):
            mask_file = directory / "voxel_mask.npy"
            for stale in temporary_paths(mask_file):
                stale.unlink(missing_ok=True)
            if not mask_file.exists():
                write_npy(mask_file, voxel_mask)
    except OSError as err:
        raise cache_error(directory, err) from err
    manifest = {"format": STORE_FORMAT, "package_version": __version__, "subject": subject}
    manifest.update(mask_sha256=mask_hash(voxel_mask), dtype=dtype, values=values)
    units = [
        _plan_session(root, SessionStore(directory, s), grid, manifest=manifest) for s in sessions
    ]
    for unit in units:  # a damaged session is named once, here, whichever engine rebuilds it
        is_current(unit.store, unit.expected, report=True)
    return units


def opened_store(units: Sequence[SessionUnit], *, nan_policy: str) -> PreparedStore:
    """The `PreparedStore` of one subject's built ``units``.

    Raises
    ------
    FormatError
        ``nan_policy="raise"`` and a session holds non-finite betas (the message names the file
        and the count).
    """
    for unit in units:
        count = int((unit.store.manifest() or {}).get("nonfinite", 0))
        if count and nan_policy == "raise":
            raise nonfinite_error(unit.root.path(unit.relpath), count)
    first = units[0]
    return PreparedStore(
        first.store.directory,
        first.expected["subject"],
        [unit.store.session for unit in units],
        dtype=first.expected["dtype"],
    )


@fill_doc
def build_store(
    data_dir: str | os.PathLike | DataRoot | None,
    subject: str,
    sessions: Sequence[str] | None = None,
    *,
    voxels: VoxelSelection | None = None,
    dtype: str = "float32",
    nan_policy: str = DEFAULT_NAN_POLICY,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    storage_options: dict | None = None,
) -> PreparedStore:
    """Prepare (or reuse) the trials × voxels arrays of a subject's sessions, in this process.

    Each session is one unit (`prepare_units`): built under its lock unless current, written
    through a bounded buffer (resident memory does not grow with the store), its CRC-32
    computed while it is written.

    Parameters
    ----------
    data_dir
        Dataset root (local path, URL or `DataRoot`); default: the configured root.
    subject
        Subject id (``"sub-01"``).
    sessions
        Sessions to prepare; default every session of the subject.
    voxels
        The voxel selection (`neurotorch.fmri.voxel_selection.VoxelSelection`); default the
        whole brain mask.
    %(dtype)s
    %(nan_policy)s
    %(cache_dir)s
    progress
        Show a progress bar over volumes (``None``: `neurotorch.config.show_progress`).
    %(storage_options)s

    Returns
    -------
    PreparedStore
        The prepared sessions; each is a memory-mappable ``.npy`` with a manifest.

    Raises
    ------
    CacheError
        The cache folder cannot be written.
    DtypeRangeError
        ``dtype="float16"`` and a beta beyond its range.
    """
    units = prepare_units(
        data_dir,
        subject,
        sessions,
        voxels=voxels,
        dtype=dtype,
        nan_policy=nan_policy,
        cache_dir=cache_dir,
        storage_options=storage_options,
    )
    stale = [unit for unit in units if not unit.done()]
    if stale:
        total = sum(unit.expected["shape"][0] for unit in stale)
        show = show_progress(progress)
        with tqdm(total=total, desc=f"prepare {subject}", unit="vol", disable=not show) as bar:
            for unit in stale:
                with FileLock(str(unit.lock_path)):
                    if unit.done():  # another process built it meanwhile
                        bar.update(unit.expected["shape"][0])
                        continue
                    unit.run(on_volume=bar.update)
    return opened_store(units, nan_policy=nan_policy)


def _plan_session(
    root: DataRoot,
    store: SessionStore,
    grid: tuple[str, np.ndarray, np.ndarray],
    manifest: dict[str, Any],
) -> SessionUnit:
    """The unit of one session: its files, the manifest a current build would have, its source.

    ``grid`` is (brain mask file, 3-D selection, affine); the betas must lie on it, and the
    session's trials table must pair every volume with one trial (`trial_volumes`). ``manifest``
    holds the entries shared by the subject's sessions (format, version, mask hash, dtype,
    values)."""
    mask_file, voxel_mask, affine = grid
    subject = manifest["subject"]
    relpath = require(
        root, layout.session_betas(subject, store.session), f"Betas of {subject} {store.session}"
    )
    with root.readable(relpath) as source:
        header = read_nifti_header(source)
    check_betas_grid(
        where=root.path(relpath),
        shape=tuple(header.grid),
        affine=header.affine,
        mask_shape=voxel_mask.shape,
        mask_affine=affine,
        mask_file=root.path(mask_file),
    )
    # store row v is volume v: the trials table must name each volume once (its beta_index)
    check_session_trials(root, subject, store.session, n_volumes=header.n_volumes)
    shape = [header.n_volumes, int(voxel_mask.sum())]
    identity = source_identity(root, relpath)
    expected = {**manifest, "session": store.session, "source": identity, "shape": shape}
    return SessionUnit(root, relpath, store, expected=expected)
