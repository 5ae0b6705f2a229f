"""What a LAION-fMRI tree holds: subjects, sessions, ROIs, stimuli, splits and file sizes.

Works on any dataset root — a local folder or a URL — with no AWS command-line tools; by default
it asks the public bucket ``s3://laion-fmri`` (region us-west-2), anonymously::

    from neurotorch.fmri import discovery

    discovery.get_subjects()                        # ['sub-01', 'sub-02', ...]
    discovery.get_sessions("sub-01")                # ['ses-01', ...]
    discovery.get_rois("sub-01", category="face")   # ['FFA1', 'FFA2', 'OFA', 'pSTSfaces']
    print(discovery.describe())                     # a summary of the whole tree
    discovery.inspect_bucket()                      # one row per file: path, size, kind, ...
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import cast

import pandas as pd

from neurotorch.errors import DataNotDownloadedError, ParameterError, SubjectNotFoundError
from neurotorch.fmri import layout
from neurotorch.io.storage import ENDPOINT_ENV_VARS, DataRoot

DEFAULT_SOURCE = "s3://laion-fmri"
DEFAULT_REGION = "us-west-2"

Source = str | os.PathLike | DataRoot | None


def source_root(source: Source = None, storage_options: dict | None = None) -> DataRoot:
    """The `DataRoot` of a LAION-fMRI tree.

    Parameters
    ----------
    source
        Local folder, URL or `DataRoot`; ``None`` means the public bucket `DEFAULT_SOURCE`, read
        in region us-west-2 (anonymously unless AWS credentials are configured).
    storage_options
        fsspec options (``endpoint_url``, ``key``/``secret``, ``anon``, ...).
    """
    if isinstance(source, DataRoot):
        return source if storage_options is None else DataRoot(source.url, storage_options)
    url = os.fspath(source) if source is not None else DEFAULT_SOURCE
    options = dict(storage_options or {})
    endpoint_set = any(os.environ.get(name) for name in ENDPOINT_ENV_VARS)
    if url.rstrip("/") == DEFAULT_SOURCE and not options and not endpoint_set:
        options = {"client_kwargs": {"region_name": DEFAULT_REGION}}
    return DataRoot(url, options)


def get_subjects(source: Source = None, storage_options: dict | None = None) -> list[str]:
    """Subject ids with single-trial betas (``sub-XX`` folders of the GLMsingle derivatives).

    Raises
    ------
    DataNotDownloadedError
        The root holds no ``derivatives/glmsingle-tedana`` subjects.
    """
    root = source_root(source, storage_options)
    subjects = [name for name in root.listdir(layout.GLM_DIR) if layout.is_subject_dir(name)]
    if not subjects:
        raise DataNotDownloadedError(
            f"No subjects under {root.path(layout.GLM_DIR)}. Check that {root.described} is a "
            "LAION-fMRI tree, or download one with `neurotorch download laion-fmri --out DIR`."
        )
    return subjects


def checked_subject(root: DataRoot, subject: str | int) -> str:
    """The id of ``subject``; `SubjectNotFoundError` listing those available if it is not there."""
    sid = layout.subject_id(subject)
    if not root.isdir(layout.subject_dir(sid)):
        available = ", ".join(get_subjects(root)) or "none"
        raise SubjectNotFoundError(
            f"unknown subject {sid!r} in {root.described}; available: {available}. Pass one of "
            "those."
        )
    return sid


def get_sessions(
    subject: str | int, source: Source = None, storage_options: dict | None = None
) -> list[str]:
    """Session ids (``ses-XX``) of a subject that hold a betas file."""
    root = source_root(source, storage_options)
    sid = checked_subject(root, subject)
    return [
        name
        for name in root.listdir(layout.subject_dir(sid))
        if layout.is_session_dir(name) and root.exists(layout.session_betas(sid, name))
    ]


def _roi_names(file_names: list[str]) -> list[str]:
    return sorted({label for name in file_names if (label := layout.roi_label(name))})


def get_rois(
    subject: str | int | None = None,
    category: str | None = None,
    source: Source = None,
    storage_options: dict | None = None,
) -> list[str]:
    """ROI names a subject has (volume or surface files), optionally of one category, sorted.

    Parameters
    ----------
    subject
        ``"sub-01"``, ``"01"`` or ``1``; None: the first subject of the dataset. A subject that is
        not in the dataset gives ``[]`` and a warning, as in laion_fmri.
    category
        One of `layout.ROI_CATEGORIES` (``"face"``, ``"place"``, ...); ``None`` for all.
    """
    root = source_root(source, storage_options)
    if category is not None and category not in layout.ROI_CATEGORIES:
        raise ParameterError(
            f"Unknown ROI category {category!r}; choose one of {sorted(layout.ROI_CATEGORIES)}."
        )
    subjects = get_subjects(root)
    if subject is None:
        subject = subjects[0]
    try:
        sid = checked_subject(root, subject)
    except SubjectNotFoundError as err:
        warnings.warn(f"No ROIs: {err}", UserWarning, stacklevel=2)
        return []
    categories = [category] if category else root.listdir(layout.ROI_DIR, sid)
    names: list[str] = []
    for cat in categories:
        names += _roi_names(root.listdir(layout.roi_category_dir(sid, cat)))
    return sorted(set(names))


classify = layout.classify


def inspect_bucket(
    source: Source = None, storage_options: dict | None = None, prefix: str = ""
) -> pd.DataFrame:
    """One row per file below ``prefix``: ``path, size, kind, subject, session``.

    ``path`` is relative to the root; ``size`` in bytes; see `classify` for ``kind``. Sum
    ``size`` over a selection to plan a download.
    """
    root = source_root(source, storage_options)
    rows = [
        {"path": rel, "size": details["size"], **classify(rel)}
        for rel, details in root.files(prefix).items()
    ]
    columns = ["path", "size", "kind", "subject", "session"]
    return pd.DataFrame(rows, columns=columns).astype({"size": "int64"})


def human_bytes(n: int) -> str:
    """``1234567`` → ``"1.2 MB"`` (powers of 1000)."""
    units = ("B", "kB", "MB", "GB", "TB")
    value, index = float(n), 0
    while value >= 1000 and index < len(units) - 1:
        value, index = value / 1000, index + 1
    return f"{n} B" if index == 0 else f"{value:.1f} {units[index]}"


@dataclass
class SubjectSummary:
    """What one subject has: sessions, ROIs per category, anatomical files, bytes of betas."""

    sessions: list[str]
    rois: dict[str, list[str]]
    has_brain_mask: bool
    betas_bytes: int


@dataclass
class DatasetDescription:
    """Summary of a LAION-fMRI tree (see `describe`)."""

    source: str
    subjects: dict[str, SubjectSummary]
    stimuli_files: list[str] = field(default_factory=list)
    splits: dict[str, list[str]] = field(default_factory=dict)
    total_bytes: int = 0

    def __str__(self) -> str:
        lines = [
            f"LAION-fMRI tree at {self.source}: {len(self.subjects)} subjects, "
            f"{human_bytes(self.total_bytes)}"
        ]
        for sid, info in self.subjects.items():
            n_rois = sum(len(names) for names in info.rois.values())
            lines.append(
                f"  {sid}: {len(info.sessions)} sessions ({', '.join(info.sessions)}), "
                f"betas {human_bytes(info.betas_bytes)}, {n_rois} ROIs in {len(info.rois)} "
                f"categories, brain mask {'yes' if info.has_brain_mask else 'no'}"
            )
        lines.append(f"  stimuli: {len(self.stimuli_files)} files")
        for pool, names in self.splits.items():
            lines.append(f"  splits/{pool}: {', '.join(names)}")
        return "\n".join(lines)


def describe(source: Source = None, storage_options: dict | None = None) -> DatasetDescription:
    """Subjects, sessions, ROIs, stimuli and splits of a tree, from one listing of each part."""
    root = source_root(source, storage_options)
    listing: dict[str, int] = {}
    for top in (
        layout.GLM_DIR,
        layout.ROI_DIR,
        layout.ANAT_DIR,
        layout.STIMULI_DIR,
        layout.SPLITS_DIR,
    ):
        listing.update({rel: details["size"] for rel, details in root.files(top).items()})
    subjects: dict[str, SubjectSummary] = {}
    for sid in get_subjects(root):
        sessions = sorted(
            {
                cast(str, c["session"])  # a betas file names its session
                for rel in listing
                if (c := classify(rel))["kind"] == "betas" and c["subject"] == sid
            }
        )
        rois: dict[str, list[str]] = {}
        roi_prefix = f"{layout.ROI_DIR}/{sid}/"
        for rel in listing:
            if rel.startswith(roi_prefix) and rel.count("/") == roi_prefix.count("/") + 1:
                category, name = rel[len(roi_prefix) :].split("/")
                rois.setdefault(category, []).append(name)
        subjects[sid] = SubjectSummary(
            sessions=sessions,
            rois={cat: _roi_names(names) for cat, names in sorted(rois.items())},
            has_brain_mask=layout.anatomical_brain_mask(sid) in listing,
            betas_bytes=sum(
                size
                for rel, size in listing.items()
                if (c := classify(rel))["kind"] == "betas" and c["subject"] == sid
            ),
        )
    splits: dict[str, list[str]] = {}
    for rel in listing:
        parts = rel.split("/")
        if (
            parts[0] == layout.SPLITS_DIR
            and len(parts) == 3
            and (split := layout.split_name(parts[2]))
        ):
            splits.setdefault(parts[1], []).append(split)
    return DatasetDescription(
        source=root.url,
        subjects=subjects,
        stimuli_files=sorted(rel for rel in listing if rel.startswith(layout.STIMULI_DIR + "/")),
        splits={pool: sorted(names) for pool, names in sorted(splits.items())},
        total_bytes=sum(listing.values()),
    )
