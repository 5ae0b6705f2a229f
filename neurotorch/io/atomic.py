"""Atomic file writes: every file neurotorch writes goes through this module.

A file is written under a unique temporary name in its target folder, flushed and ``fsync``-ed,
given the mode a plain ``open()`` would give it (``0o666`` minus the umask: 0644 under umask 022,
0600 under 077) and moved into place with ``os.replace``; the folder is then ``fsync``-ed so the
rename itself survives a power cut. A reader sees the previous file or the new one, never a part;
an exception mid-write leaves the previous file as it was and removes the temporary file. Writers
of outputs wrap their writes in `named_write_errors`, so that a full disk, a quota, a read-only or
unwritable folder raise `OutputWriteError` naming the target (caches give their own `CacheError`).

`atomic_path` yields the temporary path, for writers that open files themselves (h5py, nibabel,
``np.savez``, ``Figure.savefig``, ``np.lib.format.open_memmap``); `atomic_open` yields an open
file; `write_bytes`, `write_text`, `write_json` and `write_npy` cover the common cases.
`commit_file` moves a file written elsewhere in the folder (a resumable download) into place
with the same guarantees. Inside `deferred_sync`, files are synced together at the end of the
block instead of one by one (for trees published by one final rename).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from neurotorch._options import check_option
from neurotorch.errors import NeurotorchError, OutputWriteError

# Temporary names are ".<random>.tmp.<name>": hidden, unique, and ending like the target, so that
# writers which pick the format from the name (nibabel, np.savez, MNE's "-fwd.fif") keep it.
TEMP_MARK = ".tmp."
# fsync errors of file systems that cannot sync a folder (the rename is as durable as they allow)
_NO_FOLDER_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EBADF}
# errors that mean "this target cannot be written", reported as `OutputWriteError` naming it
_WRITE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM", "EIO")
)
# Files written inside a `deferred_sync` block, or None outside one.
_deferred: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar(
    "deferred_sync", default=None
)


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no other way to read it; restored at once
    os.umask(mask)
    return mask


def temporary_paths(path: str | os.PathLike) -> list[Path]:
    """Temporary files that `atomic_path` leaves beside ``path`` only if the process was killed.

    Callers that hold a lock over ``path`` may delete them before writing it again.
    """
    path = Path(path)
    return sorted(path.parent.glob(f".*{TEMP_MARK}{glob.escape(path.name)}"))


def sync_folder(folder: str | os.PathLike) -> None:
    """``fsync`` a folder, so that renames and new entries in it survive a power cut."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open folders (Windows)
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _NO_FOLDER_SYNC:  # a full or failing disk is reported
            raise
    finally:
        os.close(fd)


def commit_file(written: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make the complete file ``written`` (in ``path``'s folder) durable and move it to ``path``.

    The file is ``fsync``-ed, given the umask's mode, renamed over ``path`` and the folder is
    ``fsync``-ed. Returns ``path``.
    """
    written, path = Path(written), Path(path)
    deferred = _deferred.get()
    if deferred is None:
        with open(written, "rb+") as handle:
            os.fsync(handle.fileno())
    os.chmod(written, 0o666 & ~current_umask())
    os.replace(written, path)
    if deferred is None:
        sync_folder(path.parent)
    else:
        deferred.append(path)
    return path


@contextlib.contextmanager
def deferred_sync() -> Iterator[None]:
    """Within the block, files are written atomically but synced all together when it ends.

    For a tree that is published by one final rename (a synthetic dataset is built in a hidden
    folder): no reader sees its files before that rename, so one sync of everything just before
    it is as safe as one per file, and far cheaper for hundreds of files. Only writes made by the
    thread that entered the block are deferred; if the block raises, nothing is synced.
    """
    token = _deferred.set([])
    try:
        yield
        written = _deferred.get() or []
    finally:
        _deferred.reset(token)
    if hasattr(os, "sync"):
        os.sync()  # one call flushes every file and folder
    else:
        for path in written:
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
        for folder in {path.parent for path in written}:
            sync_folder(folder)


def write_error(path: str | os.PathLike, exc: OSError) -> OSError:
    """``exc`` as `OutputWriteError` naming ``path`` when it says the target cannot be written (a
    full disk, a quota, no permission); any other error unchanged."""
    if isinstance(exc, NeurotorchError) or exc.errno not in _WRITE_ERRNOS:
        return exc
    error = OutputWriteError(
        f"Could not write {path}: {exc.strerror or exc} (errno {exc.errno}). The previous "
        "file, if any, is unchanged; free space or choose a writable folder, then run again."
    )
    error.errno = exc.errno
    return error


@contextlib.contextmanager
def named_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Within the block, an error that says ``path`` cannot be written (`write_error`) is raised
    as `OutputWriteError` naming it; other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        translated = write_error(path, exc)
        if translated is exc:
            raise
        raise translated from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; on success move the file written there to it.

    The temporary name ends with ``path``'s name, so writers that infer the format from it
    (``.npz``, ``.nii.gz``, ``-fwd.fif`` ...) write the right one. The parent folder must exist.

    Examples
    --------
    >>> with atomic_path("brain.nii.gz") as tmp:  # doctest: +SKIP
    ...     nib.save(image, tmp)
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=TEMP_MARK + path.name)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        commit_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "wb", encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Yield a file open for writing (``"wb"`` or ``"w"``) that replaces ``path`` on success."""
    check_option("mode", mode, ("w", "wb"))
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle
        handle.flush()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``; return the path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``; return the path."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON followed by a newline; return the path."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically write ``array`` as a ``.npy`` file (never pickled); return the path."""
    with atomic_open(path, "wb") as handle:
        np.save(handle, np.asanyarray(array), allow_pickle=False)
    return Path(path)
