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
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from neurotorch.connectome import layout
from neurotorch.connectome.checksum import CHECKSUM_BYTES, fletcher32_matches
from neurotorch.io.files import as_path, file_root
from neurotorch.io.storage import DataRoot

try:  # ISA-L inflates about twice as fast as zlib (both release the GIL while inflating)
    from isal.isal_zlib import decompressobj as _inflater
    from isal.isal_zlib import error as _InflateError
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    from zlib import decompressobj as _inflater
    from zlib import error as _InflateError
from neurotorch.errors import (
    CorruptFileError,
    DataNotDownloadedError,
    FormatError,
    ShapeMismatchError,
    SpaceMismatchError,
)


@dataclass(frozen=True)
class BatchHeader:
    """What one batch file declares about itself."""

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


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _mask_indices_rows(raw: np.ndarray, n_voxels: int, path: Path) -> np.ndarray:
    """(n_voxels, 3) indices from either stored layout."""
    if raw.ndim == 2 and raw.shape == (n_voxels, 3):
        return raw.astype(np.int64)
    if raw.ndim == 2 and raw.shape == (3, n_voxels):
        return raw.T.astype(np.int64)
    raise FormatError(
        f"{path}: '{layout.MASK_INDICES}' has shape {raw.shape}; expected ({n_voxels}, 3) or "
        f"(3, {n_voxels}) to match the {n_voxels} voxels of '{layout.TIMESERIES}'."
    )


def read_batch_header(path: str | os.PathLike, storage_options: dict | None = None) -> BatchHeader:
    """Read and check the header of one batch file (no time series are read).

    Parameters
    ----------
    path
        Local path or fsspec URL of the file; a remote header is read with small ranged requests.
    storage_options
        fsspec options of a URL (see `neurotorch.io.storage.DataRoot`).

    Raises
    ------
    CorruptFileError
        The file is not a readable HDF5 file.
    FormatError
        A required dataset or attribute is missing or disagrees with the data shapes.
    """
    root, name = file_root(path, storage_options)
    path = as_path(root, name)
    with ExitStack() as stack:
        source = stack.enter_context(root.readable(name, block_size=HEADER_BLOCK_SIZE))
        try:
            return _header_of(stack.enter_context(h5py.File(source, "r")), path)
        except OSError as exc:  # not HDF5, truncated, or a metadata checksum fails
            raise CorruptFileError(
                f"{path} is not a readable HDF5 file or its metadata are damaged ({exc}); "
                "re-create or re-download it."
            ) from exc


def _header_of(f: h5py.File, path: Path | str) -> BatchHeader:
    """Check and describe an open batch file."""
    missing = [key for key in layout.REQUIRED_DATASETS if key not in f]
    missing += [key for key in layout.REQUIRED_ATTRS if key not in f.attrs]
    if missing:
        raise FormatError(
            f"{path} lacks {', '.join(missing)}; a connectome batch file needs the datasets "
            f"{', '.join(layout.REQUIRED_DATASETS)} and the attributes "
            f"{', '.join(layout.REQUIRED_ATTRS)}."
        )
    series = f[layout.TIMESERIES]
    if series.ndim != 3:
        raise FormatError(
            f"{path}: '{layout.TIMESERIES}' has shape {series.shape}; expected "
            "(n_subjects, n_timepoints, n_voxels)."
        )
    n_subjects, n_timepoints, n_voxels = (int(n) for n in series.shape)
    declared = {key: int(f.attrs[key]) for key in ("n_subjects", "n_timepoints", "n_voxels")}
    actual = {"n_subjects": n_subjects, "n_timepoints": n_timepoints, "n_voxels": n_voxels}
    if declared != actual:
        raise FormatError(
            f"{path}: attributes say {declared} but '{layout.TIMESERIES}' has shape "
            f"{series.shape}; the file is inconsistent, re-create it."
        )
    mask_indices = _mask_indices_rows(np.asarray(f[layout.MASK_INDICES]), n_voxels, path)
    mask_shape = tuple(int(n) for n in np.asarray(f.attrs["mask_shape"]).ravel())
    if len(mask_shape) != 3:
        raise FormatError(f"{path}: attribute mask_shape={mask_shape} is not 3-D.")
    if n_voxels and (mask_indices.min() < 0 or np.any(mask_indices.max(0) >= mask_shape)):
        raise FormatError(
            f"{path}: '{layout.MASK_INDICES}' points outside mask_shape {mask_shape}."
        )
    mask_affine = np.asarray(f[layout.MASK_AFFINE], dtype=np.float64)
    if mask_affine.shape != (4, 4):
        raise FormatError(
            f"{path}: '{layout.MASK_AFFINE}' has shape {mask_affine.shape}, not (4, 4)."
        )
    ids = None
    if layout.SUBJECT_IDS in f:
        ids = tuple(_text(s) for s in f[layout.SUBJECT_IDS][()])
        if len(ids) != n_subjects:
            raise FormatError(
                f"{path}: {len(ids)} subject ids for {n_subjects} subjects; re-create the file."
            )
    return BatchHeader(
        path=path,
        n_subjects=n_subjects,
        n_timepoints=n_timepoints,
        n_voxels=n_voxels,
        mask_indices=mask_indices,
        mask_affine=mask_affine,
        mask_shape=mask_shape,
        space=_text(f.attrs[layout.SPACE]) if layout.SPACE in f.attrs else None,
        description=_text(f.attrs.get("description", "")),
        source=_text(f.attrs.get("source", "")),
        subject_ids=ids,
        chunk_rows=int(series.chunks[0]) if series.chunks else n_subjects,
        checksummed=bool(series.fletcher32),
    )


# A raw chunk is inflated in input blocks of this size straight into the output array, so no
# chunk-sized temporary is allocated (and page-faulted in) per subject.
INFLATE_BLOCK_SIZE = 2**18

# Positional reads into a buffer (thread-safe, no GIL); elsewhere subjects are read through h5py.
_HAVE_PREADV = hasattr(os, "preadv")

# Remote headers are read in requests of this size (HDF5 metadata sits in small scattered blocks).
HEADER_BLOCK_SIZE = 2**20


def _one_gzip_chunk_per_subject(dataset: h5py.Dataset) -> bool:
    """Whether each subject is one HDF5 chunk filtered by deflate (then, optionally, Fletcher-32
    only), which can be checked and inflated directly."""
    return (
        dataset.chunks == (1,) + dataset.shape[1:]
        and dataset.compression == "gzip"
        and not dataset.shuffle
        and dataset.scaleoffset is None
        and dataset.dtype == np.dtype("<f4")
    )


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


def _batch_sources(
    path: str | os.PathLike | Sequence[str | os.PathLike], storage_options: dict | None
) -> list[tuple[DataRoot, str]]:
    """(root of the folder, file name) of every batch file, in batch order."""
    if not isinstance(path, (str, os.PathLike)):
        sources = [file_root(p, storage_options) for p in path]
        if not sources:
            raise ValueError("Empty list of connectome batch files.")
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
        A file is unreadable or does not follow the layout.
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

    def to_nifti(self, values: np.ndarray, fill: float = 0.0) -> nib.Nifti1Image:
        """A (n_voxels,) map as a 3-D NIfTI image on the mask grid."""
        return nib.Nifti1Image(self.to_volume(np.asarray(values), fill), self.affine)

    def __len__(self) -> int:
        return self.n_subjects

    def __repr__(self) -> str:
        return (
            f"ConnectomeBatches({len(self.headers)} files, {self.n_subjects} subjects, "
            f"{self.n_timepoints} timepoints, {self.n_voxels} voxels, space={self.space!r})"
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
            raise ValueError(
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
