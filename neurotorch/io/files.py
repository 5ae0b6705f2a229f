"""Single files on a local disk or behind an fsspec URL (``s3://bucket/prefix/file.npz``).

Readers that take a file path or URL plus ``storage_options`` (leadfield NPZ files, posterior
summaries, connectome batches) go through a `neurotorch.io.storage.DataRoot` of the file's
folder: small files are read into memory (e.g. NPZ parsed by ``np.load(..., allow_pickle=False)``);
HDF5 files are opened from a local path (the file itself, or a cached copy of a remote one, see
`DataRoot.local_path`).
"""

from __future__ import annotations

import os
from pathlib import Path

from neurotorch.errors import DataNotDownloadedError, ParameterError
from neurotorch.io.storage import DataRoot, is_url

FilePath = str | os.PathLike


def file_root(path: FilePath, storage_options: dict | None = None) -> tuple[DataRoot, str]:
    """The `DataRoot` of the folder holding ``path`` and the file's name in it."""
    text = os.fspath(path)
    if is_url(text):
        folder, _, name = text.rstrip("/").rpartition("/")
        return DataRoot(folder, storage_options), name
    local = Path(text).expanduser()
    return DataRoot(local.parent, storage_options), local.name


def as_path(root: DataRoot, relpath: str) -> Path | str:
    """``relpath`` under ``root`` as a `Path` (local root) or a URL string (remote root)."""
    return Path(root.path(relpath)) if root.is_local else root.path(relpath)


def _missing(root: DataRoot, name: str, what: str) -> DataNotDownloadedError:
    return DataNotDownloadedError(
        f"{what} {root.path(name)} does not exist; check the data root and the file name."
    )


def read_bytes(path: FilePath, storage_options: dict | None = None, what: str = "File") -> bytes:
    """The whole content of ``path``; `DataNotDownloadedError` when there is no such file."""
    root, name = file_root(path, storage_options)
    try:
        with root.open(name) as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise _missing(root, name, what) from exc


def local_copy(path: FilePath, storage_options: dict | None = None, what: str = "File") -> Path:
    """A local path of ``path``: the file itself, or a cached copy of a remote file."""
    root, name = file_root(path, storage_options)
    try:
        local = root.local_path(name)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise _missing(root, name, what) from exc
    if not local.is_file():
        raise _missing(root, name, what)
    return local


def check_writable(root: DataRoot, what: str) -> None:
    """Raise `ValueError` naming ``what`` when ``root`` is a URL (neurotorch writes locally only)."""
    if not root.is_local:
        raise ParameterError(
            f"{what} writes to a local folder, but {root.url} is a URL; neurotorch only reads "
            "from object stores. Use a local folder (and upload the files yourself) or do not save."
        )
