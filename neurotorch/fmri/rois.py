"""ROIs of a subject: what is on disk, the ROI query grammar, and reading volume/surface files.

Query grammar (as in laion_fmri): an ROI name (``"FFA1"``), a category (``"face"``), ``"all"``,
or a list mixing them. Categories and ROI names are disjoint, so a string resolves by lookup; a
list is a union in which every ROI counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import nibabel as nib
import numpy as np

from neurotorch.errors import ParameterError, RoiNotFoundError
from neurotorch.fmri import layout
from neurotorch.fmri.datafiles import require
from neurotorch.fmri.masks import nonzero_mask, read_on_grid
from neurotorch.io.storage import DataRoot

ALL = "all"
HEMISPHERES = ("L", "R")
SURFACE_FORMATS = ("func.gii", "label")
ROI_DATA_FORMATS = ("all", "volume", "nii.gz", "gii", "func.gii", "label")

RoiQuery = str | Sequence[str]


def available_rois(root: DataRoot, subject: str) -> dict[str, list[str]]:
    """ROI names per category found under ``derivatives/rois/<subject>/`` (sorted)."""
    found: dict[str, list[str]] = {}
    for category in root.listdir(layout.ROI_DIR, subject):
        names = {
            roi
            for filename in root.listdir(layout.roi_category_dir(subject, category))
            if (roi := layout.roi_label(filename, subject))
        }
        if names:
            found[category] = sorted(names)
    return found


def resolve_roi_query(query: RoiQuery, available: dict[str, list[str]]) -> list[tuple[str, str]]:
    """``(category, roi)`` pairs named by ``query``, each once, in query order.

    Raises
    ------
    RoiNotFoundError
        For a string that is neither ``"all"``, a category nor an available ROI; the message
        lists the available ROIs and categories.
    """
    terms = [query] if isinstance(query, str) else list(query)
    if not terms:
        raise ParameterError(
            "Empty ROI query; give an ROI name, a category, 'all' or a list of them."
        )
    pairs: list[tuple[str, str]] = []
    for term in terms:
        for pair in _resolve_term(term, available):
            if pair not in pairs:
                pairs.append(pair)
    return pairs


def _resolve_term(term: str, available: dict[str, list[str]]) -> list[tuple[str, str]]:
    if not isinstance(term, str):
        raise TypeError(f"ROI queries are strings or lists of strings, got {type(term).__name__}.")
    if term == ALL:
        return [(c, r) for c, names in available.items() for r in names]
    if term in available:
        return [(term, r) for r in available[term]]
    pairs = [(c, r) for c, names in available.items() for r in names if r == term]
    if not pairs:
        rois = [r for names in available.values() for r in names]
        raise RoiNotFoundError(
            f"Unknown ROI {term!r} for this subject. Available ROIs: {', '.join(rois) or 'none'}. "
            f"Available categories: {', '.join(available) or 'none'}. Or use 'all'."
        )
    return pairs


def read_roi_volume(
    root: DataRoot, subject: str, category: str, roi: str, brain: np.ndarray, affine: np.ndarray
) -> np.ndarray:
    """The 3-D boolean volume of one ROI, checked to lie on the brain mask's grid (``brain``,
    ``affine``)."""
    relpath = layout.roi_volume(subject, category, roi)
    return nonzero_mask(read_on_grid(root, relpath, f"ROI {roi} of {subject}", brain, affine))


def union_roi_volume(
    root: DataRoot,
    subject: str,
    pairs: list[tuple[str, str]],
    brain: np.ndarray,
    affine: np.ndarray,
) -> np.ndarray:
    """Union of the ROI volumes in ``pairs`` as a 3-D boolean volume on the brain mask's grid."""
    union = np.zeros(brain.shape, dtype=bool)
    for category, roi in pairs:
        union |= read_roi_volume(root, subject, category, roi, brain, affine)
    return union


def read_surface_roi(
    root: DataRoot, subject: str, category: str, roi: str, hemi: str, kind: str
) -> np.ndarray:
    """A surface ROI: ``func.gii`` → boolean per vertex; ``label`` → vertex indices (int)."""
    relpath = require(
        root,
        layout.roi_surface(subject, category, roi, hemi=hemi, kind=kind),
        f"Surface ROI {roi} ({kind}, hemi-{hemi}) of {subject}",
    )
    path = root.local_path(relpath)
    if kind == "label":
        return np.asarray(nib.freesurfer.read_label(path), dtype=np.int64)
    surface = cast(nib.gifti.GiftiImage, nib.load(path))
    return np.asarray(surface.darrays[0].data) != 0


def check_roi_data_args(format: str, hemi: str) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """(want volume, surface kinds, hemispheres) for `roi_data`'s ``format`` and ``hemi``."""
    if format not in ROI_DATA_FORMATS:
        raise ParameterError(f"Unknown ROI format {format!r}; choose one of {ROI_DATA_FORMATS}.")
    if hemi not in (*HEMISPHERES, "all"):
        raise ParameterError(f"Unknown hemisphere {hemi!r}; choose 'L', 'R' or 'all'.")
    volume = format in ("all", "volume", "nii.gz")
    kinds = (
        SURFACE_FORMATS
        if format in ("all", "gii")
        else (format,)
        if format in SURFACE_FORMATS
        else ()
    )
    hemis = HEMISPHERES if hemi == "all" else (hemi,)
    return volume, kinds, hemis


def roi_data(
    root: DataRoot,
    subject: str,
    pairs: list[tuple[str, str]],
    brain: np.ndarray,
    affine: np.ndarray,
    format: str = "all",
    hemi: str = "all",
) -> dict[str, dict]:
    """Nested dict ``{roi: {"volume": bool per brain voxel, "gii": {"hemi-L": {"func.gii": ...,
    "label": ...}}}}``; ``volume`` is the ROI restricted to the 3-D ``brain`` mask (laion_fmri's
    convention: one entry per voxel of the voxel axis)."""
    want_volume, kinds, hemis = check_roi_data_args(format, hemi)
    out: dict[str, dict] = {}
    for category, roi in pairs:
        entry: dict = {}
        if want_volume:
            entry["volume"] = read_roi_volume(root, subject, category, roi, brain, affine)[brain]
        if kinds:
            entry["gii"] = {
                f"hemi-{h}": {
                    k: read_surface_roi(root, subject, category, roi=roi, hemi=h, kind=k)
                    for k in kinds
                }
                for h in hemis
            }
        out[roi] = entry
    return out
