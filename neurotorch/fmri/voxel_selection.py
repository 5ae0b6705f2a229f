"""The voxel axis of a dataset: brain mask ∩ ROIs ∩ custom mask ∩ noise ceiling ≥ threshold.

Every session of a subject shares this one selection, so the threshold applies to a subject-level
noise-ceiling map (``nc_desc``), unlike ``Subject.get_betas(nc_threshold=...)``, which thresholds
each session's own map.
"""

from __future__ import annotations

import numpy as np

from neurotorch.fmri import layout
from neurotorch.fmri.masks import combine_voxel_mask, read_brain_mask, read_volume
from neurotorch.fmri.rois import RoiQuery, available_rois, resolve_roi_query, union_roi_volume
from neurotorch.io.storage import DataRoot

DEFAULT_NC_DESC = "NoiseceilingAllrep"


def voxel_selection_on_grid(
    root: DataRoot,
    subject: str,
    *,
    roi: RoiQuery | None = None,
    mask: np.ndarray | None = None,
    nc_threshold: float | None = None,
    nc_desc: str = DEFAULT_NC_DESC,
    mask_source: str = "anatomical",
) -> tuple[np.ndarray, np.ndarray]:
    """``(3-D boolean selection, affine of the brain mask it lives on)``."""
    brain, affine = read_brain_mask(root, subject, mask_source)
    roi_volume = None
    if roi is not None:
        pairs = resolve_roi_query(roi, available_rois(root, subject))
        roi_volume = union_roi_volume(root, subject, pairs, brain.shape)
    noise_ceiling = None
    if nc_threshold is not None:
        relpath = layout.subject_noise_ceiling(subject, nc_desc)
        noise_ceiling, _ = read_volume(root, relpath, f"Noise ceiling {nc_desc} of {subject}")
    selection = combine_voxel_mask(
        brain, roi=roi_volume, custom=mask, noise_ceiling=noise_ceiling, nc_threshold=nc_threshold
    )
    return selection, affine


def voxel_selection(root: DataRoot, subject: str, **selection) -> np.ndarray:
    """The 3-D boolean selection of `voxel_selection_on_grid` (same keywords)."""
    return voxel_selection_on_grid(root, subject, **selection)[0]
