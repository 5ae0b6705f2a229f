"""`describe`: what a dataset folder or URL holds, as a readable summary.

One call recognises, in any combination, the three on-disk families neurotorch reads:

* a **LAION-fMRI tree** (``derivatives/glmsingle-tedana/``, ``stimuli/``, ``splits/``): subjects,
  sessions, trials per session (shared / unique), ROIs per category, stimulus modalities, splits;
* a **CaliBrain root** (``1284src_leadfield/``, ``1284src_fwd/``, posterior summaries), also the
  one a synthetic LAION-fMRI tree keeps in ``derivatives/meeg/``: leadfields and runs;
* a **connectome batch folder** (``<prefix>_chunk_NNN.h5``, also in a ``batches/`` sub-folder):
  subjects, timepoints and voxels per batch file, and the lesion masks beside it.

::

    from neurotorch.describe import describe

    summary = describe("/data/laion-fmri")        # or "s3://bucket/prefix", a CaliBrain root, ...
    print(summary)                                # the text `neurotorch describe DIR` prints
    summary.laion_fmri.trials                     # one row per (subject, session)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from neurotorch.connectome import layout as connectome_layout
from neurotorch.connectome.batches import read_batch_header
from neurotorch.errors import DataNotDownloadedError
from neurotorch.fmri import discovery
from neurotorch.fmri import layout as fmri_layout
from neurotorch.fmri.splits import (
    FAMILIES,
    find_split_source,
    list_pools,
    list_splits,
    split_family,
)
from neurotorch.fmri.stimuli import load_stimuli
from neurotorch.fmri.subject import Subject
from neurotorch.io.storage import DataRoot
from neurotorch.meeg import layout as meeg_layout


def _layout_pattern(sample: str, **fields: tuple[str, str]) -> re.Pattern:
    """The names a layout function makes, as a pattern: ``sample`` is a name it made, each field
    ``(value in sample, pattern of any value)`` becomes a named group. File names stay in the
    layout modules; this only reads them back."""
    pattern = re.escape(sample)
    for name, (value, any_value) in fields.items():
        pattern = pattern.replace(re.escape(value), f"(?P<{name}>{any_value})", 1)
    return re.compile(f"^{pattern}$")


_LEADFIELD_FILE = _layout_pattern(
    meeg_layout.leadfield_name("SUBJECT", "fixed"),
    subject=("SUBJECT", ".+"),
    orientation=("fixed", "|".join(meeg_layout.ORIENTATIONS)),
)
_AGGREGATED_RUN = _layout_pattern(
    meeg_layout.aggregated_run_name("SUBJECT", "SOLVER", run_id=12345678, seed=98765),
    subject=("SUBJECT", ".+"),
    solver=("SOLVER", ".+"),
    run=("12345678", r"\d+"),
    seed=("98765", r"\d+"),
)
_FORWARD_FILE = _layout_pattern(
    posixpath.basename(meeg_layout.forward_file("SUBJECT")), subject=("SUBJECT", ".+")
)
_SENSOR_KINDS: dict[int | None, str] = {meeg_layout.KIND_EEG: "EEG", meeg_layout.KIND_MEG: "MEG"}
_COIL_NAMES: dict[int | None, str] = {
    meeg_layout.COIL_EEG: "EEG",
    meeg_layout.COIL_MAG: "MEG mag",
    meeg_layout.COIL_GRAD: "MEG grad",
}
SESSION_SUMMARY_COLUMNS = [
    "subject",
    "session",
    "n_runs",
    "n_trials",
    "n_shared",
    "n_unique",
    "n_images",
]


def _basename(relpath: str) -> str:
    return relpath.rsplit("/", 1)[-1]


def _table(frame: pd.DataFrame, indent: str = "    ") -> str:
    return "\n".join(indent + line for line in frame.to_string(index=False).splitlines())


# ── LAION-fMRI ─────────────────────────────────────────────────────────────────────────────────


@dataclass
class LaionFMRISummary:
    """What a LAION-fMRI tree holds.

    Attributes
    ----------
    subjects
        Subject ids with a GLMsingle folder.
    trials
        One row per (subject, session): ``n_runs``, ``n_trials``, ``n_shared`` / ``n_unique``
        (trials whose image name starts with ``shared_`` / ``unique_``), ``n_images`` (distinct).
    rois
        ``{subject: {category: [ROI names]}}``.
    stimulus_modalities
        Stimulus files present: ``"metadata"``, ``"images"``, ``"embeddings:<model>"``,
        ``"captions"``, ``"segmentations"``.
    images
        Images of the stimulus metadata per ``unique_or_shared`` value (empty without metadata).
    splits
        ``{pool: [split names]}`` of the tree's own ``splits/`` folder.
    total_bytes
        Size of the GLMsingle, ROI, anatomical, stimulus and split files.
    split_source
        Where the split functions read splits for this tree and which copy that is (see
        `neurotorch.fmri.splits.find_split_source`), e.g. ``"bundled: <folder> (the official
        files as laion_fmri published them: ...)"``.
    """

    subjects: list[str]
    trials: pd.DataFrame
    rois: dict[str, dict[str, list[str]]]
    stimulus_modalities: list[str]
    images: dict[str, int]
    splits: dict[str, list[str]]
    total_bytes: int
    split_source: str = ""

    def roi_counts(self) -> pd.DataFrame:
        """Number of ROIs per subject (rows) and category (columns)."""
        counts = {
            sid: {cat: len(names) for cat, names in cats.items()} for sid, cats in self.rois.items()
        }
        frame = pd.DataFrame.from_dict(counts, orient="index").fillna(0).astype(int)
        return frame.reindex(columns=sorted(frame.columns))

    def lines(self) -> list[str]:
        """The summary as text lines (what `DatasetSummary` prints)."""
        out = [
            f"LAION-fMRI tree: {len(self.subjects)} subjects ({', '.join(self.subjects) or 'none'}), "
            f"{discovery.human_bytes(self.total_bytes)}"
        ]
        if len(self.trials):
            totals = self.trials.groupby("subject")[["n_trials", "n_shared", "n_unique"]].sum()
            out.append("  trials per session:")
            out.append(_table(self.trials))
            out += [
                f"    {sid}: {row.n_trials} trials in {len(self.trials[self.trials.subject == sid])} "
                f"sessions ({row.n_shared} shared, {row.n_unique} unique)"
                for sid, row in totals.iterrows()
            ]
        if self.rois:
            out.append("  ROIs per category (count per subject):")
            out.append(_table(self.roi_counts().rename_axis("subject").reset_index()))
            roi_names: dict[str, set[str]] = {}
            for cats in self.rois.values():
                for cat, rois in cats.items():
                    roi_names.setdefault(cat, set()).update(rois)
            out += [
                f"    {cat}: {' '.join(sorted(rois))}" for cat, rois in sorted(roi_names.items())
            ]
        modalities = ", ".join(self.stimulus_modalities) or "none"
        out.append(f"  stimulus modalities: {modalities}")
        if self.images:
            counts = ", ".join(f"{n} {kind}" for kind, n in self.images.items())
            out.append(f"  stimulus images: {sum(self.images.values())} ({counts})")
        for pool, names in self.splits.items():
            families = Counter(split_family(name) for name in names)
            order = [*FAMILIES, *sorted(set(families) - set(FAMILIES))]
            listed = ", ".join(
                f"{fam} ×{families[fam]}" if families[fam] > 1 else fam
                for fam in order
                if fam in families
            )
            out.append(f"  splits/{pool}: {len(names)} splits ({listed})")
        if self.split_source:
            out.append(f"  splits are read from {self.split_source}")
        return out


def _stimulus_modalities(stimulus_files: set[str]) -> list[str]:
    found = []
    for name, relpath in (
        ("metadata", fmri_layout.stimuli_metadata()),
        ("images", fmri_layout.stimuli_images()),
    ):
        if relpath in stimulus_files:
            found.append(name)
    found += [
        f"embeddings:{m}"
        for m in fmri_layout.EMBEDDING_MODELS
        if fmri_layout.embeddings(m) in stimulus_files
    ]
    if fmri_layout.captions() in stimulus_files:
        found.append("captions")
    if fmri_layout.segmentations() in stimulus_files:
        found.append("segmentations")
    return found


def _session_trials(root: DataRoot, subject: str, sessions: list[str]) -> list[dict[str, Any]]:
    rows = []
    tables = Subject(subject, root).get_trial_info(sessions) if sessions else {}
    for session, table in tables.items():
        labels = table["label"].astype(str)
        rows.append(
            {
                "subject": subject,
                "session": session,
                "n_runs": int(table["run"].nunique()) if "run" in table else 0,
                "n_trials": len(table),
                "n_shared": int(labels.str.startswith("shared_").sum()),
                "n_unique": int(labels.str.startswith("unique_").sum()),
                "n_images": int(labels.nunique()),
            }
        )
    return rows


def describe_laion_fmri(root: DataRoot) -> LaionFMRISummary:
    """Summarise a LAION-fMRI tree (reads the listings, the trial tables and the stimulus metadata)."""
    try:
        tree = discovery.describe(root)
    except DataNotDownloadedError:  # stimuli or splits only, no subjects yet
        own_splits = DataRoot(root.path(fmri_layout.SPLITS_DIR), root.storage_options)
        pools = list_pools(splits_dir=own_splits) if own_splits.isdir() else []
        tree = discovery.DatasetDescription(
            source=root.url,
            subjects={},
            stimuli_files=[
                f"{fmri_layout.STIMULI_DIR}/{n}" for n in root.listdir(fmri_layout.STIMULI_DIR)
            ],
            splits={pool: list_splits(pool, splits_dir=own_splits) for pool in pools},
        )
    rows = [
        row
        for sid, info in tree.subjects.items()
        for row in _session_trials(root, sid, info.sessions)
    ]
    modalities = _stimulus_modalities(set(tree.stimuli_files))
    images: dict[str, int] = {}
    if "metadata" in modalities:
        counts = load_stimuli(root).metadata["unique_or_shared"].astype(str).value_counts()
        images = {str(kind): int(n) for kind, n in counts.sort_index().items()}
    return LaionFMRISummary(
        subjects=list(tree.subjects),
        trials=pd.DataFrame(rows, columns=SESSION_SUMMARY_COLUMNS),
        rois={sid: info.rois for sid, info in tree.subjects.items() if info.rois},
        stimulus_modalities=modalities,
        images=images,
        splits=tree.splits,
        total_bytes=tree.total_bytes,
        split_source=find_split_source(data_dir=root).describe(),
    )


# ── CaliBrain ──────────────────────────────────────────────────────────────────────────────────


@dataclass
class MEEGSummary:
    """What a CaliBrain-layout root holds.

    Attributes
    ----------
    source
        The root (path or URL).
    leadfields
        One row per leadfield NPZ: ``file, subject, orientation, sensors, n_sensors, n_sources,
        n_components, units``.
    forwards
        MNE forward files (``1284src_fwd/<subject>-fwd.fif``).
    posterior_summaries, aggregated_runs
        Number of ``posterior_summary_run*_seed*.h5`` files and of aggregated per-run NPZs.
    """

    source: str
    leadfields: pd.DataFrame
    forwards: list[str] = field(default_factory=list)
    posterior_summaries: int = 0
    aggregated_runs: int = 0

    def lines(self) -> list[str]:
        """The summary as text lines (what `DatasetSummary` prints)."""
        out = [
            f"CaliBrain root {self.source}: {len(self.leadfields)} leadfields, "
            f"{len(self.forwards)} forward models, {self.posterior_summaries} posterior summaries, "
            f"{self.aggregated_runs} aggregated runs"
        ]
        if len(self.leadfields):
            out.append(_table(self.leadfields))
        return out


def _leadfield_row(root: DataRoot, relpath: str) -> dict[str, Any]:
    from neurotorch.meeg.leadfield import load_leadfield_npz

    match = _LEADFIELD_FILE.match(_basename(relpath))
    assert match is not None, "the caller found the file by this pattern"
    data = load_leadfield_npz(
        root.path(relpath), storage_options=root.storage_options, require_src_coords=False
    )
    sensors = _COIL_NAMES.get(data.coil_type) or _SENSOR_KINDS.get(data.sensor_kind, "unknown")
    return {
        "file": relpath,
        "subject": match["subject"],
        "orientation": data.orientation_type,
        "sensors": sensors,
        "n_sensors": data.n_sensors,
        "n_sources": data.n_sources,
        "n_components": data.n_components,
        "units": data.units,
    }


def describe_meeg(root: DataRoot, prefix: str = "") -> MEEGSummary:
    """Summarise the CaliBrain root at ``prefix`` under ``root`` (leadfields are loaded, not pickled)."""
    under = f"{prefix}/" if prefix else ""
    files = [rel[len(under) :] for rel in root.files(*([prefix] if prefix else []))]
    leadfields = [rel for rel in files if _LEADFIELD_FILE.match(_basename(rel))]
    columns = [
        "file",
        "subject",
        "orientation",
        "sensors",
        "n_sensors",
        "n_sources",
        "n_components",
        "units",
    ]
    return MEEGSummary(
        source=root.path(prefix) if prefix else root.url,
        leadfields=pd.DataFrame(
            [_leadfield_row(root, under + rel) for rel in leadfields], columns=columns
        ),
        forwards=sorted(rel for rel in files if _FORWARD_FILE.match(_basename(rel))),
        posterior_summaries=sum(
            fnmatch.fnmatch(_basename(rel), meeg_layout.POSTERIOR_SUMMARY_GLOB) for rel in files
        ),
        aggregated_runs=sum(bool(_AGGREGATED_RUN.match(_basename(rel))) for rel in files),
    )


# ── connectome ─────────────────────────────────────────────────────────────────────────────────


@dataclass
class ConnectomeSummary:
    """What a folder of connectome batch files holds.

    Attributes
    ----------
    source
        The batch folder (path or URL).
    batches
        One row per batch file: ``file, n_subjects, n_timepoints, n_voxels, mask_shape, space,
        checksum`` (read from the file attributes and dataset layouts; no time series are read;
        ``checksum`` is ``none`` when the time series carry no Fletcher-32 checksums).
    n_lesions
        Lesion masks in a ``lesions/`` folder beside the batches (``None`` when there is none).
    """

    source: str
    batches: pd.DataFrame
    n_lesions: int | None = None

    @property
    def n_subjects(self) -> int:
        return int(self.batches["n_subjects"].sum())

    def lines(self) -> list[str]:
        """The summary as text lines (what `DatasetSummary` prints)."""
        first = self.batches.iloc[0]
        out = [
            f"connectome at {self.source}: {len(self.batches)} batch files, {self.n_subjects} subjects, "
            f"{first.n_timepoints} timepoints, {first.n_voxels} voxels in a {first.mask_shape} mask "
            f"({first.space})"
        ]
        out.append(_table(self.batches))
        unchecked = int((self.batches["checksum"] == "none").sum())
        if unchecked:
            out.append(
                f"  {unchecked} batch file(s) carry no checksum: flipped bytes in them cannot be "
                "detected; re-create them with neurotorch's converter to add Fletcher-32."
            )
        if self.n_lesions is not None:
            out.append(f"  lesion masks: {self.n_lesions}")
        return out


def _batch_row(root: DataRoot, relpath: str) -> dict[str, Any]:
    header = read_batch_header(root.path(relpath), root.storage_options)
    return {
        "file": _basename(relpath),
        "n_subjects": header.n_subjects,
        "n_timepoints": header.n_timepoints,
        "n_voxels": header.n_voxels,
        "mask_shape": "×".join(map(str, header.mask_shape)),
        "space": header.space or "",
        "checksum": "fletcher32" if header.checksummed else "none",
    }


def _batch_folder(root: DataRoot) -> str | None:
    for folder in ("", connectome_layout.BATCH_DIR):
        if connectome_layout.sorted_batch_names(root.listdir(folder) if folder else root.listdir()):
            return folder
    return None


def describe_connectome(root: DataRoot, folder: str = "") -> ConnectomeSummary:
    """Summarise the batch files in ``folder`` under ``root`` (and the lesion masks beside them)."""
    names = connectome_layout.sorted_batch_names(root.listdir(folder) if folder else root.listdir())
    rows = [_batch_row(root, f"{folder}/{name}" if folder else name) for name in names]
    lesions = None
    if folder and root.isdir(connectome_layout.LESION_DIR):
        lesions = sum(
            n.endswith((".nii", ".nii.gz")) for n in root.listdir(connectome_layout.LESION_DIR)
        )
    return ConnectomeSummary(
        source=root.path(folder) if folder else root.url,
        batches=pd.DataFrame(rows),
        n_lesions=lesions,
    )


# ── everything ─────────────────────────────────────────────────────────────────────────────────


@dataclass
class DatasetSummary:
    """What `describe` found at a source; the parts that are absent are ``None`` / empty."""

    source: str
    laion_fmri: LaionFMRISummary | None = None
    meeg: list[MEEGSummary] = field(default_factory=list)
    connectome: ConnectomeSummary | None = None

    @property
    def kinds(self) -> list[str]:
        """Families found: ``"laion-fmri"``, ``"calibrain"``, ``"connectome"``."""
        found = [
            ("laion-fmri", self.laion_fmri),
            ("calibrain", self.meeg),
            ("connectome", self.connectome),
        ]
        return [kind for kind, part in found if part]

    def __str__(self) -> str:
        lines = [f"{self.source} holds: {', '.join(self.kinds)}"]
        parts = [self.laion_fmri, *self.meeg, self.connectome]
        for part in parts:
            if part is not None:
                lines += ["", *part.lines()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tables as lists of records)."""
        parts = {key: _plain(getattr(self, key)) for key in ("laion_fmri", "meeg", "connectome")}
        return {"source": self.source, "kinds": self.kinds, **parts}


def _plain(value: Any) -> Any:
    """Dataclasses, tables, dicts and lists as JSON-ready values."""
    if dataclasses.is_dataclass(value):
        return _plain(vars(value))
    if isinstance(value, pd.DataFrame):
        return value.to_dict(orient="records")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _meeg_prefixes(root: DataRoot) -> list[str]:
    """CaliBrain roots at ``root`` (by their folders or files) and in ``derivatives/meeg``."""
    prefixes = []
    top = root.listdir()
    calibrain_dirs = {meeg_layout.LEADFIELD_DIR, meeg_layout.FORWARD_DIR}
    top_files = any(
        _LEADFIELD_FILE.match(n)
        or fnmatch.fnmatch(n, meeg_layout.POSTERIOR_SUMMARY_GLOB)
        or _AGGREGATED_RUN.match(n)
        for n in top
    )
    if calibrain_dirs & set(top) or top_files:
        prefixes.append("")
    if root.isdir(meeg_layout.FMRI_MEEG_DIR):
        prefixes.append(meeg_layout.FMRI_MEEG_DIR)
    return prefixes


def describe(
    source: str | os.PathLike | DataRoot, storage_options: dict | None = None
) -> DatasetSummary:
    """Recognise and summarise what a folder or URL holds (see the module docstring).

    Parameters
    ----------
    source
        Local folder, fsspec URL (``s3://bucket/prefix``) or `DataRoot`.
    storage_options
        fsspec options for a URL (``endpoint_url``, ``anon``, ...).

    Raises
    ------
    DataNotDownloadedError
        Nothing at ``source`` looks like a LAION-fMRI tree, a CaliBrain root or connectome batches.
    """
    root = source if isinstance(source, DataRoot) else DataRoot(source, storage_options)
    summary = DatasetSummary(source=root.url)
    if root.isdir(fmri_layout.GLM_DIR) or root.isdir(fmri_layout.STIMULI_DIR):
        summary.laion_fmri = describe_laion_fmri(root)
    summary.meeg = [describe_meeg(root, prefix) for prefix in _meeg_prefixes(root)]
    folder = _batch_folder(root)
    if folder is not None:
        summary.connectome = describe_connectome(root, folder)
    if not summary.kinds:
        raise DataNotDownloadedError(
            f"Nothing neurotorch reads was found at {root.url}: expected a LAION-fMRI tree "
            f"({fmri_layout.GLM_DIR}/ or {fmri_layout.STIMULI_DIR}/), a CaliBrain root "
            f"({meeg_layout.LEADFIELD_DIR}/, {meeg_layout.FORWARD_DIR}/ or posterior summaries) or "
            f"connectome batch files (*_chunk_000.h5, here or in {connectome_layout.BATCH_DIR}/). Check the path."
        )
    return summary


__all__ = [
    "ConnectomeSummary",
    "DatasetSummary",
    "LaionFMRISummary",
    "MEEGSummary",
    "describe",
    "describe_connectome",
    "describe_laion_fmri",
    "describe_meeg",
]
