"""Write a synthetic dataset folder atomically, or reuse the complete one already there.

Every dataset written here carries a marker file, `MARKER`, beside its info file (so under
``_groundtruth/`` where that folder holds the ground truth, outside what `describe` counts and
`download` copies); it lists the generator's parameters and every file it wrote. Replacing a
dataset (``overwrite=True``, ``--overwrite``) deletes only those files, and only in a folder that
has the marker and holds nothing else: neurotorch never deletes a file it did not write.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from neurotorch.errors import DatasetExistsError
from neurotorch.io.atomic import current_umask, deferred_sync, sync_folder, write_json

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
    the same ``params`` is reused as is; one with other ``params`` raises `DatasetExistsError` unless
    ``overwrite``, which replaces it. Any other non-empty ``root`` (no marker, or files the
    generator did not write) raises `DatasetExistsError` even with ``overwrite``. The dataset is
    written into a hidden sibling folder first, so an interrupted run never leaves a half-written
    dataset at ``root``; ``info_relpath`` receives ``params`` and the extra info.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetExistsError(
            f"{root} is a file; give a folder for the synthetic {what} dataset."
        )
    existing: list[str] = []
    marker_name = marker_relpath(info_relpath)
    if root.is_dir() and any(root.iterdir()):
        if not overwrite and _written_with(root / info_relpath, params):
            return root
        existing = _check_replaceable(root, _read_marker(root / marker_name), marker_name, what)
        if not overwrite:
            described = ", ".join(f"{k}={v!r}" for k, v in params.items())
            raise DatasetExistsError(
                f"{root} holds a synthetic {what} dataset written with other parameters than "
                f"{described}; choose another folder, or replace it with overwrite=True (on the "
                "command line: --overwrite)."
            )
    log.info("writing a synthetic %s dataset to %s", what, root)
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.partial-"))
    partial.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would hide the dataset from others
    try:
        with deferred_sync():  # synced once, before the rename that publishes the dataset
            extra = write(partial)
            info_path = partial / info_relpath
            info_path.parent.mkdir(parents=True, exist_ok=True)
            write_json(info_path, {**params, **extra})
            listing = {"what": what, "params": params, "files": _files_under(partial)}
            write_json(partial / marker_name, listing)
        if root.is_dir():
            _remove_dataset(root, existing)
        os.replace(partial, root)
        sync_folder(root.parent)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root
