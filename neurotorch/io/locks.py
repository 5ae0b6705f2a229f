"""Cross-process locks for the paths neurotorch writes, kept under ``NEUROTORCH_CACHE/locks``.

A lock file never lands in a dataset or output folder: it is named by a hash of the resolved path
it protects, so every process (DataLoader workers, DDP ranks, several scripts on one machine) that
asks for the same path waits on the same lock.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from filelock import FileLock

from neurotorch.config import cache_dir
from neurotorch.errors import CacheError

LOCK_SUFFIX = ".lock"


def path_lock(path: str | os.PathLike) -> FileLock:
    """A lock that serialises writers of ``path`` across processes.

    Raises
    ------
    CacheError
        The lock folder cannot be created (``NEUROTORCH_CACHE`` is not writable).
    """
    digest = hashlib.sha256(str(Path(path).expanduser().resolve()).encode()).hexdigest()[:24]
    folder = cache_dir() / "locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(
            f"Cannot create the lock folder {folder} ({exc}); set NEUROTORCH_CACHE to a "
            "writable directory."
        ) from exc
    return FileLock(str(folder / f"{digest}{LOCK_SUFFIX}"))
