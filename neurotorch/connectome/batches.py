"""Read a Lacuna connectome: a folder of HDF5 batch files sharing one brain mask.

`ConnectomeBatches` reads every file's header once, checks that all files agree (mask, affine,
timepoints) and then reads subjects lazily. HDF5 handles are opened on first use in each process and
dropped when pickled, so the object is safe to hand to ``DataLoader`` workers.

The folder may be a local path or an fsspec URL (``s3://bucket/prefix``): headers are read through
ranged requests, and a batch file's time series are read from a local copy fetched on first use
(`neurotorch.io.storage.DataRoot.local_path`: one download per file version, shared by concurrent
workers under a file lock).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from operator import contains, getitem
from pathlib import Path
from typing import IO, TypeVar, cast

import h5py
import nibabel as nib
import numpy as np

from neurotorch.connectome import layout
from neurotorch.connectome.checksum import CHECKSUM_BYTES, fletcher32_matches, metadata_digest
from neurotorch.connectome.outputs import write_image
from neurotorch.io.files import as_path, file_root
from neurotorch.io.storage import DataRoot

try:  # ISA-L inflates about twice as fast as zlib (both release the GIL while inflating)
    from isal.isal_zlib import decompressobj as _inflater
    from isal.isal_zlib import error as _inflate_error
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    from zlib import decompressobj as _inflater  # type: ignore[assignment]
    from zlib import error as _inflate_error  # type: ignore[assignment]
from neurotorch.errors import (
    CorruptFileError,
    DataNotDownloadedError,
    DuplicateSubjectError,
    FormatError,
    NeurotorchError,
    ParameterError,
    ShapeMismatchError,
    SpaceMismatchError,
)

# an exception class (isal's stubs declare an instance)
_InflateError = cast(type[Exception], _inflate_error)
T = TypeVar("T")


@dataclass(frozen=True)
class BatchHeader:
    """What one batch file declares about itself, after `read_batch_header` checked it."""

    path: Path | str  # a local path, or the URL of a remote file
    n_subjects: int
    n_timepoints: int
    n_voxels: int
    mask_indices: np.ndarray  # (n_voxels, 3) int64
    mask_affine: np.ndarray  # (4, 4) float64
    mask_shape: tuple[int, int, int]
    space: str | None  # None: the file has no ``space`` attribute
    description: str
    source: str
    subject_ids: tuple[str, ...] | None
    chunk_rows: int
    checksummed: bool  # the time series carry HDF5 Fletcher-32 checksums
    # hash of the first subject's stored bytes: two files that share it hold the same subject
    first_subject_fingerprint: str | None = None
    metadata_checked: bool = False  # the file carries a metadata digest and it matched

    @property
    def stem(self) -> str:
        """The file name without ``.h5``."""
        return posixpath.basename(os.fspath(self.path)).removesuffix(".h5")

    @property
    def mask_digest(self) -> str:
        """Hash of the mask indices, to compare files cheaply."""
        return indices_digest(self.mask_indices)


def indices_digest(mask_indices: np.ndarray) -> str:
    """A hash of (n_voxels, 3) mask indices."""
    rows = np.ascontiguousarray(np.asarray(mask_indices, dtype=np.int64))
    return hashlib.sha1(rows.tobytes()).hexdigest()


def repeated(items: Sequence[str]) -> list[str]:
    """The items that occur more than once, sorted."""
    return sorted(item for item, count in Counter(items).items() if count > 1)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Exceptions h5py raises for damaged object headers and attribute messages (besides OSError).
_DAMAGED = (OSError, KeyError, RuntimeError, TypeError, ValueError, NotImplementedError)
# The largest plausible grid axis (voxels); a larger mask_shape is a damaged attribute.
MAX_GRID_AXIS = 4096
# Bytes of the first subject's stored chunk hashed into `BatchHeader.first_subject_fingerprint`.
FINGERPRINT_BYTES = 2**16


def _read_key(path: Path | str, key: str, read: Callable[[], T]) -> T:
    """``read()``; an exception of a damaged HDF5 object becomes `CorruptFileError` naming ``key``."""
    try:
        return read()
    except NeurotorchError:
        raise
    except _DAMAGED as exc:
        raise CorruptFileError(
            f"{path}: reading '{key}' failed ({type(exc).__name__}: {exc}); the file's metadata "
            "are damaged, re-create or re-download it."
        ) from exc


def _int_attribute(f: h5py.File, key: str, path: Path | str) -> int:
    value = _read_key(path, key, lambda: f.attrs[key])
    array = np.asarray(value)
    if array.size != 1 or not np.issubdtype(array.dtype, np.integer) or int(array) < 0:
        raise FormatError(
            f"{path}: attribute '{key}' = {value!r} is not a count (a non-negative integer); "
            "the file is damaged or not a connectome batch file."
        )
    return int(array)


def _text_attribute(f: h5py.File, key: str, path: Path | str) -> str | None:
    if not _read_key(path, key, lambda: key in f.attrs):
        return None
    value = _read_key(path, key, lambda: f.attrs[key])
    if not isinstance(value, (str, bytes)):
        raise FormatError(f"{path}: attribute '{key}' = {value!r} is not text.")
    return _text(value)


def _mask_shape(f: h5py.File, path: Path | str) -> tuple[int, int, int]:
    value = np.asarray(_read_key(path, "mask_shape", lambda: f.attrs["mask_shape"]))
    if value.size != 3 or not np.issubdtype(value.dtype, np.integer):
        raise FormatError(f"{path}: attribute mask_shape={value.tolist()} is not 3 integers.")
    x, y, z = (int(n) for n in value.ravel())
    shape = (x, y, z)
    if not all(0 < n <= MAX_GRID_AXIS for n in shape):
        raise FormatError(
            f"{path}: attribute mask_shape={shape} is not a plausible grid (every axis must hold "
            f"1 to {MAX_GRID_AXIS} voxels); the attribute is damaged, re-create the file."
        )
    return shape


def _mask_indices_rows(raw: np.ndarray, n_voxels: int, path: Path | str) -> np.ndarray:
    """(n_voxels, 3) int64 indices from either stored layout."""
    if raw.ndim == 2 and raw.shape == (n_voxels, 3):
        rows = raw
    elif raw.ndim == 2 and raw.shape == (3, n_voxels):
        rows = raw.T
    else:
        raise FormatError(
            f"{path}: '{layout.MASK_INDICES}' has shape {raw.shape}; expected ({n_voxels}, 3) or "
            f"(3, {n_voxels}) to match the {n_voxels} voxels of '{layout.TIMESERIES}'."
        )
    if not np.issubdtype(rows.dtype, np.integer):
        if not np.issubdtype(rows.dtype, np.floating) or not np.all(rows == np.round(rows)):
            raise FormatError(
                f"{path}: '{layout.MASK_INDICES}' holds {rows.dtype} values that are not voxel "
                "indices (integers)."
            )
    return rows.astype(np.int64)


def _check_mask_indices(rows: np.ndarray, mask_shape: tuple[int, int, int], path) -> None:
    if not len(rows):
        return
    if rows.min() < 0 or np.any(rows.max(axis=0) >= mask_shape):
        raise FormatError(
            f"{path}: '{layout.MASK_INDICES}' points outside mask_shape {mask_shape}; the file is "
            "damaged or its mask_shape attribute is wrong."
        )
    flat = np.ravel_multi_index(tuple(rows.T), mask_shape)
    if len(np.unique(flat)) != len(flat):
        raise FormatError(
            f"{path}: '{layout.MASK_INDICES}' names {len(flat) - len(np.unique(flat))} voxels "
            "twice; every column of the time series must be its own voxel."
        )


def _mask_affine(f: h5py.File, path: Path | str) -> np.ndarray:
    key = layout.MASK_AFFINE
    affine = np.asarray(_read_key(path, key, lambda: f[key][()]))
    if affine.shape != (4, 4) or not np.issubdtype(affine.dtype, np.number):
        raise FormatError(f"{path}: '{key}' has shape {affine.shape}, not (4, 4) numbers.")
    affine = affine.astype(np.float64)
    if not np.all(np.isfinite(affine)):
        raise FormatError(f"{path}: '{key}' holds NaN or infinite values: {affine.tolist()}.")
    if not np.allclose(affine[3], [0, 0, 0, 1]) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise FormatError(
            f"{path}: '{key}' = {np.round(affine, 4).tolist()} is not an invertible voxel-to-mm "
            "affine (last row 0 0 0 1, non-zero voxel sizes); the file is damaged."
        )
    return affine


def _subject_ids(f: h5py.File, n_subjects: int, path) -> tuple[str, ...] | None:
    key = layout.SUBJECT_IDS
    if not _read_key(path, key, lambda: key in f):
        return None
    ids = tuple(_text(s) for s in _read_key(path, key, lambda: f[key][()]))
    if len(ids) != n_subjects:
        raise FormatError(
            f"{path}: {len(ids)} subject ids for {n_subjects} subjects; re-create the file."
        )
    twice = repeated(ids)
    if twice:
        raise DuplicateSubjectError(
            f"{path} holds the subject(s) {twice[:5]} more than once; each would count "
            "twice in every statistic. Re-create the file with each subject once."
        )
    return ids


def _check_digest(f: h5py.File, path, *, indices: np.ndarray, affine: np.ndarray) -> bool:
    """Compare the stored metadata digest (if any) with the metadata as read."""
    stored = _text_attribute(f, layout.METADATA_DIGEST, path)
    if stored is None:
        return False
    present = [key for key in layout.DIGESTED_ATTRS if key in f.attrs]
    attributes = {key: _read_key(path, key, partial(getitem, f.attrs, key)) for key in present}
    if metadata_digest(attributes, indices, affine) != stored:
        raise CorruptFileError(
            f"{path}: the metadata (attributes {', '.join(present)}, '{layout.MASK_INDICES}', "
            f"'{layout.MASK_AFFINE}') fail their checksum ('{layout.METADATA_DIGEST}'): an "
            "attribute is damaged. Re-create or re-download the file."
        )
    return True


def _read_at(source: Path | IO[bytes], offset: int, size: int) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)
    source.seek(offset)
    return source.read(size)


def _first_subject_fingerprint(series: h5py.Dataset, source: Path | IO[bytes]) -> str | None:
    """SHA-1 of the stored bytes of the first subject (its chunk, or the start of contiguous
    data), or ``None`` when the file has no subject or the data are not stored yet."""
    if series.shape[0] == 0:
        return None
    if series.chunks:
        info = series.id.get_chunk_info_by_coord((0,) * series.ndim)
        offset, size = info.byte_offset, info.size
    else:
        offset, size = series.id.get_offset(), series.id.get_storage_size()
    if offset is None:
        return None
    data = _read_at(source, offset, min(size, FINGERPRINT_BYTES))
    return hashlib.sha1(size.to_bytes(8, "little") + data).hexdigest()


def read_batch_header(path: str | os.PathLike, storage_options: dict | None = None) -> BatchHeader:
    """Read and check the metadata of one batch file (no time series are read).

    This is the complete check of a batch file's metadata: every dataset and attribute the layout
    requires, readable (a damaged HDF5 object header or attribute message is reported, naming the
    key); the attributes consistent with the shape of ``timeseries``; ``mask_shape`` a plausible
    3-D grid; ``mask_indices`` integer indices inside ``mask_shape``, each voxel once;
    ``mask_affine`` a finite, invertible voxel-to-mm affine; the subject ids one per subject,
    each once; and, for files written by neurotorch, the metadata digest (`layout.METADATA_DIGEST`,
    the attributes, indices and affine), since HDF5's checksums cover data chunks only.

    Parameters
    ----------
    path
        Local path or fsspec URL of the file; a remote header is read with small ranged requests.
    storage_options
        fsspec options of a URL (see `neurotorch.io.storage.DataRoot`).

    Raises
    ------
    CorruptFileError
        The file is not a readable HDF5 file, or its metadata are damaged.
    FormatError
        A required dataset or attribute is missing or disagrees with the data shapes.
    DuplicateSubjectError
        The file lists a subject id twice.
    """
    root, name = file_root(path, storage_options)
    path = as_path(root, name)
    with ExitStack() as stack:
        source = stack.enter_context(root.readable(name, block_size=HEADER_BLOCK_SIZE))
        try:
            handle = stack.enter_context(h5py.File(source, "r"))
        except OSError as exc:  # not HDF5, truncated, or a metadata checksum fails
            raise CorruptFileError(
                f"{path} is not a readable HDF5 file or its metadata are damaged ({exc}); "
                "re-create or re-download it."
            ) from exc
        return _header_of(handle, path, source)


def _header_of(f: h5py.File, path: Path | str, source: Path | IO[bytes]) -> BatchHeader:
    """Check and describe an open batch file."""
    missing = [
        key
        for key in layout.REQUIRED_DATASETS
        if not _read_key(path, key, partial(contains, f, key))
    ]
    missing += [
        key
        for key in layout.REQUIRED_ATTRS
        if not _read_key(path, key, partial(contains, f.attrs, key))
    ]
    if missing:
        raise FormatError(
            f"{path} lacks {', '.join(missing)}; a connectome batch file needs the datasets "
            f"{', '.join(layout.REQUIRED_DATASETS)} and the attributes "
            f"{', '.join(layout.REQUIRED_ATTRS)}."
        )
    series = _read_key(path, layout.TIMESERIES, lambda: f[layout.TIMESERIES])
    if series.ndim != 3 or not np.issubdtype(series.dtype, np.floating):
        raise FormatError(
            f"{path}: '{layout.TIMESERIES}' is {series.dtype} of shape {series.shape}; expected "
            "floating-point (n_subjects, n_timepoints, n_voxels)."
        )
    actual = dict(zip(("n_subjects", "n_timepoints", "n_voxels"), series.shape, strict=True))
    declared = {key: _int_attribute(f, key, path) for key in actual}
    if declared != {key: int(n) for key, n in actual.items()}:
        raise FormatError(
            f"{path}: attributes say {declared} but '{layout.TIMESERIES}' has shape "
            f"{series.shape}; the file is inconsistent, re-create it."
        )
    n_subjects, n_timepoints, n_voxels = (int(n) for n in series.shape)
    mask_shape = _mask_shape(f, path)
    raw_indices = _read_key(path, layout.MASK_INDICES, lambda: np.asarray(f[layout.MASK_INDICES]))
    mask_indices = _mask_indices_rows(raw_indices, n_voxels, path)
    _check_mask_indices(mask_indices, mask_shape, path)
    mask_affine = _mask_affine(f, path)
    return BatchHeader(
        path=path,
        n_subjects=n_subjects,
        n_timepoints=n_timepoints,
        n_voxels=n_voxels,
        mask_indices=mask_indices,
        mask_affine=mask_affine,
        mask_shape=mask_shape,
        space=_text_attribute(f, layout.SPACE, path),
        description=_text_attribute(f, layout.DESCRIPTION, path) or "",
        source=_text_attribute(f, layout.SOURCE, path) or "",
        subject_ids=_subject_ids(f, n_subjects, path),
        chunk_rows=int(series.chunks[0]) if series.chunks else n_subjects,
        checksummed=bool(series.fletcher32),
        first_subject_fingerprint=_read_key(
            path, layout.TIMESERIES, lambda: _first_subject_fingerprint(series, source)
        ),
        metadata_checked=_check_digest(f, path, indices=mask_indices, affine=mask_affine),
    )


# A raw chunk is inflated in input blocks of this size straight into the output array, so no
# chunk-sized temporary is allocated (and page-faulted in) per subject.
INFLATE_BLOCK_SIZE = 2**18

# Positional reads into a buffer (thread-safe, no GIL); elsewhere subjects are read through h5py.
_HAVE_PREADV = hasattr(os, "preadv")

# Remote headers are read in requests of this size (HDF5 metadata sits in small scattered blocks).
HEADER_BLOCK_SIZE = 2**20


# filter pipelines read directly: deflate, optionally followed by Fletcher-32 (in this order)
_DIRECT_PIPELINES = (
    (h5py.h5z.FILTER_DEFLATE,),
    (h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_FLETCHER32),
)


def _one_gzip_chunk_per_subject(dataset: h5py.Dataset) -> bool:
    """Whether each subject is one HDF5 chunk filtered by deflate (then, optionally, Fletcher-32
    only), which can be checked and inflated directly."""
    if dataset.chunks != (1,) + dataset.shape[1:] or dataset.dtype != np.dtype("<f4"):
        return False
    plist = dataset.id.get_create_plist()
    pipeline = tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))
    return pipeline in _DIRECT_PIPELINES


# bits of a chunk's filter mask: the filter at that position of the pipeline was skipped
_DEFLATE_SKIPPED, _CHECKSUM_SKIPPED = 1, 2


def _checked_payload(chunk: memoryview, filter_mask: int, checksummed: bool) -> memoryview:
    """The chunk without its Fletcher-32 trailer, after checking it; raises ``ValueError``."""
    if not checksummed or filter_mask & _CHECKSUM_SKIPPED:
        return chunk
    if not fletcher32_matches(chunk):
        raise ValueError("the chunk fails its Fletcher-32 checksum")
    return chunk[:-CHECKSUM_BYTES]


def _inflate_into(raw: memoryview, out: np.ndarray) -> None:
    """Inflate the zlib stream ``raw`` into the bytes of the contiguous array ``out``.

    Raises ``ValueError`` when the stream does not fill ``out`` exactly.
    """
    target = out.reshape(-1).view(np.uint8)
    inflater = _inflater()
    filled = 0

    def put(piece: bytes) -> None:
        nonlocal filled
        target[filled : filled + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
        filled += len(piece)

    for start in range(0, len(raw), INFLATE_BLOCK_SIZE):
        put(inflater.decompress(raw[start : start + INFLATE_BLOCK_SIZE]))
    put(inflater.flush())
    if filled != target.size or not inflater.eof:
        raise ValueError(f"the chunk inflates to {filled} bytes, expected {target.size}")


def _check_headers_agree(headers: Sequence[BatchHeader]) -> None:
    ref = headers[0]
    for other in headers[1:]:
        problems = []
        if other.n_timepoints != ref.n_timepoints:
            problems.append(f"n_timepoints {other.n_timepoints} vs {ref.n_timepoints}")
        if other.mask_shape != ref.mask_shape:
            problems.append(f"mask_shape {other.mask_shape} vs {ref.mask_shape}")
        if other.n_voxels != ref.n_voxels or other.mask_digest != ref.mask_digest:
            problems.append("mask_indices differ")
        if not np.allclose(other.mask_affine, ref.mask_affine, atol=1e-4):
            problems.append("mask_affine differs")
        if other.space != ref.space:
            problems.append(f"space {other.space!r} vs {ref.space!r}")
        if problems:
            raise ShapeMismatchError(
                f"Batch file {other.path} does not match {ref.path}: {'; '.join(problems)}. All "
                "batch files of a connectome must share mask, affine, space and timepoints; "
                "remove or re-create the odd file."
            )


def _subject_keys(header: BatchHeader) -> list[tuple[str, str]]:
    """(key, description) of what identifies the subjects of a file: their stored ids, and the
    fingerprint of its first subject's stored data."""
    keys = [
        (f"id:{subject}", f"the subject id {subject!r}") for subject in header.subject_ids or ()
    ]
    if header.first_subject_fingerprint is not None:
        keys.append((f"data:{header.first_subject_fingerprint}", "identical stored data"))
    return keys


def _check_no_duplicate_subjects(headers: Sequence[BatchHeader]) -> None:
    """Refuse a subject held by two files: by stored id, or by identical stored data (a batch
    file copied under a second chunk number)."""
    seen: dict[str, BatchHeader] = {}
    for header in headers:
        for key, shown in _subject_keys(header):
            other = seen.setdefault(key, header)
            if other is not header:
                raise DuplicateSubjectError(
                    f"{header.path} and {other.path} hold the same subject ({shown}); it would "
                    "count twice in every statistic (a batch file copied under a second chunk "
                    "number?). Remove one of the two files."
                )


def _batch_sources(
    path: str | os.PathLike | Sequence[str | os.PathLike], storage_options: dict | None
) -> list[tuple[DataRoot, str]]:
    """(root of the folder, file name) of every batch file, in batch order."""
    if not isinstance(path, (str, os.PathLike)):
        sources = [file_root(p, storage_options) for p in path]
        if not sources:
            raise ParameterError("Empty list of connectome batch files; give at least one.")
        return sources
    root = DataRoot(path, storage_options)
    if not root.isdir():
        if root.exists():
            return [file_root(path, storage_options)]
        raise DataNotDownloadedError(
            f"No connectome at {root.url}; give a folder of *_chunk_NNN.h5 (or "
            "connectome_batch_NNN.h5) batch files or one file."
        )
    names = layout.sorted_batch_names(root.listdir())
    if not names:
        raise DataNotDownloadedError(
            f"{root.url} holds no batch files named <prefix>_chunk_NNN.h5 or "
            "<prefix>_batch_NNN.h5; convert a connectome "
            "with neurotorch.connectome.convert_timeseries or point to the right folder."
        )
    return [(root, name) for name in names]


def _resolve_space(header: BatchHeader, given: str | None) -> str:
    """The connectome's space: declared by the files, else given by the caller, else unknown."""
    if header.space is None:
        return given or layout.UNKNOWN_SPACE
    if given is not None and given != header.space:
        raise SpaceMismatchError(
            f"{header.path} declares space {header.space!r}, not {given!r}; drop space= or "
            "point to the connectome in that space."
        )
    return header.space


class ConnectomeBatches:
    """A connectome stored as Lacuna HDF5 batch files.

    Parameters
    ----------
    path
        A folder of ``<prefix>_chunk_NNN.h5`` (or Lacuna's ``connectome_batch_NNN.h5``) files, one
        batch file, or a list of batch files; local paths or fsspec URLs (``s3://bucket/prefix``).
    storage_options
        fsspec options of a URL (credentials, ``endpoint_url``, ``anon``); public S3 buckets are
        read anonymously when no credentials are configured.
    space
        The template space of files that declare none (e.g. ``"MNI152NLin6Asym"``); without it
        their space is ``"unknown"``. Files that declare a space must declare this one.

    Raises
    ------
    DataNotDownloadedError
        No batch files at ``path``.
    FormatError, CorruptFileError
        A file is unreadable, its metadata are damaged, or it does not follow the layout (see
        `read_batch_header`).
    DuplicateSubjectError
        Two files hold the same subject (the same id, or the same stored data).
    ShapeMismatchError
        The files disagree on mask, affine, space or number of timepoints.
    SpaceMismatchError
        ``space`` differs from the space the files declare.
    """

    def __init__(
        self,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        storage_options: dict | None = None,
        space: str | None = None,
    ):
        self._sources = _batch_sources(path, storage_options)
        self.headers = [
            read_batch_header(root.path(name), root.storage_options) for root, name in self._sources
        ]
        _check_headers_agree(self.headers)
        _check_no_duplicate_subjects(self.headers)
        self.space = _resolve_space(self.headers[0], space)
        counts = np.array([h.n_subjects for h in self.headers], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self._handles: dict[int, tuple[h5py.File, io.FileIO]] = {}
        self._scratch = threading.local()  # a raw chunk buffer per reading thread
        self._pid: int | None = None

    # -- description -------------------------------------------------------------------------
    @property
    def files(self) -> list[Path | str]:
        """The batch files (local paths or URLs), in batch order."""
        return [h.path for h in self.headers]

    @property
    def storage_options(self) -> dict:
        """The fsspec options the files are read with (empty for local files)."""
        return self._sources[0][0].storage_options

    @property
    def n_subjects(self) -> int:
        return int(self._offsets[-1])

    @property
    def n_timepoints(self) -> int:
        return self.headers[0].n_timepoints

    @property
    def n_voxels(self) -> int:
        return self.headers[0].n_voxels

    @property
    def mask_indices(self) -> np.ndarray:
        """(n_voxels, 3) voxel indices; column j of a time series is voxel ``mask_indices[j]``."""
        return self.headers[0].mask_indices

    @property
    def affine(self) -> np.ndarray:
        """The mask's voxel-to-world (mm) affine."""
        return self.headers[0].mask_affine

    @property
    def mask_shape(self) -> tuple[int, int, int]:
        return self.headers[0].mask_shape

    @property
    def mask(self) -> np.ndarray:
        """The brain mask as a 3-D boolean array."""
        mask = np.zeros(self.mask_shape, dtype=bool)
        mask[tuple(self.mask_indices.T)] = True
        return mask

    @property
    def subject_ids(self) -> list[str]:
        """Stored subject ids, or ``"<file stem>:<row>"`` where a file has none."""
        ids: list[str] = []
        for h in self.headers:
            ids += list(h.subject_ids or (f"{h.stem}:{row}" for row in range(h.n_subjects)))
        return ids

    def mask_image(self) -> nib.Nifti1Image:
        """The brain mask as a NIfTI image."""
        return nib.Nifti1Image(self.mask.astype(np.uint8), self.affine)

    def to_volume(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter (..., n_voxels) values into (..., X, Y, Z) volumes."""
        values = np.asarray(values)
        out = np.full(values.shape[:-1] + self.mask_shape, fill, dtype=values.dtype)
        out[(...,) + tuple(self.mask_indices.T)] = values
        return out

    def to_nifti(
        self, values: np.ndarray, fill: float = 0.0, path: str | os.PathLike | None = None
    ) -> nib.Nifti1Image:
        """A (n_voxels,) map as a 3-D NIfTI image on the mask grid (``fill`` outside the mask);
        with ``path``, also written there atomically (see `NetworkMapResult.to_nifti`)."""
        image = nib.Nifti1Image(self.to_volume(np.asarray(values), fill), self.affine)
        if path is not None:
            write_image(image, path)
        return image

    def __len__(self) -> int:
        return self.n_subjects

    @property
    def location(self) -> str:
        """The folder (or URL prefix) of the batch files."""
        folders = {posixpath.dirname(os.fspath(path)) for path in self.files}
        return folders.pop() if len(folders) == 1 else f"{len(folders)} folders"

    def __repr__(self) -> str:
        return (
            f"ConnectomeBatches({self.location!r}: {len(self.headers)} files, "
            f"{self.n_subjects} subjects, {self.n_timepoints} timepoints, {self.n_voxels} voxels "
            f"of a {self.mask_shape} grid, space={self.space!r})"
        )

    # -- reading -----------------------------------------------------------------------------
    def locate(self, subject: int) -> tuple[int, int]:
        """(file number, row) of a subject index."""
        if not 0 <= subject < self.n_subjects:
            raise IndexError(f"Subject {subject} out of range 0..{self.n_subjects - 1}.")
        file_idx = int(np.searchsorted(self._offsets, subject, side="right") - 1)
        return file_idx, int(subject - self._offsets[file_idx])

    def locate_file(self, subject: int) -> Path | str:
        """The batch file that holds a subject."""
        return self.headers[self.locate(subject)[0]].path

    def _open(self, file_idx: int) -> tuple[h5py.File, io.FileIO]:
        """This process's (HDF5 handle, raw file) of a batch file, opened on first use."""
        if self._pid != os.getpid():
            self._handles, self._scratch = {}, threading.local()  # not ours after a fork
            self._pid = os.getpid()
        handles = self._handles.get(file_idx)
        if handles is None:
            root, name = self._sources[file_idx]
            path = root.local_path(name)  # a cached copy of a remote file
            opened = (h5py.File(path, "r"), open(path, "rb", buffering=0))  # noqa: SIM115
            handles = self._handles.setdefault(file_idx, opened)  # read-ahead threads may race
            if handles is not opened:
                for handle in opened:
                    handle.close()
        return handles

    def _dataset(self, file_idx: int) -> h5py.Dataset:
        return self._open(file_idx)[0][layout.TIMESERIES]

    def _raw_chunk(self, file_idx: int, row: int) -> tuple[memoryview, int] | None:
        """(bytes, filter mask) of a subject's stored chunk, or ``None`` if it is not stored.

        Read with ``os.preadv`` into a buffer reused by the calling thread: no GIL held while
        reading and no chunk-sized allocation per subject.
        """
        handle, raw_file = self._open(file_idx)
        info = handle[layout.TIMESERIES].id.get_chunk_info_by_coord((row, 0, 0))
        if info.byte_offset is None:
            return None
        buffer = getattr(self._scratch, "buffer", None)
        if buffer is None or len(buffer) < info.size:
            buffer = self._scratch.buffer = bytearray(info.size)
        view = memoryview(buffer)[: info.size]
        if os.preadv(raw_file.fileno(), [view], info.byte_offset) != info.size:
            raise OSError(f"short read of the chunk at byte {info.byte_offset}")
        return view, info.filter_mask

    def read_rows(self, file_idx: int, start: int, stop: int) -> np.ndarray:
        """(stop - start, n_timepoints, n_voxels) float32 rows of one batch file."""
        try:
            return np.asarray(self._dataset(file_idx)[start:stop], dtype=np.float32)
        except OSError as exc:
            raise CorruptFileError(
                f"Reading subjects {start}..{stop - 1} of {self.headers[file_idx].path} failed "
                f"({exc}); the file is truncated or corrupt, re-create it."
            ) from exc

    def read_subject(self, subject: int, out: np.ndarray | None = None) -> np.ndarray:
        """One subject's (n_timepoints, n_voxels) float32 time series.

        A subject stored as one deflate chunk (with or without a Fletcher-32 checksum) is read from
        the file, its checksum verified (numpy) and inflated directly (ISA-L), without holding the
        GIL, so reading overlaps with work in other threads; other filter pipelines (shuffle,
        scale-offset, no compression, ...) go through h5py, which verifies checksums itself.

        Parameters
        ----------
        subject
            Subject index.
        out
            Optional C-contiguous (n_timepoints, n_voxels) float32 array to read into (reused
            across subjects, it saves allocating a large array per subject).
        """
        file_idx, row = self.locate(subject)
        dataset = self._dataset(file_idx)
        if out is None:
            out = np.empty(dataset.shape[1:], dtype=np.float32)
        elif (
            out.shape != dataset.shape[1:] or out.dtype != np.float32 or not out.flags.c_contiguous
        ):
            raise ParameterError(
                f"out must be a C-contiguous float32 array of shape {dataset.shape[1:]}, got "
                f"{out.dtype} {out.shape}."
            )
        try:
            direct = _HAVE_PREADV and _one_gzip_chunk_per_subject(dataset)
            chunk = self._raw_chunk(file_idx, row) if direct else None
            if chunk is None:
                dataset.read_direct(out[np.newaxis], np.s_[row : row + 1])
            else:
                payload = _checked_payload(*chunk, checksummed=dataset.fletcher32)
                if chunk[1] & _DEFLATE_SKIPPED:
                    out.reshape(-1).view(np.uint8)[:] = np.frombuffer(payload, dtype=np.uint8)
                else:
                    _inflate_into(payload, out)
        except (OSError, ValueError, _InflateError) as exc:
            raise CorruptFileError(
                f"Reading subject {row} of {self.headers[file_idx].path} failed ({exc}); the file "
                "is truncated or corrupt, re-create it."
            ) from exc
        return out

    def chunk_spans(self) -> list[tuple[int, int, int]]:
        """(file number, start row, stop row) of every HDF5 chunk along the subject axis."""
        spans = []
        for file_idx, h in enumerate(self.headers):
            step = max(h.chunk_rows, 1)
            spans += [
                (file_idx, s, min(s + step, h.n_subjects)) for s in range(0, h.n_subjects, step)
            ]
        return spans

    def iter_subjects(
        self,
        subjects: Sequence[int] | None = None,
        prefetch: int = 0,
        reuse_buffers: bool = False,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (subject index, (n_timepoints, n_voxels) array) in order.

        Parameters
        ----------
        subjects
            Subject indices (default: all).
        prefetch
            Number of subjects read and inflated ahead in background threads (one thread each)
            while the caller works on the current one; ``True`` means 1.
        reuse_buffers
            Read into ``prefetch + 1`` arrays allocated once: a yielded array is the caller's
            until it asks for the next subject, then it is overwritten.
        """
        order = [int(s) for s in (range(self.n_subjects) if subjects is None else subjects)]
        ahead = int(prefetch)
        shape = (self.n_timepoints, self.n_voxels)
        buffers = [np.empty(shape, np.float32) for _ in range(ahead + 1)] if reuse_buffers else []

        def read(i: int) -> np.ndarray:
            return self.read_subject(order[i], buffers[i % len(buffers)] if buffers else None)

        if not ahead:
            for i, subject in enumerate(order):
                yield subject, read(i)
            return
        with ThreadPoolExecutor(max_workers=ahead) as pool:
            pending = deque(pool.submit(read, i) for i in range(min(ahead, len(order))))
            for i, subject in enumerate(order):
                data = pending.popleft().result()
                if i + ahead < len(order):
                    pending.append(pool.submit(read, i + ahead))
                yield subject, data

    def close(self) -> None:
        """Close the files this process opened."""
        if self._pid == os.getpid():
            for handle, raw_file in self._handles.values():
                handle.close()
                raw_file.close()
        self._handles, self._scratch = {}, threading.local()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_scratch"] = {}, None
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._scratch = threading.local()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
