"""Write a synthetic dataset folder atomically, or reuse the complete one already there.

Every dataset written here carries a marker file, `MARKER`, beside its info file (so under
``_groundtruth/`` where that folder holds the ground truth, outside what `describe` counts and
`download` copies); it lists the generator's parameters and every file it wrote. Replacing a
dataset (``overwrite=True``, ``--overwrite``) deletes only those files, and only in a folder that
has the marker and holds nothing else: neurotorch never deletes a file it did not write.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from neurotorch.errors import DatasetExistsError, NeurotorchError, OutputWriteError
from neurotorch.io.atomic import current_umask, deferred_sync, sync_folder, write_json
from neurotorch.io.locks import path_lock

MARKER = ".neurotorch-synthetic.json"

log = logging.getLogger(__name__)


def _files_under(folder: Path) -> list[str]:
    """Relative POSIX paths of every file (and link) under ``folder``, sorted."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_symlink() or not p.is_dir()
    )


def marker_relpath(info_relpath: str) -> str:
    """Where the marker of a dataset with info file ``info_relpath`` lies, relative to its root."""
    return posixpath.join(posixpath.dirname(info_relpath), MARKER)


def _read_marker(path: Path) -> dict | None:
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), list) else None


def _written_with(info_path: Path, params: dict) -> bool:
    """Whether the info file of a complete dataset records ``params`` (it is written last)."""
    try:
        found = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and {k: found.get(k) for k in params} == params


def _missing_files(root: Path, info_relpath: str) -> list[str]:
    """The files the marker of the dataset at ``root`` lists that are not there (none for a
    dataset of an older version, which has no marker to check)."""
    marker = _read_marker(root / marker_relpath(info_relpath))
    files = marker["files"] if marker is not None else []
    return [name for name in files if not (root / name).is_file()]


def _reusable(root: Path, params: dict, info_relpath: str) -> bool:
    """Whether ``root`` holds the complete dataset of ``params``: its info file records them and
    every file its marker lists is there."""
    return _written_with(root / info_relpath, params) and not _missing_files(root, info_relpath)


def _check_replaceable(root: Path, marker: dict | None, marker_name: str, what: str) -> list[str]:
    """The files of the neurotorch dataset at ``root``; raise if anything else is there."""
    if marker is None:
        raise DatasetExistsError(
            f"{root} is not empty and was not written by neurotorch's synthetic {what} generator "
            f"(it has no {marker_name}); neurotorch deletes only datasets it wrote. Choose a new "
            "or empty folder (a synthetic dataset of an older neurotorch must be deleted by hand)."
        )
    ours = set(marker["files"]) | {marker_name}
    foreign = [name for name in _files_under(root) if name not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise DatasetExistsError(
            f"{root} holds a synthetic {what} dataset and files neurotorch did not write "
            f"({shown}); move them out of the folder or choose another folder."
        )
    return sorted(ours)


def _remove_dataset(root: Path, files: list[str]) -> None:
    """Delete ``files`` under ``root``, then the folders they leave empty, then ``root``."""
    for name in files:
        (root / name).unlink(missing_ok=True)
    folders = {
        parent for name in files for parent in (root / name).parents if root in parent.parents
    }
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    root.rmdir()  # fails, rather than deleting, if anything else appeared meanwhile


def _files_to_replace(
    root: Path, params: dict, info_relpath: str, what: str, overwrite: bool
) -> list[str] | None:
    """None when ``root`` holds the complete dataset of ``params`` (reuse it); else the files of the
    dataset there that writing replaces (``[]`` for a missing or empty folder)."""
    if not (root.is_dir() and any(root.iterdir())):
        return []
    same = _written_with(root / info_relpath, params)
    if same and not overwrite:
        missing = _missing_files(root, info_relpath)
        if not missing:
            return None
        log.warning(
            "%s lacks %d file(s) of its synthetic %s dataset (%s); writing it again",
            root,
            len(missing),
            what,
            ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else ""),
        )
    marker_name = marker_relpath(info_relpath)
    existing = _check_replaceable(root, _read_marker(root / marker_name), marker_name, what=what)
    if not overwrite and not same:
        described = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise DatasetExistsError(
            f"{root} holds a synthetic {what} dataset written with other parameters than "
            f"{described}; choose another folder, or replace it with overwrite=True (on the "
            "command line: --overwrite)."
        )
    return existing


def _write_partial(
    partial: Path, params: dict, info_relpath: str, write: Callable, what: str
) -> None:
    """Write the dataset, its info file (last but the marker) and its marker into ``partial``."""
    with deferred_sync():  # synced once, before the rename that publishes the dataset
        extra = write(partial)
        info_path = partial / info_relpath
        info_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(info_path, {**params, **extra})
        listing = {"what": what, "params": params, "files": _files_under(partial)}
        write_json(partial / marker_relpath(info_relpath), listing)


def _publish(partial: Path, root: Path, params: dict, info_relpath: str, what: str) -> None:
    """Rename ``partial`` to ``root`` (a missing or empty folder). Another machine sharing the
    folder may have published the same dataset first: then it is reused."""
    try:
        os.replace(partial, root)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        if not _written_with(root / info_relpath, params):
            raise DatasetExistsError(
                f"{root} was filled by another process while the synthetic {what} dataset was "
                "written; choose another folder."
            ) from exc
        return
    sync_folder(root.parent)


def write_dataset_once(
    root: Path,
    params: dict,
    info_relpath: str,
    write: Callable[[Path], dict],
    *,
    what: str,
    overwrite: bool = False,
) -> Path:
    """Build a dataset with ``write(folder) -> extra_info`` and move it to ``root`` in one rename.

    A missing or empty ``root`` is written. A complete dataset at ``root`` whose info file records
    the same ``params`` is reused as is (one that lacks files its marker lists is written again); one with other ``params`` raises `DatasetExistsError` unless
    ``overwrite``, which replaces it. Any other non-empty ``root`` (no marker, or files the
    generator did not write) raises `DatasetExistsError` even with ``overwrite``. The dataset is
    written into a hidden sibling folder first, so an interrupted run never leaves a half-written
    dataset at ``root``; ``info_relpath`` receives ``params`` and the extra info.

    Concurrent callers (the ranks of a ``torchrun`` script, several notebooks) serialise on a lock
    (`neurotorch.io.locks.path_lock`): one writes, the others wait and then reuse its dataset.

    Raises
    ------
    DatasetExistsError
        ``root`` is a file, or holds something that is not this dataset (see above).
    OutputWriteError
        The dataset could not be written (a full disk, no permission); nothing is left at ``root``.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetExistsError(
            f"{root} is a file; give a folder for the synthetic {what} dataset."
        )
    if not overwrite and _reusable(root, params, info_relpath):
        return root  # complete: no lock needed to reuse it
    root.parent.mkdir(parents=True, exist_ok=True)
    with path_lock(root):
        existing = _files_to_replace(root, params, info_relpath, what=what, overwrite=overwrite)
        if existing is None:  # another process wrote it while this one waited
            return root
        log.info("writing a synthetic %s dataset to %s", what, root)
        partial = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.partial-"))
        partial.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would hide it from others
        try:
            _write_partial(partial, params, info_relpath, write=write, what=what)
            if existing:
                _remove_dataset(root, existing)
            _publish(partial, root, params=params, info_relpath=info_relpath, what=what)
        except OSError as exc:
            if isinstance(exc, NeurotorchError) and not isinstance(exc, OutputWriteError):
                raise
            error = OutputWriteError(
                f"Could not write the synthetic {what} dataset to {root}: "
                f"{exc.strerror or exc}. Nothing was left there; free space or choose a "
                "writable folder, then run again."
            )
            error.errno = exc.errno
            raise error from exc
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return root
