"""Per-voxel annotations of a voxel selection: grid index, ROI label, noise ceiling.

The rows are the voxels of `neurotorch.fmri.voxel_selection.voxel_selection` (the one owner of
the voxel axis), in its order, so a table has one row per voxel of every item of a dataset made
with the same selection.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from neurotorch.fmri import layout
from neurotorch.fmri.masks import read_on_grid
from neurotorch.fmri.noise_ceiling import single_trial_ceiling_r
from neurotorch.fmri.rois import available_rois, read_roi_volume, resolve_roi_query
from neurotorch.fmri.voxel_selection import VoxelSelection, voxel_selection_on_grid
from neurotorch.io.storage import DataRoot

CEILING_REPS = {"Noiseceiling4rep": 4, "Noiseceiling12rep": 12}


def voxel_table(
    root: DataRoot,
    subject: str,
    selection: VoxelSelection,
    ceiling_desc: str = "Noiseceiling4rep",
) -> pd.DataFrame:
    """One row per selected voxel, in the voxel order of the datasets (C order over the grid).

    Columns: ``voxel`` (flat grid index), ``roi`` (the first ROI of the query that holds the
    voxel; ``"brain"`` without a query), ``noise_ceiling`` (percent, ``ceiling_desc`` map) and
    ``ceiling_r`` (the single-trial correlation ceiling derived from it).
    """
    selected, affine = voxel_selection_on_grid(root, subject, selection)
    flat = np.flatnonzero(selected.ravel())
    labels = np.full(selected.shape, "brain" if selection.roi is None else "", dtype=object)
    if selection.roi is not None:
        pairs = resolve_roi_query(selection.roi, available_rois(root, subject))
        for category, name in reversed(pairs):
            labels[read_roi_volume(root, subject, category, name, selected, affine)] = name
    nc_map = read_on_grid(
        root,
        layout.subject_noise_ceiling(subject, ceiling_desc),
        f"Noise ceiling {ceiling_desc} of {subject}",
        selected,
        affine,
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
