"""Per-voxel annotations of a voxel selection: grid index, ROI label, noise ceiling."""

from __future__ import annotations

import numpy as np
import pandas as pd

from neurotorch.fmri import layout
from neurotorch.fmri.masks import combine_voxel_mask, read_brain_mask, read_volume
from neurotorch.fmri.noise_ceiling import single_trial_ceiling_r
from neurotorch.fmri.rois import RoiQuery, available_rois, read_roi_volume, resolve_roi_query
from neurotorch.io.storage import DataRoot

CEILING_REPS = {"Noiseceiling4rep": 4, "Noiseceiling12rep": 12}


def voxel_table(
    root: DataRoot,
    subject: str,
    roi: RoiQuery | None = None,
    mask_source: str = "anatomical",
    ceiling_desc: str = "Noiseceiling4rep",
) -> pd.DataFrame:
    """One row per selected voxel, in the voxel order of `get_betas` (C order over the grid).

    Columns: ``voxel`` (flat grid index), ``roi`` (the first ROI of the query that holds the
    voxel; ``"brain"`` without a query), ``noise_ceiling`` (percent, ``ceiling_desc`` map) and
    ``ceiling_r`` (the single-trial correlation ceiling derived from it).
    """
    brain, _ = read_brain_mask(root, subject, mask_source)
    labels = np.full(brain.shape, "", dtype=object)
    if roi is None:
        labels[brain] = "brain"
    else:
        for category, name in reversed(resolve_roi_query(roi, available_rois(root, subject))):
            labels[read_roi_volume(root, subject, category, name)] = name
    selection = combine_voxel_mask(brain, roi=labels != "") if roi is not None else brain
    flat = np.flatnonzero(selection.ravel())
    nc_map, _ = read_volume(
        root, layout.subject_noise_ceiling(subject, ceiling_desc), f"Noise ceiling of {subject}"
    )
    nc = np.asarray(nc_map, dtype=np.float64).ravel()[flat]
    return pd.DataFrame(
        {
            "voxel": flat,
            "roi": labels.ravel()[flat].astype(str),
            "noise_ceiling": nc,
            "ceiling_r": single_trial_ceiling_r(np.nan_to_num(nc), CEILING_REPS[ceiling_desc]),
        }
    )
