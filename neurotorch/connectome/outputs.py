"""Output folders that neurotorch owns, and output files that are complete or absent.

`output_folder` writes a multi-file output (the maps and tables of lesion network mapping) into a
hidden sibling folder and publishes it with one rename, with a marker file (`layout.OUTPUT_MARKER`)
that lists every file written. It refuses a non-empty folder that neurotorch did not write (the
user's own ``summary.csv`` stays as it is); with ``overwrite`` it replaces a previous neurotorch
output, and only one that holds nothing but the files its marker lists. An error while writing
(a full disk, no permission) leaves the previous state untouched and raises `OutputWriteError`
naming the path; no partial output is left behind.

`write_image` writes one NIfTI image the same way: atomically, with the same named error.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib

from neurotorch.connectome import layout
from neurotorch.errors import DatasetExistsError, NeurotorchError, OutputWriteError
from neurotorch.io.atomic import atomic_path, current_umask, sync_folder, write_json

_HINTS: dict[int | None, str] = {
    errno.ENOSPC: "the disk is full; free space or write somewhere else",
    errno.EDQUOT: "the disk quota is exhausted; free space or write somewhere else",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EROFS: "the file system is read-only; choose another folder",
}


def _write_failure(path: Path, exc: OSError, staging: Path | None = None) -> OutputWriteError:
    """An `OutputWriteError` naming the file that failed (its final path, not the staging one)."""
    failed = Path(exc.filename) if isinstance(exc.filename, (str, os.PathLike)) else path
    if staging is not None and staging in failed.parents:
        failed = path / failed.relative_to(staging)
    hint = _HINTS.get(exc.errno, "check the path and the disk")
    return OutputWriteError(
        f"Could not write {failed}: {exc.strerror or exc} ({hint}). Nothing was left there."
    )


@contextlib.contextmanager
def reported_write(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into an `OutputWriteError` naming it."""
    try:
        yield
    except NeurotorchError:
        raise
    except OSError as exc:
        raise _write_failure(Path(path), exc) from exc


def write_image(image: nib.spatialimages.SpatialImage, path: str | os.PathLike) -> Path:
    """Write ``image`` to ``path`` atomically (complete or absent); return the path.

    Raises
    ------
    OutputWriteError
        The file could not be written (full disk, no permission, missing folder).
    """
    path = Path(path)
    with reported_write(path), atomic_path(path) as tmp:
        nib.save(image, tmp)
    return path


@dataclass
class OutputFolder:
    """A folder being written: files go to ``staging`` and appear at ``path`` all at once."""

    path: Path  # where the output appears when complete
    staging: Path  # the hidden sibling folder it is written into
    files: list[str] = field(default_factory=list)  # names written so far, in order

    def target(self, name: str) -> Path:
        """Where a writer that writes atomically itself puts the file ``name``."""
        self.files.append(name)
        return self.staging / name

    @contextlib.contextmanager
    def file(self, name: str) -> Iterator[Path]:
        """A temporary path to write the file ``name`` to; it is kept when the block ends.

        An ``OSError`` while writing it (a full disk) becomes `OutputWriteError` naming the file
        at its final place.
        """
        with reported_write(self.path / name), atomic_path(self.staging / name) as tmp:
            yield tmp
        self.files.append(name)

    def final_paths(self) -> list[Path]:
        """The published paths of the files written so far."""
        return [self.path / name for name in self.files]


def _files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())


def _listed_files(marker: Path) -> list[str] | None:
    """The files a marker lists, or ``None`` if it is missing or not a neurotorch marker."""
    try:
        content = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    files = content.get("files") if isinstance(content, dict) else None
    return files if isinstance(files, list) else None


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _previous_output(path: Path, what: str, overwrite: bool) -> list[str]:
    """The files of a previous neurotorch output at ``path`` (``[]``: nothing there); raise
    `DatasetExistsError` for anything neurotorch may not replace."""
    if path.resolve() in (Path.cwd(), *Path.cwd().parents):
        raise DatasetExistsError(
            f"{path} is the current folder or holds it; the {what} are put in place by renaming "
            "a complete folder there, which cannot replace the folder you work in. Give a new "
            "subfolder (for example maps/)."
        )
    if not path.exists():
        return []
    if not path.is_dir():
        raise DatasetExistsError(f"{path} is a file; give a folder for the {what}.")
    present = _files_under(path)
    if not present:
        return []
    listed = _listed_files(path / layout.OUTPUT_MARKER)
    if listed is None:
        raise DatasetExistsError(
            f"{path} is not empty and neurotorch did not write it (no {layout.OUTPUT_MARKER}; it "
            f"holds {_shown(present)}). neurotorch writes {what} only into a new or empty folder "
            "or over its own previous output; choose another folder."
        )
    foreign = [name for name in present if name not in {*listed, layout.OUTPUT_MARKER}]
    if foreign:
        raise DatasetExistsError(
            f"{path} holds a previous neurotorch output and files neurotorch did not write "
            f"({_shown(foreign)}); move them out of the folder or choose another folder."
        )
    if not overwrite:
        raise DatasetExistsError(
            f"{path} holds a previous neurotorch output; pass overwrite=True (on the command "
            "line: --overwrite) to replace it, or choose another folder."
        )
    return present


def check_output_folder(
    path: str | os.PathLike, *, overwrite: bool = False, what: str = "outputs"
) -> None:
    """Raise `DatasetExistsError` now if `output_folder` would refuse ``path`` (so a long run
    fails before its work, not after); see `output_folder` for the rule."""
    _previous_output(Path(path), what, overwrite)


def _remove_output(folder: Path, files: list[str]) -> None:
    """Delete ``files`` under ``folder``, the sub-folders they leave empty, then ``folder``."""
    for name in files:
        (folder / name).unlink(missing_ok=True)
    for sub in sorted(
        {p for name in files for p in Path(name).parents}, key=lambda p: len(p.parts), reverse=True
    ):
        if sub != Path(".") and not any((folder / sub).iterdir()):
            (folder / sub).rmdir()
    folder.rmdir()  # fails, rather than deleting, if anything else appeared meanwhile


def _publish(staging: Path, path: Path, previous: list[str]) -> None:
    """Move the complete ``staging`` folder to ``path``, replacing a previous output."""
    if not previous:
        if path.is_dir():
            path.rmdir()  # an empty folder the user made for the output
        os.replace(staging, path)
    else:
        aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.previous-"))
        os.replace(path, aside)
        os.replace(staging, path)
        _remove_output(aside, previous)
    sync_folder(path.parent)


@contextlib.contextmanager
def output_folder(
    path: str | os.PathLike, *, overwrite: bool = False, what: str = "outputs"
) -> Iterator[OutputFolder]:
    """Write a multi-file output that appears at ``path`` complete, or not at all.

    The block writes its files into `OutputFolder.staging` (with `OutputFolder.file` or
    `OutputFolder.target`); when it ends, the marker listing them is written and the folder is
    renamed to ``path``. If the block raises, nothing changes at ``path``.

    Parameters
    ----------
    path
        The output folder: absent, empty, or a previous neurotorch output (with ``overwrite``).
    overwrite
        Replace a previous neurotorch output at ``path``.
    what
        What the output is, for messages (``"lesion network maps"``).

    Raises
    ------
    DatasetExistsError
        ``path`` is a file, a non-empty folder neurotorch did not write, a previous output with
        files added by hand, or a previous output and ``overwrite`` is off.
    OutputWriteError
        A file could not be written (full disk, no permission); ``path`` is left as it was.
    """
    path = Path(path)
    previous = _previous_output(path, what, overwrite)
    with reported_write(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    try:
        staging.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would hide the output
        folder = OutputFolder(path, staging)
        try:
            yield folder
            marker = {"what": what, "files": [*folder.files, layout.OUTPUT_MARKER]}
            write_json(staging / layout.OUTPUT_MARKER, marker)
            _publish(staging, path, previous)
        except NeurotorchError:
            raise
        except OSError as exc:
            raise _write_failure(path, exc, staging) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
