"""Download a subset of LAION-fMRI (subjects, sessions, optionally stimuli and anatomy).

Files are transferred in parallel with one progress bar in bytes; every file is size-checked and
renamed into place only when complete, then read in full and checked (gzip CRC, HDF5 and NPZ
checksums, table parse; see `neurotorch.io.integrity`) and recorded as verified; an interrupted
run resumes from its partial files, and a rerun over a complete download transfers nothing. The
stimulus images carry their own licence, which is shown and must be accepted (interactively, or
with ``accept_license=True``).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from neurotorch import config
from neurotorch.errors import (
    CorruptFileError,
    LicenseNotAcceptedError,
    NoMatchingDataError,
    OutputWriteError,
    RemoteAccessError,
    SubjectNotFoundError,
)
from neurotorch.fmri import layout
from neurotorch.fmri.discovery import Source, get_sessions, get_subjects, source_root
from neurotorch.io.integrity import check_files, is_verified
from neurotorch.io.remote_cache import fetch_file
from neurotorch.io.storage import DataRoot

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
        Every selected file (paths relative to the root), already present or transferred.
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
        Parallel transfers.
    on_bytes
        Called with the byte count of every chunk received (besides the progress bar).

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
    """
    root = source_root(source, storage_options)
    if include_stimuli:
        confirm_license(stimulus_license_text(root), accept_license)
    out = Path(out).expanduser()
    selected = select_files(root, subjects, sessions, include_stimuli, include_anatomical)
    local = DataRoot(out)
    present = [
        rel
        for rel, info in selected.items()
        if (out / rel).is_file() and (out / rel).stat().st_size == info["size"]
    ]
    never_checked = [rel for rel in present if not is_verified(local, rel)]
    damaged = _remove_damaged(local, never_checked)
    pending = [rel for rel in selected if rel not in present or rel in damaged]
    result = DownloadResult(out=out, files=list(selected))
    transfer = _Transfer(root, out, infos=selected, workers=workers, on_bytes=on_bytes)
    for _ in range(2):  # a damaged copy is transferred once more
        if not pending:
            break
        done, received = transfer(pending)
        result.bytes_transferred += received
        result.transferred = sorted({*result.transferred, *done})
        pending = _remove_damaged(local, done)
    if pending:
        raise CorruptFileError(
            f"{len(pending)} file(s) downloaded to {out} were damaged twice and were deleted: "
            f"{', '.join(pending)}. The copy at {root.url} is damaged (or the transfer corrupts "
            "it); fetch them from another source or report it to the dataset's maintainers."
        )
    return result


def _remove_damaged(local: DataRoot, relpaths: list[str]) -> list[str]:
    """Check ``relpaths`` in full; delete those that fail and return them."""
    damaged = [check.path for check in check_files(local, relpaths, progress=False) if not check.ok]
    for relpath in damaged:
        Path(local.path(relpath)).unlink(missing_ok=True)
    return damaged


class _Transfer:
    """Parallel, resumable transfers of files of ``root`` to ``out``, with one progress bar."""

    def __init__(
        self,
        root: DataRoot,
        out: Path,
        *,
        infos: dict[str, dict],
        workers: int,
        on_bytes: Callable[[int], None] | None,
    ):
        self.root, self.out, self.infos = root, out, infos
        self.workers, self.on_bytes = workers, on_bytes

    def __call__(self, relpaths: list[str]) -> tuple[list[str], int]:
        """Transfer ``relpaths``; return those completed and the bytes received.

        Raises `RemoteAccessError` naming the files not transferred (partial files are kept).
        """
        lock, stop = threading.Lock(), threading.Event()
        bar = tqdm(
            total=sum(self.infos[rel]["size"] for rel in relpaths),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"download {len(relpaths)} files",
            disable=not config.show_progress(),
        )

        def count(n: int) -> None:
            if stop.is_set():  # interrupted: end this transfer here, its partial file is kept
                raise InterruptedError("download interrupted")
            with lock:
                bar.update(n)
                if self.on_bytes:
                    self.on_bytes(n)

        def transfer(rel: str) -> int:
            info = self.infos[rel]
            size, version = info["size"], info["version"]
            destination = self.out / rel
            return fetch_file(
                self.root, rel, destination, size=size, version=version, on_bytes=count
            )

        done: list[str] = []
        received = 0
        failures: dict[str, BaseException] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, self.workers))
        try:
            with bar:
                futures = {pool.submit(transfer, rel): rel for rel in relpaths}
                for future in as_completed(futures):
                    if future.cancelled():
                        continue
                    rel = futures[future]
                    try:
                        received += future.result()
                        done.append(rel)
                    except Exception as exc:  # collected and re-raised below, naming the files
                        failures[rel] = exc
                        if isinstance(exc, RemoteAccessError):  # the store is gone: stop queuing
                            for queued in futures:
                                queued.cancel()
        except BaseException:  # Ctrl-C: stop the running transfers at their next chunk
            stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        full_disk = [exc for exc in failures.values() if isinstance(exc, OutputWriteError)]
        if full_disk:  # the local side: names the file, partial files are kept
            raise full_disk[0]
        if failures:
            first_rel, first = sorted(failures.items())[0]
            raise RemoteAccessError(
                f"{len(relpaths) - len(done)} of {len(relpaths)} files were not downloaded from "
                f"{self.root.url} to {self.out} ({first_rel}: {first}). Completed and partial "
                "files are kept; run the same download again to resume."
            ) from first
        return sorted(done), received
