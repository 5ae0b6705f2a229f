"""Download a subset of LAION-fMRI (subjects, sessions, optionally stimuli and anatomy).

Files are transferred in parallel with one progress bar in bytes; every file is size-checked and
renamed into place only when complete, then read in full and checked (gzip CRC, HDF5 and NPZ
checksums, table parse; see `neurotorch.io.integrity`) and recorded as verified; an interrupted
run resumes from its partial files, and a rerun over a complete download transfers nothing. The
stimulus images carry their own licence, which is shown and must be accepted (interactively, or
with ``accept_license=True``).

Each file is one unit of work (`DownloadUnit`, `neurotorch.parallel`): by default ``workers``
threads of this process run them; ``scheduler=`` runs them on a Dask cluster (each worker writes
into ``out``, which must then be a folder they all see) and ``only=`` runs one file of a job array
(refused once the source's selection differs from the one its units were listed from).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from neurotorch import config
from neurotorch.errors import (
    CorruptFileError,
    LicenseNotAcceptedError,
    NoMatchingDataError,
    OutputWriteError,
    ParameterError,
    RemoteAccessError,
    SubjectNotFoundError,
    UnitsFailedError,
)
from neurotorch.fmri import layout
from neurotorch.fmri.discovery import Source, get_sessions, get_subjects, source_root
from neurotorch.io.atomic import write_json
from neurotorch.io.integrity import check_files, file_kind, is_verified
from neurotorch.io.locks import path_lock
from neurotorch.io.remote_cache import fetch_file
from neurotorch.io.storage import DataRoot
from neurotorch.parallel import UnitResult, run_units, stop_requested

# Folder of NEUROTORCH_CACHE holding the files of each job array's units (`unit_plan_path`).
PLAN_DIR = "download-plans"
# Names of a licence file the source may ship with its stimuli, looked up in this order.
LICENSE_FILES = (f"{layout.STIMULI_DIR}/LICENSE", f"{layout.STIMULI_DIR}/LICENSE.txt", "LICENSE")
STIMULUS_LICENSE_NOTICE = """\
LAION-fMRI stimulus images
--------------------------
The stimulus images (and the embeddings, captions and segmentations derived from them) come from
public web collections such as LAION-5B. Their copyright stays with their owners; they are shared
for non-commercial scientific research only. By accepting you agree to use them for research,
not to redistribute them, and to remove any image whose owner asks for it.
"""


@dataclass
class DownloadResult:
    """What `download_laion_fmri` did.

    Attributes
    ----------
    out
        The local dataset root.
    files
        Every selected file (paths relative to the root), already present or transferred; with
        ``only=``, the files of those units.
    transferred
        The files that were (fully or partly) transferred by this call.
    bytes_transferred
        Bytes received for the files this call completed.
    """

    out: Path
    files: list[str] = field(default_factory=list)
    transferred: list[str] = field(default_factory=list)
    bytes_transferred: int = 0


def stimulus_license_text(source: Source = None, storage_options: dict | None = None) -> str:
    """The licence of the stimuli: the source's own licence file, else the standard notice."""
    root = source_root(source, storage_options)
    for relpath in LICENSE_FILES:
        if root.exists(relpath):
            with root.open(relpath, mode="r") as handle:
                return handle.read()
    return STIMULUS_LICENSE_NOTICE


def confirm_license(text: str, accept_license: bool) -> None:
    """Show the licence and ask for a ``yes`` unless ``accept_license``; raise if refused.

    Raises
    ------
    LicenseNotAcceptedError
        The user answered anything but ``yes``, or no terminal is attached and the licence was
        not accepted with ``accept_license=True`` / ``--accept-license``.
    """
    if accept_license:
        return
    how = "pass accept_license=True (or --accept-license on the command line)"
    if not sys.stdin or not sys.stdin.isatty():
        raise LicenseNotAcceptedError(
            "The stimuli have a licence that must be accepted before download and no terminal is "
            f"attached to ask. Read it below and, if you agree, {how}.\n\n{text}"
        )
    print(text)
    answer = input("Type 'yes' to accept the stimulus licence: ").strip().lower()
    if answer != "yes":
        raise LicenseNotAcceptedError(
            f"Stimulus licence not accepted (answer {answer!r}); nothing was downloaded. "
            f"To accept it in scripts, {how}."
        )


def select_files(
    root: DataRoot,
    subjects: str | Iterable[str | int] | None = None,
    sessions: str | Iterable[str | int] | None = None,
    include_stimuli: bool = False,
    include_anatomical: bool = False,
) -> dict[str, dict]:
    """The files a download copies: ``{relative path: {"size", "version"}}``.

    Always: files at the top of the root, the split files of the ``shared`` pool and of the
    chosen subjects, and per subject its subject-level maps,
    the selected sessions, its ROIs and its anatomical brain mask (the default mask). Optional:
    every anatomical image (``include_anatomical``) and ``stimuli/`` (``include_stimuli``).
    """
    all_subjects = get_subjects(root)
    chosen = all_subjects if subjects is None else [layout.subject_id(s) for s in _ids(subjects)]
    missing = sorted(set(chosen) - set(all_subjects))
    if missing:
        raise SubjectNotFoundError(
            f"Subjects {missing} are not in {root.url} (available: {', '.join(all_subjects)})."
        )
    wanted_sessions = None if sessions is None else {layout.session_id(s) for s in _ids(sessions)}
    selected: dict[str, dict] = {}
    selected.update(_top_level_files(root))
    for rel, info in root.files(layout.SPLITS_DIR).items():
        pool = rel.split("/")[1]
        if not pool.startswith("sub-") or pool in chosen:
            selected[rel] = info
    for sid in chosen:
        subject_files = root.files(layout.subject_dir(sid))
        available_sessions = get_sessions(sid, root)
        if wanted_sessions is not None and not wanted_sessions & set(available_sessions):
            raise NoMatchingDataError(
                f"None of the sessions {sorted(wanted_sessions)} exists for {sid} in {root.url} "
                f"(available: {', '.join(available_sessions)})."
            )
        for rel, info in subject_files.items():
            folder = rel.split("/")[3] if rel.count("/") >= 4 else ""
            is_session = folder.startswith("ses-")
            if not is_session or wanted_sessions is None or folder in wanted_sessions:
                selected[rel] = info
        selected.update(root.files(layout.ROI_DIR, sid))
        if include_anatomical:
            selected.update(root.files(layout.ANAT_DIR, sid))
        else:
            mask = layout.anatomical_brain_mask(sid)
            if root.exists(mask):
                selected[mask] = root.info(mask)
    if include_stimuli:
        selected.update(root.files(layout.STIMULI_DIR))
    return dict(sorted(selected.items()))


def _ids(ids: str | int | Iterable[str | int]) -> list[str | int]:
    """One id or several as a list: a string is one id, never its characters."""
    return [ids] if isinstance(ids, str | int) else list(ids)


def _top_level_files(root: DataRoot) -> dict[str, dict]:
    """Files directly at the root (README, dataset_description.json, ...) without a deep listing."""
    return {name: root.info(name) for name in root.listdir() if not root.isdir(name)}


@dataclass(frozen=True)
class DownloadUnit:
    """One file of a download: a unit of work of `neurotorch.parallel`.

    It transfers ``root/relpath`` to ``out/relpath`` (continuing a partial copy of the same
    version), reads it in full and checks it; a damaged copy is deleted and transferred once more,
    and one damaged again is deleted and raises `CorruptFileError`. Its output is the checked
    file, recorded as verified: the unit is done while that file is there, complete and
    unchanged (a file of a kind neurotorch does not check: complete). ``on_bytes`` (threads of
    this process only) is called with every chunk's size.
    """

    root: DataRoot
    out: str
    relpath: str
    size: int
    version: str
    on_bytes: Callable[[int], None] | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"download/{self.relpath}"

    @property
    def destination(self) -> Path:
        return Path(self.out) / self.relpath

    @property
    def lock_path(self) -> Path:
        # not the transfer's own lock (`fetch_file` takes that one inside the unit)
        return Path(path_lock(f"{self.destination}.unit").lock_file)

    def _complete(self) -> bool:
        path = self.destination
        return path.is_file() and path.stat().st_size == self.size

    def done(self) -> bool:
        checked = file_kind(self.relpath) == "other" or is_verified(
            DataRoot(self.out), self.relpath
        )
        return checked and self._complete()

    def _count(self, n: int) -> None:
        if stop_requested():  # interrupted: end this transfer here, its partial file is kept
            raise InterruptedError("download interrupted")
        if self.on_bytes is not None:
            self.on_bytes(n)

    def run(self) -> dict[str, Any]:
        """Transfer and check the file; return ``{"bytes": received, "transferred": bool}``."""
        present = self._complete()
        received = 0
        for _ in range(2):  # a damaged copy is transferred once more
            received += fetch_file(
                self.root,
                self.relpath,
                self.destination,
                size=self.size,
                version=self.version,
                on_bytes=self._count,
            )
            if not _remove_damaged(DataRoot(self.out), [self.relpath]):
                return {"bytes": received, "transferred": received > 0 or not present}
            present = False
        raise CorruptFileError(
            f"{self.destination} was damaged after two transfers from {self.root.path(self.relpath)}"
            " and was deleted."
        )


def download_units(
    out: str | os.PathLike,
    subjects: str | Iterable[str | int] | None = None,
    sessions: str | Iterable[str | int] | None = None,
    include_stimuli: bool = False,
    include_anatomical: bool = False,
    source: Source = None,
    storage_options: dict | None = None,
) -> list[DownloadUnit]:
    """The units of a download (one per selected file, in path order; see `select_files`).

    Parameters are those of `download_laion_fmri`; the stimulus licence is not asked here.
    Listing the units (what ``--list-units`` prints) also records their files as the plan of a
    job array over this selection (`unit_plan_path`): a task of the array (``only=``) refuses
    to run once the source's selection differs from it, since its position would then name
    another file.
    """
    root = source_root(source, storage_options)
    units = _selected_units(out, root, subjects, sessions, include_stimuli, include_anatomical)
    plan = unit_plan_path(out, root, subjects, sessions, include_stimuli, include_anatomical)
    with path_lock(plan):
        _write_plan(plan, root, units)
    return units


def _selected_units(
    out: str | os.PathLike,
    root: DataRoot,
    subjects: str | Iterable[str | int] | None,
    sessions: str | Iterable[str | int] | None,
    include_stimuli: bool,
    include_anatomical: bool,
) -> list[DownloadUnit]:
    selected = select_files(
        root,
        subjects,
        sessions,
        include_stimuli=include_stimuli,
        include_anatomical=include_anatomical,
    )
    folder = str(Path(out).expanduser())
    return [
        DownloadUnit(root, folder, rel, size=int(info["size"]), version=str(info["version"]))
        for rel, info in selected.items()
    ]


def unit_plan_path(
    out: str | os.PathLike,
    root: DataRoot,
    subjects: str | Iterable[str | int] | None = None,
    sessions: str | Iterable[str | int] | None = None,
    include_stimuli: bool = False,
    include_anatomical: bool = False,
) -> Path:
    """Where the files of a download's units are recorded for a job array:
    ``NEUROTORCH_CACHE/download-plans/<hash of output folder, source, endpoint, selection>.json``.

    `download_units` (``--list-units``) writes it; the first task of an array writes it when no
    listing did; every task (``only=``) compares the source's selection with it.
    """
    key = {
        "out": str(Path(out).expanduser().resolve()),
        "source": root.url,
        "endpoint": root.endpoint,
        "subjects": None if subjects is None else sorted(map(str, _ids(subjects))),
        "sessions": None if sessions is None else sorted(map(str, _ids(sessions))),
        "stimuli": include_stimuli,
        "anatomical": include_anatomical,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return config.cache_dir() / PLAN_DIR / f"{digest}.json"


def _write_plan(plan: Path, root: DataRoot, units: list[DownloadUnit]) -> None:
    plan.parent.mkdir(parents=True, exist_ok=True)
    listed = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(plan, {"source": root.url, "listed": listed, "files": [u.relpath for u in units]})


def _check_plan(plan: Path, root: DataRoot, units: list[DownloadUnit]) -> None:
    """Refuse a job-array task whose selection differs from the one its units were listed from:
    its position would name another file than in the tasks already run (one skipped, one twice)."""
    with path_lock(plan):
        if not plan.is_file():  # the first task of an array run without --list-units
            _write_plan(plan, root, units)
            return
        saved = json.loads(plan.read_text())
    files = [unit.relpath for unit in units]
    if saved["files"] == files:
        return
    changes = []
    for what, names in (
        ("added", sorted(set(files) - set(saved["files"]))),
        ("removed", sorted(set(saved["files"]) - set(files))),
    ):
        if names:
            more = ", ..." if len(names) > 3 else ""
            changes.append(f"{len(names)} {what} ({', '.join(names[:3])}{more})")
    raise ParameterError(
        f"The files this download selects at {root.url} changed since its units were listed "
        f"({saved['listed']}): {' and '.join(changes)}. A unit index (--unit, only=) would now "
        "name another file than in the tasks already run, so no unit was run. List the units "
        "again (--list-units, or download_units) and run the job array again; units already "
        "done are skipped."
    )


def download_laion_fmri(
    out: str | os.PathLike,
    subjects: str | Iterable[str | int] | None = None,
    sessions: str | Iterable[str | int] | None = None,
    include_stimuli: bool = False,
    include_anatomical: bool = False,
    source: Source = None,
    storage_options: dict | None = None,
    accept_license: bool = False,
    workers: int = 8,
    on_bytes: Callable[[int], None] | None = None,
    scheduler: Any = None,
    only: Iterable[int] | None = None,
) -> DownloadResult:
    """Copy a subset of LAION-fMRI from ``source`` (default ``s3://laion-fmri``) to ``out``.

    Every transferred file is read in full and checked (see `neurotorch.io.integrity`); so is a
    file already present that was never checked. A damaged file is deleted and transferred once
    more; one damaged again (the source's copy is damaged) is deleted and reported. A damaged
    file is never kept, so running the same call again transfers and checks it anew.

    Parameters
    ----------
    out
        Local folder that becomes a LAION-fMRI root (same relative paths as the source).
    subjects, sessions
        Subject and session ids (``"sub-01"``, ``"01"`` or ``1``), one or a list (a string is one
        id); ``None`` for all.
    include_stimuli
        Also copy ``stimuli/`` (images, embeddings, captions, segmentations); needs the
        stimulus licence accepted.
    include_anatomical
        Also copy every anatomical image (the brain mask is always copied).
    source, storage_options
        Where to copy from (URL, local folder or `DataRoot`) and its fsspec options.
    accept_license
        Accept the stimulus licence without the interactive question (for scripts).
    workers
        Parallel transfers (threads of this process).
    on_bytes
        Called with the byte count of every chunk received (besides the progress bar); not
        with a ``scheduler``.
    scheduler
        Run the transfers (`DownloadUnit`, one per file) on this Dask cluster instead (see
        `neurotorch.parallel.run_units`); ``out`` must be a folder every worker sees.
    only
        Positions of the units to run (`download_units`; a job array runs one per task). The
        task compares the source's selection with the one the units were listed from
        (`unit_plan_path`, written by `download_units` or else by the first task) and raises
        `ParameterError` when it changed, rather than run a position that now names another
        file.

    Returns
    -------
    DownloadResult

    Raises
    ------
    RemoteAccessError
        Some files could not be transferred; completed and partial files are kept, so running
        the same call again resumes.
    OutputWriteError
        ``out`` cannot be written (a full disk, no permission): the message names the file.
    CorruptFileError
        Files were damaged after two transfers (they are deleted; the message lists them).
    LicenseNotAcceptedError
        ``include_stimuli`` without accepting the licence.
    NoMatchingDataError
        None of the chosen sessions exists at the source.
    ParameterError
        ``only=`` after the source's selection changed since the units were listed.
    """
    root = source_root(source, storage_options)
    if include_stimuli:
        confirm_license(stimulus_license_text(root), accept_license)
    units = _selected_units(out, root, subjects, sessions, include_stimuli, include_anatomical)
    if only is not None:  # a job-array task: its position must name the file it was listed as
        plan = unit_plan_path(out, root, subjects, sessions, include_stimuli, include_anatomical)
        _check_plan(plan, root, units)
    out = Path(out).expanduser()
    result = DownloadResult(out=out, files=[unit.relpath for unit in units])
    if scheduler is None:  # threads of this process, one progress bar in bytes
        bar = tqdm(
            total=sum(unit.size for unit in units if not unit.done()),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"download {len(units)} files",
            disable=not config.show_progress(),
        )
        lock = threading.Lock()

        def count(n: int) -> None:
            with lock:
                bar.update(n)
                if on_bytes:
                    on_bytes(n)

        units = [dataclasses.replace(unit, on_bytes=count) for unit in units]
        with bar:
            ran = _run(units, root, out, workers=workers, only=only, threads=True)
    else:
        ran = _run(units, root, out, scheduler=scheduler, only=only)
    for unit_result in ran:
        if unit_result.status == "ran":
            result.bytes_transferred += unit_result.value["bytes"]
            if unit_result.value["transferred"]:
                result.transferred.append(unit_result.key.removeprefix("download/"))
    result.transferred.sort()
    if only is not None:  # a job-array task: the files of its own units
        result.files = sorted(r.key.removeprefix("download/") for r in ran)
    return result


def _run(units: list[DownloadUnit], root: DataRoot, out: Path, **engine) -> list[UnitResult]:
    """`run_units`, with the failures of the units raised as the download's own errors."""
    try:
        return run_units(units, progress=False, desc="download", **engine)
    except UnitsFailedError as failed:
        errors = {
            r.key.removeprefix("download/"): r.exception or r.error
            for r in failed.results
            if r.status == "failed"
        }
    full_disk = [exc for exc in errors.values() if isinstance(exc, OutputWriteError)]
    if full_disk:  # the local side: names the file, partial files are kept
        raise full_disk[0]
    damaged = sorted(rel for rel, exc in errors.items() if isinstance(exc, CorruptFileError))
    if damaged and len(damaged) == len(errors):
        raise CorruptFileError(
            f"{len(damaged)} file(s) downloaded to {out} were damaged twice and were deleted: "
            f"{', '.join(damaged)}. The copy at {root.url} is damaged (or the transfer corrupts "
            "it); fetch them from another source or report it to the dataset's maintainers."
        )
    first_rel, first = sorted(errors.items(), key=lambda item: item[0])[0]
    raise RemoteAccessError(
        f"{len(errors)} of {len(units)} files were not downloaded from {root.url} to {out} "
        f"({first_rel}: {first}). Completed and partial files are kept; run the same download "
        "again to resume."
    ) from (first if isinstance(first, BaseException) else None)


def _remove_damaged(local: DataRoot, relpaths: list[str]) -> list[str]:
    """Check ``relpaths`` in full; delete those that fail and return them."""
    damaged = [check.path for check in check_files(local, relpaths, progress=False) if not check.ok]
    for relpath in damaged:
        Path(local.path(relpath)).unlink(missing_ok=True)
    return damaged
