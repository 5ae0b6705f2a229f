"""Random access to single volumes of a ``.nii.gz`` through a saved gzip seek index.

The first access decompresses the file once (with a progress bar), checking its CRC and length,
and saves a seek index under ``config.cache_dir() / "gzip-index"``; later accesses, in any process,
jump straight to the volumes asked for. The index is keyed by the file's identity (its version,
`neurotorch.io.storage.local_version`: size, modification and change time, inode; and a hash of
its first and last 64 KiB, which hold the NIfTI header and the gzip CRC/length trailer), so a
changed file gets a new index, also one rewritten with its modification time restored. Index files
are written atomically.
``rapidgzip`` is used when installed, else ``indexed_gzip``. Uncompressed ``.nii`` files need no
index and are read with plain seeks.

Random access cannot re-verify the gzip CRC (it covers the whole file); it was verified when the
index was built. For reading every volume, the sequential `neurotorch.io.nifti.read_masked_betas`
is faster.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from neurotorch._options import check_int
from neurotorch.config import cache_dir, show_progress, usable_cores
from neurotorch.errors import CacheError, CorruptFileError, MissingDependencyError
from neurotorch.io.atomic import atomic_path
from neurotorch.io.index_points import IndexPoints, PointReader, UnreadableIndex
from neurotorch.io.inflate import GZIP_MAGIC
from neurotorch.io.nifti import (
    NiftiHeader,
    VolumeDecoder,
    decode_ahead,
    decode_buffers,
    read_nifti_header,
    resolve_volume_indices,
)
from neurotorch.io.read_ahead import closed_at_exit
from neurotorch.io.storage import local_version

_IDENTITY_BYTES = 1 << 16
_BUILD_CHUNK = 1 << 24
_INDEX_SPACING = 1 << 22
#: errors the gzip backends raise for damaged data (rapidgzip: ValueError/RuntimeError;
#: indexed_gzip: ZranError/CrcError, both OSError)
_BACKEND_ERRORS = (ValueError, RuntimeError, OSError)


def index_backend() -> str:
    """``"rapidgzip"`` when installed, else ``"indexed_gzip"``; `MissingDependencyError` if neither."""
    for backend in ("rapidgzip", "indexed_gzip"):
        if importlib.util.find_spec(backend) is not None:
            return backend
    raise MissingDependencyError(
        "Random access to volumes of a .nii.gz needs rapidgzip or indexed_gzip: "
        "pip install 'neurotorch[fast]' (or read whole files, or build the prepared store)."
    )


def file_identity(path: str | os.PathLike) -> str:
    """Hex digest of a file's version (`local_version`) and its first and last 64 KiB."""
    stat = os.stat(path)
    digest = hashlib.sha256(f"{local_version(stat)}:".encode())
    with open(path, "rb") as f:
        digest.update(f.read(_IDENTITY_BYTES))
        f.seek(max(0, stat.st_size - _IDENTITY_BYTES))
        digest.update(f.read(_IDENTITY_BYTES))
    return digest.hexdigest()


def index_path(path: str | os.PathLike, backend: str | None = None) -> Path:
    """Where the seek index of ``path`` is (or will be) saved."""
    backend = backend or index_backend()
    return cache_dir() / "gzip-index" / f"{file_identity(path)}.{backend}.idx"


def _threads(threads: int | None) -> int:
    """Inflate threads: ``threads``, or every core (at most 4)."""
    return threads if threads is not None else min(4, usable_cores())


def _open_backend(
    path: str, backend: str, index_file: Path | None = None, threads: int | None = None
) -> Any:  # a rapidgzip or indexed_gzip file (their packages carry no types)
    if backend == "rapidgzip":
        import rapidgzip

        handle = rapidgzip.open(path, parallelization=_threads(threads))
    else:
        import indexed_gzip

        handle = indexed_gzip.IndexedGzipFile(path, spacing=_INDEX_SPACING)
    if index_file is not None:
        try:
            handle.import_index(str(index_file))
        except BaseException:
            handle.close()
            raise
    return handle


def _decompress_through(handle: Any, backend: str, expected: int, bar: tqdm) -> int:
    """Decompress the whole file (building the index); return its decompressed size."""
    if backend == "rapidgzip":
        size = 0
        buffer = bytearray(_BUILD_CHUNK)
        while n := handle.readinto(buffer):
            size += n
            bar.update(n)
        return size
    for position in range(_BUILD_CHUNK, expected, _BUILD_CHUNK):  # seeks add index points
        handle.seek(position)
        bar.update(_BUILD_CHUNK)
    handle.build_full_index()
    return handle.seek(0, io.SEEK_END)


def _build(
    path: str, header: NiftiHeader, backend: str, target: Path, progress: bool | None
) -> None:
    """Decompress ``path`` once, verifying CRC and length, and save its index atomically."""
    expected = header.vox_offset + header.n_volumes * header.volume_nbytes
    bar = tqdm(
        total=expected,
        unit="B",
        unit_scale=True,
        desc=f"indexing {os.path.basename(path)}",
        disable=not show_progress(progress),
    )
    with atomic_path(target) as tmp, bar, _open_backend(path, backend) as handle:
        try:
            size = _decompress_through(handle, backend, expected, bar=bar)
        except _BACKEND_ERRORS as exc:
            raise CorruptFileError(
                f"{path} is corrupt: decompressing it for the seek index failed ({exc}). "
                "Download or copy the file again."
            ) from exc
        if size < expected:
            raise CorruptFileError(
                f"{path} is truncated: it decompresses to {size} bytes but its NIfTI header "
                f"needs {expected}. Download or copy the file again."
            )
        handle.export_index(str(tmp))


def build_index(path: str | os.PathLike, *, progress: bool | None = None) -> Path:
    """Build (once) and return the saved seek index of a ``.nii.gz`` file.

    Concurrent callers wait for one build (a file lock beside the index).

    Raises
    ------
    CorruptFileError
        The file is truncated or fails its gzip CRC/length check.
    CacheError
        The cache directory is not writable.
    """
    return _saved_index(os.fspath(path), progress)


def _saved_index(
    path: str, progress: bool | None, unreadable: tuple[int, int] | None = None
) -> Path:
    """The index of ``path``, built under the lock unless present; ``unreadable`` is the state of
    an index that failed to load: it is replaced, unless another process replaced it meanwhile."""
    header = read_nifti_header(path)
    backend = index_backend()
    target = index_path(path, backend)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if unreadable is not None and _state(target) == unreadable:
                target.unlink()
            if not target.exists():
                _build(path, header, backend=backend, target=target, progress=progress)
    except CorruptFileError:
        raise
    except OSError as exc:
        raise CacheError(
            f"Cannot write the seek index of {path} under {target.parent} ({exc}); set "
            "NEUROTORCH_CACHE to a writable directory."
        ) from exc
    return target


def _state(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of a file, None if it is gone: tells whether another process replaced it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _open_indexed(
    path: str, progress: bool | None, threads: int | None = None
) -> io.BufferedIOBase:
    """A seekable decompressed view of ``path`` using its saved (or freshly built) index."""
    backend = index_backend()
    target = _saved_index(path, progress)
    try:
        return _open_backend(path, backend, target, threads=threads)
    except _BACKEND_ERRORS:  # an unreadable index (e.g. from another version): rebuild it
        rebuilt = _saved_index(path, progress, _state(target))
        return _open_backend(path, backend, rebuilt, threads=threads)


def _read_fully(
    handle: io.BufferedIOBase | PointReader, buffer: bytearray, path: str, volume: int
) -> None:
    view = memoryview(buffer)
    filled = 0
    while filled < len(view):
        n = handle.readinto(view[filled:])
        if not n:
            raise CorruptFileError(
                f"{path} ends inside volume {volume}; the file is truncated. "
                "Download or copy it again."
            )
        filled += n


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def can_seek(path: str | os.PathLike) -> bool:
    """Whether `iter_volume_range` can start ``path`` at any volume without inflating what lies
    before it at the speed of a sequential pass: a plain ``.nii``, or a ``.nii.gz`` with
    ``rapidgzip`` installed (its index decompresses in parallel and verifies the gzip CRC)."""
    return not _is_gzip(os.fspath(path)) or importlib.util.find_spec("rapidgzip") is not None


def has_index(path: str | os.PathLike) -> bool:
    """Whether `iter_volume_range` can start inside ``path`` without a first pass: a plain
    ``.nii``, or a ``.nii.gz`` whose seek index for this version of the file is saved."""
    path = os.fspath(path)
    if not _is_gzip(path):
        return True
    try:
        return index_path(path).is_file()
    except MissingDependencyError:
        return False


def _open_seekable(path: str, threads: int | None) -> io.BufferedIOBase | PointReader:
    """A reader of ``path`` for one sequential range: a plain file, or a ``.nii.gz`` through its
    index, inflated by isal from the index point on one thread (faster there than rapidgzip on
    one thread), else by the backend on ``threads`` threads (`_threads`)."""
    if not _is_gzip(path):
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    if _threads(threads) == 1:
        target = _saved_index(path, progress=False)
        try:
            return PointReader(path, IndexPoints(target))
        except UnreadableIndex:  # another format: the backend that wrote it reads it
            pass
    return _open_indexed(path, progress=False, threads=threads)


def _raw_range(
    handle: io.BufferedIOBase | PointReader,
    header: NiftiHeader,
    volumes: range,
    path: str,
    n_buffers: int = 1,
) -> Generator[tuple[int, bytearray], None, None]:
    """``(volume, on-disk bytes)`` of consecutive ``volumes``; ``n_buffers`` buffers are used in
    turn (a yielded buffer is overwritten ``n_buffers`` volumes later)."""
    buffers = [bytearray(header.volume_nbytes) for _ in range(n_buffers)]
    handle.seek(header.vox_offset + volumes.start * header.volume_nbytes)
    for i, volume in enumerate(volumes):
        buffer = buffers[i % n_buffers]
        _read_fully(handle, buffer, path, volume=volume)
        yield volume, buffer


@closed_at_exit
def iter_volume_range(
    path: str | os.PathLike,
    start: int,
    stop: int,
    mask: np.ndarray | None = None,
    *,
    threads: int | None = None,
) -> Generator[tuple[int, np.ndarray], None, None]:
    """``(volume, values)`` for the volumes ``start … stop - 1`` of a 4-D NIfTI file, read from
    the first of them on (a ``.nii.gz`` through its seek index, built first if missing).

    What lies before ``start`` is not decompressed, so readers of different parts of one file
    (``DataLoader`` workers) share its decompression. Volumes are read ahead on a helper thread
    (`neurotorch.io.nifti.decode_ahead`, on ``threads`` cores; rapidgzip inflates on as many
    threads, default every core, at most 4).

    Random access cannot check the gzip CRC (it covers the whole file): verify the file first
    (`neurotorch.io.integrity.verify_before_use`, which builds the index in the same pass).

    Raises
    ------
    CorruptFileError
        The file is truncated or corrupt.
    IndexError
        ``start``/``stop`` outside the image.
    RuntimeError
        The iterator is resumed in a process forked after it started.
    """
    path = os.fspath(path)
    cores = usable_cores() if threads is None else check_int("threads", threads, minimum=1)
    header = read_nifti_header(path)
    decoder = VolumeDecoder(header, mask, path)
    if not 0 <= start <= stop <= header.n_volumes:
        raise IndexError(
            f"Volumes {start}..{stop - 1} are outside {path}, which has {header.n_volumes}."
        )

    owner = os.getpid()
    with _open_seekable(path, threads) as handle:
        buffers = decode_buffers(cores)
        raw_volumes = _raw_range(handle, header, range(start, stop), path=path, n_buffers=buffers)
        volumes = decode_ahead(raw_volumes, decoder, cores=cores)
        with contextlib.closing(volumes):  # stops the helper thread before the file closes
            for item in volumes:
                yield item
                if os.getpid() != owner:
                    raise RuntimeError(
                        "A volume iterator cannot be resumed in a forked process; start it in "
                        "the process that consumes it (e.g. in the DataLoader worker)."
                    )


def read_volumes(
    path: str | os.PathLike,
    indices: Sequence[int] | np.ndarray,
    mask: np.ndarray | None = None,
    *,
    progress: bool | None = None,
) -> np.ndarray:
    """Read a few volumes of a 4-D NIfTI file by index, without decompressing the rest.

    Parameters
    ----------
    path
        Local ``.nii.gz`` or ``.nii`` file.
    indices
        Volume indices along the 4th axis (negative ones count from the end; any order, repeats
        allowed).
    mask
        Boolean array on the image grid; voxels are taken in C order. None returns full volumes.
    progress
        Show a progress bar while the index is built (first access only).

    Returns
    -------
    numpy.ndarray
        float32, ``(len(indices), n_mask_voxels)`` with a mask, else ``(len(indices), x, y, z)``;
        values equal nibabel's ``get_fdata(dtype=np.float32)`` bit for bit.

    Raises
    ------
    CorruptFileError
        The file is truncated or corrupt (found when the index is built).
    ShapeMismatchError
        The mask's shape differs from the image grid.
    IndexError
        An index outside the image.
    """
    path = os.fspath(path)
    header = read_nifti_header(path)
    decoder = VolumeDecoder(header, mask, path)
    rows = resolve_volume_indices(indices, header.n_volumes, path)
    out = np.empty((len(rows), decoder.n_values), dtype=np.float32)
    if not len(rows):
        return out if mask is not None else out.reshape((0, *header.grid))
    handle = _open_indexed(path, progress) if _is_gzip(path) else open(path, "rb")  # noqa: SIM115
    buffer = bytearray(header.volume_nbytes)
    with handle:
        for row, volume in enumerate(rows):
            handle.seek(header.vox_offset + int(volume) * header.volume_nbytes)
            _read_fully(handle, buffer, path, volume=int(volume))
            decoder.decode(buffer, out=out[row])
    if mask is not None:
        return out
    return out.reshape((len(rows), *header.grid[::-1])).transpose(0, 3, 2, 1)
