"""Per-fold cross-products ``Xᵀy`` of a ridge fit, ``(n_folds, n_features, n_targets)``, held in
voxel chunks: in memory, or in a scratch file when they do not fit.

Chunk ``j`` covers targets ``[start_j, stop_j)`` and is stored contiguously as
``(n_folds, n_features, stop_j - start_j)``, so a chunk is one sequential read or write. The
scratch file lives in ``NEUROTORCH_CACHE/scratch`` and has no name: it is created unlinked
(``O_TMPFILE`` where the platform has it, else removed at once), so the disk space returns when it
is closed or when the process ends, however it ends, and no reader can ever see it. Chunks are
read and written with plain positional I/O rather than a memory map: the process then holds one
chunk at a time, and the kernel's page cache keeps the rest where memory allows (a memory map's
touched pages would count in the process's resident memory and in a cgroup's usage).
"""

from __future__ import annotations

import os
import tempfile
from io import BufferedRandom
from pathlib import Path

import numpy as np
import torch

from neurotorch.config import cache_dir
from neurotorch.errors import CacheError


def voxel_chunks(n_targets: int, chunk: int) -> list[slice]:
    """Consecutive slices of at most ``chunk`` targets covering ``range(n_targets)``."""
    return [slice(start, min(start + chunk, n_targets)) for start in range(0, n_targets, chunk)]


def scratch_dir() -> Path:
    """Folder of the scratch files of large fits (``NEUROTORCH_CACHE/scratch``)."""
    return cache_dir() / "scratch"


class CrossProducts:
    """Per-fold ``Xᵀy`` in voxel chunks, in memory or in an unnamed scratch file.

    Parameters
    ----------
    n_folds, n_features, n_targets
        The shape ``(K, D, V)``.
    chunk
        Targets per chunk (the last chunk holds the remainder).
    dtype
        ``torch.float64`` or ``torch.float32``: what is stored (and summed into).
    on_disk
        Keep the chunks in a scratch file under `scratch_dir` instead of memory.
    device
        Where `read` returns chunks (and where in-memory chunks live).
    """

    def __init__(
        self,
        n_folds: int,
        n_features: int,
        n_targets: int,
        *,
        chunk: int,
        dtype: torch.dtype = torch.float64,
        on_disk: bool = False,
        device: torch.device | str = "cpu",
    ):
        self.shape = (n_folds, n_features, n_targets)
        self.chunks = voxel_chunks(n_targets, max(1, chunk))
        self.dtype, self.device = dtype, torch.device(device)
        self._numpy_dtype = np.dtype(str(dtype).removeprefix("torch."))
        self._file = self._open_scratch() if on_disk else None
        self._memory = (
            None
            if on_disk
            else [
                torch.zeros(n_folds, n_features, c.stop - c.start, dtype=dtype, device=device)
                for c in self.chunks
            ]
        )

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    @property
    def nbytes(self) -> int:
        """Bytes of all chunks together."""
        return int(np.prod(self.shape)) * self._numpy_dtype.itemsize

    def _open_scratch(self) -> BufferedRandom:
        folder = scratch_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = tempfile.TemporaryFile(dir=folder, prefix="ridge-xty-")
        except OSError as exc:
            raise CacheError(
                f"Cannot create a scratch file in {folder} ({exc}); set NEUROTORCH_CACHE to a "
                "writable folder with room for the fit's statistics."
            ) from exc
        try:  # reserve the space now: a full disk fails here, not in the middle of the fit
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, self.nbytes)
            else:
                handle.truncate(self.nbytes)
        except OSError as exc:
            handle.close()
            raise CacheError(
                f"Cannot reserve {self.nbytes / 1e9:.2f} GB for the fit's statistics in {folder} "
                f"({exc}); free space there, set NEUROTORCH_CACHE to a folder with room, or use "
                "precision='float32' (half the size)."
            ) from exc
        return handle

    def _scratch(self) -> BufferedRandom:
        """The open scratch file of the chunks (on disk only)."""
        assert self._file is not None, "the cross-products are on disk and not closed"
        return self._file

    def _offset(self, j: int) -> int:
        n_folds, n_features, _ = self.shape
        return n_folds * n_features * self.chunks[j].start * self._numpy_dtype.itemsize

    def read(self, j: int) -> torch.Tensor:
        """Chunk ``j`` as ``(K, D, C)``: a copy from the scratch file, or the chunk in memory
        (modify it only through `add` and `write`)."""
        if self._memory is not None:
            return self._memory[j]
        n_folds, n_features, _ = self.shape
        width = self.chunks[j].stop - self.chunks[j].start
        out = np.empty((n_folds, n_features, width), dtype=self._numpy_dtype)
        scratch = self._scratch()
        scratch.seek(self._offset(j))
        view = out.data.cast("B")
        done = 0
        while done < len(view):
            got = scratch.readinto(view[done:])
            if not got:
                raise CacheError("The scratch file of the fit's statistics ended early.")
            done += got
        return torch.from_numpy(out).to(self.device)

    def write(self, j: int, values: torch.Tensor) -> None:
        """Replace chunk ``j`` by ``values`` ``(K, D, C)``."""
        values = values.to(self.dtype)
        if self._memory is not None:
            self._memory[j].copy_(values)
            return
        scratch = self._scratch()
        scratch.seek(self._offset(j))
        scratch.write(values.cpu().contiguous().numpy().data.cast("B"))

    def add(self, j: int, values: torch.Tensor) -> None:
        """Add ``values`` ``(K, D, C)`` to chunk ``j``."""
        if self._memory is not None:
            self._memory[j] += values.to(self.dtype)
        else:
            self.write(j, self.read(j) + values.to(self.dtype))

    def close(self) -> None:
        """Free the chunks (the scratch file's space returns to the disk)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = None
