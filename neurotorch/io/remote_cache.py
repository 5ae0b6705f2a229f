"""Local copies of remote files: resumable transfers and a cache for files used repeatedly.

`fetch_file` copies one file of a `DataRoot` to a local path: it writes a partial file named
after the remote version, continues it with a ranged read after an interruption, checks the
size and moves it into place (`neurotorch.io.atomic.commit_file`), under a file lock
(`neurotorch.io.locks.path_lock`) so that concurrent processes
never write the same file twice. `cached_local_copy` uses it to keep one local copy per remote
file version under ``config.cache_dir()/remote`` for libraries that need a real path (h5py,
nibabel on masks); `DataRoot.local_path` calls it.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from filelock import Timeout

from neurotorch import config
from neurotorch.errors import CorruptFileError, RemoteAccessError
from neurotorch.io.atomic import commit_file, named_write_errors
from neurotorch.io.locks import path_lock


class DataRoot(Protocol):
    """What this module needs of a dataset root (`neurotorch.io.storage.DataRoot` has it)."""

    is_local: bool
    protocol: str

    def path(self, *parts: str) -> str: ...

    def info(self, relpath: str) -> Any: ...

    def open(self, relpath: str, mode: str = "rb", **options: Any) -> IO[bytes]: ...

    @property
    def endpoint(self) -> str: ...


# Read size of a transfer; the remote file is read ahead in blocks of TRANSFER_BLOCK_SIZE.
TRANSFER_CHUNK_SIZE = 4 * 2**20
TRANSFER_BLOCK_SIZE = 16 * 2**20
PARTIAL_SUFFIX = ".part"

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _token(text: str) -> str:
    """``text`` reduced to characters safe in a file name."""
    return _UNSAFE_CHARS.sub("_", text)[:80] or "_"


def partial_path(destination: Path, version: str) -> Path:
    """The partial file a transfer of ``version`` writes before renaming it to ``destination``."""
    return destination.with_name(f"{destination.name}.{_token(version)}{PARTIAL_SUFFIX}")


def fetch_file(
    root: DataRoot,
    relpath: str,
    destination: str | os.PathLike,
    *,
    size: int | None = None,
    version: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """Copy ``root/relpath`` to ``destination``, resuming a partial copy; return bytes transferred.

    Parameters
    ----------
    root, relpath
        The remote (or local) file.
    destination
        Local file to create; its folder is created. An existing file of the expected size is
        kept and nothing is transferred.
    size, version
        Expected size in bytes and version tag (see `DataRoot.info`); looked up when omitted.
        A partial file is only continued if it belongs to the same version.
    on_bytes
        Called with the number of bytes of every chunk written (and of the bytes a resumed
        transfer skips), e.g. a tqdm bar's ``update``.

    The copy is of ``version`` only: a file with another version when it is opened, or
    replaced while it is read (S3: every read carries If-Match; any store: its version is looked
    up again after the reads) raises `RemoteAccessError` and is never moved into place.

    Raises
    ------
    RemoteAccessError
        The store could not be read (the partial file is kept; call again to resume), the file
        was replaced while it was read (the partial file is deleted unless S3 refused the read
        before any byte of the new version arrived; call again for the new version), or the
        partial file was removed by another process (call again).
    CorruptFileError
        The copy ended with a size other than the remote size.
    OutputWriteError
        ``destination`` cannot be written (a full disk, no permission); the partial file is kept.
    """
    destination = Path(destination)
    if size is None or version is None:
        details = root.info(relpath)
        size, version = details["size"], details["version"]
    if destination.is_file() and destination.stat().st_size == size:
        return 0
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(destination, version)
    with path_lock(destination):
        if destination.is_file() and destination.stat().st_size == size:
            return 0
        # again under the lock: `cached_local_copy` in another process may have removed an
        # outdated version's folder between the first mkdir and the lock
        destination.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(destination, keep=partial)
        offset = partial.stat().st_size if partial.is_file() else 0
        if offset > size:
            partial.unlink()
            offset = 0
        if offset and on_bytes:
            on_bytes(offset)
        transferred = 0
        try:
            with named_write_errors(destination):  # a full disk names the file; the part is kept
                if offset < size:
                    with (
                        # version: checked at open, and by every read on S3 (If-Match)
                        root.open(
                            relpath, block_size=TRANSFER_BLOCK_SIZE, size=size, version=version
                        ) as source,
                        open(partial, "ab") as sink,
                    ):
                        source.seek(offset)
                        while chunk := source.read(TRANSFER_CHUNK_SIZE):
                            sink.write(chunk)
                            transferred += len(chunk)
                            if on_bytes:
                                on_bytes(len(chunk))
                elif not partial.exists():
                    partial.touch()
            final_size = partial.stat().st_size
        except FileNotFoundError as exc:
            if exc.filename is None or Path(exc.filename) != partial:
                raise  # the remote file is missing: stays a FileNotFoundError
            raise RemoteAccessError(
                f"The partial copy {partial} of {root.path(relpath)} was removed while it was "
                "written (another process cleaning the cache for a newer version of the file?). "
                "Run again to transfer it anew."
            ) from exc
        if transferred:  # a store without If-Match (HTTP, local, ...) serves a replacement
            found = root.info(relpath)["version"]
            if found != version:  # the copy may mix both versions: never published
                partial.unlink(missing_ok=True)
                raise RemoteAccessError(
                    f"{root.path(relpath)} was replaced in the store while it was read (version "
                    f"{found!r}, expected {version!r}), so the copy would mix two versions; it "
                    "was deleted. Run again to transfer the new version."
                )
        if final_size != size:
            partial.unlink()
            raise CorruptFileError(
                f"Copy of {root.path(relpath)} has {final_size} bytes, the store reports {size}; "
                "the file changed during the transfer or the server cut it short. Run again to "
                "transfer it anew."
            )
        commit_file(partial, destination)
    return transferred


def _remove_stale_partials(destination: Path, keep: Path) -> None:
    """Delete partial files of other versions of ``destination`` (the remote file changed)."""
    pattern = f"{destination.name}.*{PARTIAL_SUFFIX}"
    for stale in destination.parent.glob(pattern):
        if stale != keep:
            stale.unlink(missing_ok=True)


def remote_cache_dir() -> Path:
    """Folder of cached remote files: ``config.cache_dir()/remote`` (``NEUROTORCH_CACHE``)."""
    return config.cache_dir() / "remote"


def cache_entry_dir(
    root: DataRoot, relpath: str, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Folder holding the cached versions of one remote file.

    ``<cache>/<protocol>-<hash of endpoint and URL>/<bucket and path>``: readable, and distinct
    for the same URL on different endpoints.
    """
    url = root.path(relpath)
    digest = hashlib.sha256(f"{root.endpoint}\n{url}".encode()).hexdigest()[:12]
    location = url.split("://", 1)[-1]
    parts = [_token(part) for part in location.split("/") if part]
    base = Path(cache_dir) if cache_dir is not None else remote_cache_dir()
    return base.joinpath(f"{_token(root.protocol)}-{digest}", *parts)


def cached_local_copy(
    root: DataRoot, relpath: str, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Local path of a copy of ``root/relpath``, downloaded once per remote version.

    Every call asks the store for the file's version (one metadata request), so a file that
    changes remotely is fetched again.

    The copy lives at ``<cache entry>/<version>/<file name>`` (see `cache_entry_dir`); a new
    remote version (ETag) is downloaded anew and older copies are removed, except one that
    another process is still transferring (its lock is held; a later call removes it).
    Concurrent callers (DataLoader workers, DDP ranks) wait on a file lock while one of them
    downloads. When the store cannot be reached and a copy is already cached, that copy is used
    with a warning.

    Parameters
    ----------
    root
        The dataset root (any `DataRoot`; a local root returns its own path).
    relpath
        Path of the file relative to the root.
    cache_dir
        Cache folder; default `remote_cache_dir`.
    """
    if root.is_local:
        return Path(root.path(relpath))
    entry = cache_entry_dir(root, relpath, cache_dir)
    name = posixpath.basename(relpath)
    try:
        details = root.info(relpath)
    except RemoteAccessError as exc:
        cached = _newest_cached_copy(entry, name)
        if cached is None:
            raise
        warnings.warn(f"{exc} Using the cached copy {cached}.", stacklevel=2)
        return cached
    target = entry / _token(details["version"]) / name
    fetch_file(root, relpath, target, size=details["size"], version=details["version"])
    for other in entry.iterdir():
        if other.is_dir() and other != target.parent:
            _remove_outdated(other / name)
    return target


def _remove_outdated(copy: Path) -> None:
    """Remove the folder of an outdated cached version, unless a transfer into it is running.

    Another process may still be writing that version (`fetch_file` holds the lock of ``copy``
    while its partial file grows): its folder is left to it and removed by a later call.
    """
    lock = path_lock(copy)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return
    try:
        _remove_tree(copy.parent)
    finally:
        lock.release()


def _newest_cached_copy(entry: Path, name: str) -> Path | None:
    copies = [p for p in entry.glob(f"*/{name}") if p.is_file()] if entry.is_dir() else []
    return max(copies, key=lambda p: p.stat().st_mtime) if copies else None


def _remove_tree(folder: Path) -> None:
    """Best-effort removal of an outdated cache version (another process may still read it)."""
    for path in sorted(folder.rglob("*"), reverse=True):
        try:
            path.rmdir() if path.is_dir() else path.unlink()
        except OSError:
            return
    try:
        folder.rmdir()
    except OSError:
        pass
