"""Streaming reader of 4-D NIfTI images (``.nii`` and ``.nii.gz``): one pass, volume by volume.

The file is read front to back once with the fastest gzip inflater installed. For files with more
than 16 MiB of data a helper thread inflates the next volume while the caller masks the current one
(the inflaters and numpy release the GIL); volumes are masked, scaled and copied straight into the
output with precomputed indices, so peak memory is a few volumes plus the output. Values equal
nibabel's ``img.get_fdata(dtype=np.float32)`` bit for bit: ``scl_slope``/``scl_inter`` are applied
with nibabel's rules (a slope of 0 or NaN means unscaled; scaled values are computed in float64,
then rounded to float32).

Voxel order: NIfTI stores each volume in Fortran order; a mask selects voxels in C order over the
3-D grid, i.e. ``volume.ravel(order="C")[mask.ravel(order="C")]`` with ``volume`` in nibabel's
``(x, y, z)`` orientation.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Generator, Iterator, Sequence

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from neurotorch._options import check_int
from neurotorch.config import show_progress, usable_cores
from neurotorch.errors import FormatError, ShapeMismatchError
from neurotorch.io.inflate import SequentialReader, Source
from neurotorch.io.nifti_header import (
    NiftiHeader,
    header_size_and_byteorder,
    parse_nifti_header,
)
from neurotorch.io.read_ahead import closed_at_exit, read_ahead

__all__ = [
    "NiftiHeader",
    "VolumeDecoder",
    "iter_volumes",
    "mask_indices",
    "read_header_from",
    "read_masked_betas",
    "read_nifti_header",
    "resolve_volume_indices",
]

#: files with more data than this are inflated ahead on a helper thread
_READ_AHEAD_MIN_BYTES = 1 << 24


def read_header_from(reader: SequentialReader) -> NiftiHeader:
    """Read and parse the header at the start of ``reader``'s stream."""
    first = reader.read_exact(4)
    detected = header_size_and_byteorder(first)
    size = detected[0] if detected else 4
    return parse_nifti_header(first + reader.read_exact(size - 4), reader.name)


def read_nifti_header(source: Source) -> NiftiHeader:
    """Read the header of a single-file NIfTI-1 or NIfTI-2 image, gzip-compressed or not.

    Parameters
    ----------
    source
        Local path or binary file object at the start of the file (it is read, not closed).

    Returns
    -------
    NiftiHeader
        Shape, on-disk dtype, affine, zooms, scaling and data offset.

    Raises
    ------
    FormatError
        Not a NIfTI image, or complex/RGB data.
    CorruptFileError
        The file ends inside its header or the gzip stream is damaged.
    """
    with SequentialReader(source) as reader:
        return read_header_from(reader)


def _scaled_work_dtype(dtype: np.dtype, slope: float, inter: float) -> np.dtype:
    """Floating type nibabel computes ``raw * slope + inter`` in for data of ``dtype``."""
    if dtype.kind == "f":
        return np.result_type(dtype, np.float64)
    info = np.iinfo(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for ftype in (np.dtype(np.float64), np.dtype(np.longdouble)):
            extremes: npt.NDArray[np.floating] = np.array([info.min, info.max], dtype=ftype)
            if np.all(np.isfinite(extremes * ftype.type(slope) + ftype.type(inter))):
                return ftype
    return np.dtype(np.longdouble)


def _require_volumes(header: NiftiHeader, name: str) -> None:
    if len(header.shape) < 3:
        raise FormatError(
            f"{name} is a {len(header.shape)}-D image of shape {header.shape}; "
            "volumes need three spatial axes."
        )


def mask_indices(mask: np.ndarray, grid: tuple[int, ...], name: str) -> np.ndarray:
    """Offsets, within one on-disk (Fortran-order) volume, of the mask's voxels in C order."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise FormatError(
            f"The mask for {name} has dtype {mask.dtype}; pass a boolean array "
            "(for example mask != 0)."
        )
    if mask.shape != tuple(grid):
        raise ShapeMismatchError(
            f"The mask has shape {mask.shape} but {name} has the voxel grid {tuple(grid)}; "
            "use a mask made on the same grid as the image (same subject, same resolution)."
        )
    return np.arange(math.prod(grid), dtype=np.intp).reshape(grid, order="F")[mask]


class VolumeDecoder:
    """Turns the on-disk bytes of one volume into float32 values, masked or full.

    Parameters
    ----------
    header
        The image header (grid, on-disk dtype, scaling).
    mask
        Boolean array on the image grid, or None for every voxel.
    name
        File name for error messages.
    """

    def __init__(self, header: NiftiHeader, mask: np.ndarray | None, name: str):
        _require_volumes(header, name)
        self.header = header
        self.index = None if mask is None else mask_indices(mask, header.grid, name)
        self.n_values = header.voxels_per_volume if self.index is None else len(self.index)
        dtype = header.dtype
        self._direct = dtype == np.dtype("=f4") and header.scaling is None
        self._work: np.dtype | None
        if header.scaling is not None:
            self._work = _scaled_work_dtype(dtype, *header.scaling)
        elif dtype.kind in "iu" and dtype.itemsize == 8:
            self._work = np.dtype(np.float64)  # nibabel rounds 64-bit integers via float64
        else:
            self._work = None

    def decode(
        self, raw: bytes | bytearray | memoryview, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Decode one volume's bytes into ``out`` (float32, ``n_values`` long) and return it.

        Without a mask the result is the ``(x, y, z)`` volume (a Fortran-ordered view of ``out``).
        """
        values = np.frombuffer(raw, dtype=self.header.dtype, count=self.header.voxels_per_volume)
        if out is None:
            out = np.empty(self.n_values, dtype=np.float32)
        if self._direct and self.index is not None:
            np.take(values, self.index, out=out, mode="clip")
        else:
            selected = values if self.index is None else values.take(self.index, mode="clip")
            out[...] = self._convert(selected)
        if self.index is None:
            return out.reshape(self.header.grid, order="F")
        return out

    def _convert(self, values: np.ndarray) -> np.ndarray:
        if self._work is None:
            return values
        work = values.astype(self._work)
        if self.header.scaling is not None:
            slope, inter = self.header.scaling
            if slope != 1.0:
                work *= slope
            if inter != 0.0:
                work += inter
        return work


def _progress(total: int, name: str, progress: bool | None) -> tqdm:
    return tqdm(
        total=total, desc=os.path.basename(name), unit="vol", disable=not show_progress(progress)
    )


def _volume_bytes(
    reader: SequentialReader, header: NiftiHeader, volumes: Sequence[int], n_buffers: int = 1
) -> Generator[tuple[int, bytearray], None, None]:
    """Yield ``(volume, raw bytes)`` for the increasing ``volumes`` in one pass over ``reader``.

    ``n_buffers`` buffers are used in turn: a yielded buffer is overwritten ``n_buffers`` volumes
    later. The gzip checksum is verified before the last volume is handed over.
    """
    buffers = [bytearray(header.volume_nbytes) for _ in range(n_buffers)]
    reader.skip(header.vox_offset - reader.position)
    start = reader.position
    for i, volume in enumerate(volumes):
        buffer = buffers[i % n_buffers]
        reader.skip(start + volume * header.volume_nbytes - reader.position, scratch=buffer)
        reader.readinto_exact(buffer)
        if i == len(volumes) - 1:
            reader.finish()
        yield volume, buffer


def _raw_volumes(
    reader: SequentialReader, header: NiftiHeader, volumes: Sequence[int]
) -> Generator[tuple[int, bytearray], None, None]:
    """`_volume_bytes`, inflated one volume ahead on a helper thread when there is enough data.

    Three buffers circulate: one being decoded by the caller, one queued, one being filled.
    """
    if header.n_volumes * header.volume_nbytes <= _READ_AHEAD_MIN_BYTES:
        return _volume_bytes(reader, header, volumes)
    return read_ahead(_volume_bytes(reader, header, volumes, n_buffers=3), depth=1)


def decode_buffers(cores: int) -> int:
    """Raw buffers a `decode_ahead` reader rotates: one being inflated, one queued and one being
    decoded on two threads; one buffer when one thread does both."""
    return 3 if cores >= 2 else 1


def decode_ahead(
    raw_volumes: Iterator[tuple[int, bytearray]], decoder: VolumeDecoder, *, cores: int
) -> Generator[tuple[int, np.ndarray], None, None]:
    """``(volume, values)`` of ``(volume, raw bytes)``, read and decoded ahead (`read_ahead`).

    With ``cores`` ≥ 2 one helper thread inflates, one volume ahead, and a second decodes
    (masks), so that a reader uses two cores and leaves the caller's thread free (a stream with
    no ``DataLoader`` workers ran at 0.82 of the one-core inflate limit instead of 0.62,
    ``scripts/bench_scale.py``). With one core (one reader per core, as in each of two workers
    on two cores) one helper thread does both, which keeps threads from contending for a core.
    ``raw_volumes`` must rotate `decode_buffers` buffers.
    """
    inflated = read_ahead(raw_volumes, depth=1) if cores >= 2 else None
    decoded = ((volume, decoder.decode(raw)) for volume, raw in (inflated or raw_volumes))
    ahead = read_ahead(decoded, depth=2)
    owner = os.getpid()
    try:
        yield from ahead
    finally:  # stops the helper threads, the decoding one first (a forked child has none)
        ahead.close()
        if inflated is not None and os.getpid() == owner:
            inflated.close()


@closed_at_exit
def iter_volumes(
    source: Source,
    mask: np.ndarray | None = None,
    *,
    progress: bool | None = None,
    cores: int | None = None,
) -> Generator[np.ndarray, None, None]:
    """Yield the volumes of a 4-D NIfTI image one by one, in one sequential pass.

    Images with more than 16 MiB of data are read on a helper thread, a volume or two ahead
    (`decode_ahead`), so the caller's own work on a volume overlaps with decompression.

    Parameters
    ----------
    source
        Local path or binary file object (``.nii`` or ``.nii.gz``; gzip is detected by its magic
        bytes). A file object is read sequentially and left open.
    mask
        Boolean array on the image grid: yield ``volume[mask]`` (C order over the grid) as a 1-D
        float32 array. None yields each full ``(x, y, z)`` float32 volume.
    progress
        Show a progress bar (also subject to ``NEUROTORCH_PROGRESS``).
    cores
        Cores this reader may use (`decode_ahead`); every core this process may run on by default.

    Yields
    ------
    numpy.ndarray
        One new float32 array per volume along the 4th axis (axes beyond the 4th are flattened in
        Fortran order, as on disk; a 3-D image yields one volume).

    Raises
    ------
    CorruptFileError
        Truncated file, or gzip CRC/length/deflate error. The gzip checksum is verified before the
        last volume is yielded.
    ShapeMismatchError
        The mask's shape differs from the image grid.
    FormatError
        Not a NIfTI image, fewer than three axes, or non-real data.
    RuntimeError
        The iterator is resumed in a process forked after it started.
    """
    cores = usable_cores() if cores is None else check_int("cores", cores, minimum=1)
    with SequentialReader(source) as reader:
        header = read_header_from(reader)
        decoder = VolumeDecoder(header, mask, reader.name)
        everything = range(header.n_volumes)
        volumes: Iterator[tuple[int, np.ndarray]]
        if header.n_volumes * header.volume_nbytes > _READ_AHEAD_MIN_BYTES:
            buffers = decode_buffers(cores)
            raw_volumes = _volume_bytes(reader, header, everything, n_buffers=buffers)
            volumes = decode_ahead(raw_volumes, decoder, cores=cores)
        else:
            volumes = (
                (v, decoder.decode(raw)) for v, raw in _volume_bytes(reader, header, everything)
            )
        owner = os.getpid()
        # closing the volume iterator first stops a read-ahead thread before the file is closed
        with contextlib.closing(volumes), _progress(header.n_volumes, reader.name, progress) as bar:
            for _, values in volumes:
                bar.update()
                yield values
                if os.getpid() != owner:  # a forked child shares the file offset
                    raise RuntimeError(
                        "A volume iterator cannot be resumed in a forked process; start "
                        "iter_volumes in the process that consumes it (e.g. in the DataLoader "
                        "worker)."
                    )


def resolve_volume_indices(
    volumes: Sequence[int] | np.ndarray | None, n_volumes: int, name: str
) -> np.ndarray:
    """Validate volume indices (negative ones count from the end); None means all volumes."""
    if volumes is None:
        return np.arange(n_volumes)
    rows = np.asarray(volumes)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise TypeError(f"volumes must be a 1-D sequence of integers, got {volumes!r}.")
    rows = rows.astype(np.int64)
    bad = rows[(rows < -n_volumes) | (rows >= n_volumes)]
    if bad.size:
        raise IndexError(
            f"Volume index {int(bad[0])} is out of range for {name}, which has {n_volumes} volumes."
        )
    return np.where(rows < 0, rows + n_volumes, rows)


def read_masked_betas(
    source: Source,
    mask: np.ndarray | None,
    *,
    volumes: Sequence[int] | np.ndarray | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Read the masked voxels of every (or the chosen) volume into a ``(n_volumes, n_voxels)`` array.

    One sequential pass over the file; the output is allocated once, and peak memory is three
    volume buffers plus the output.

    Parameters
    ----------
    source
        Local path or binary file object (``.nii`` or ``.nii.gz``).
    mask
        Boolean array on the image grid; voxels are taken in C order. None takes every voxel
        (C order).
    volumes
        Indices along the 4th axis to keep, in the order wanted (negative indices count from the
        end; repeats allowed). None keeps all.
    progress
        Show a progress bar (also subject to ``NEUROTORCH_PROGRESS``).

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(len(volumes), n_voxels)``.

    Raises
    ------
    CorruptFileError, ShapeMismatchError, FormatError
        As for `iter_volumes`.
    IndexError
        A volume index outside the image.
    """
    with SequentialReader(source) as reader:
        header = read_header_from(reader)
        _require_volumes(header, reader.name)
        if mask is None:
            mask = np.ones(header.grid, dtype=bool)
        decoder = VolumeDecoder(header, mask, reader.name)
        rows = resolve_volume_indices(volumes, header.n_volumes, reader.name)
        out = np.empty((len(rows), decoder.n_values), dtype=np.float32)
        wanted, inverse = np.unique(rows, return_inverse=True)
        rows_by_volume = np.split(
            np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1]
        )
        stream = _raw_volumes(reader, header, wanted.tolist())
        with contextlib.closing(stream), _progress(len(wanted), reader.name, progress) as bar:
            for k, (_, raw) in enumerate(stream):
                first, *repeats = rows_by_volume[k]
                row = out[first]
                row.fill(0)  # maps the row's pages in one sweep: cheaper than inside the gather
                decoder.decode(raw, out=row)
                out[repeats] = row
                bar.update()
    return out
