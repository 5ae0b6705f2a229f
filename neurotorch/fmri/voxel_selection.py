"""The voxel axis of a dataset: brain mask ∩ ROIs ∩ custom mask ∩ noise ceiling ≥ threshold.

`VoxelSelection` says which voxels (validated once, when it is made); `voxel_selection` turns it
into the 3-D boolean grid mask whose C-order flattening is the voxel axis of every array, store,
stream and voxel table of a subject. Every session of a subject shares this one selection, so the
threshold applies to a subject-level noise-ceiling map (``nc_desc``), unlike
``Subject.get_betas(nc_threshold=...)``, which thresholds each session's own map.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from neurotorch._docs import fill_doc
from neurotorch._options import as_names, check_number, check_option
from neurotorch.errors import ParameterError
from neurotorch.fmri import layout
from neurotorch.fmri.masks import (
    BRAIN_MASK_SOURCES,
    brain_mask_file,
    check_affine,
    check_grid,
    combine_voxel_mask,
    nonzero_mask,
    read_brain_mask,
    read_on_grid,
)
from neurotorch.fmri.rois import available_rois, resolve_roi_query, union_roi_volume
from neurotorch.io.nibabel_read import read_nifti_image
from neurotorch.io.storage import DataRoot

NoiseCeilingDesc = Literal["NoiseceilingAllrep", "Noiseceiling4rep", "Noiseceiling12rep"]
DEFAULT_NC_DESC: NoiseCeilingDesc = "NoiseceilingAllrep"
MaskSource = Literal["anatomical", "rsquare"]


@fill_doc
@dataclass(frozen=True, eq=False)
class VoxelSelection:
    """Which voxels of each subject a dataset serves (its voxel axis).

    Parameters
    ----------
    %(roi)s
    %(mask)s
    %(mask_source)s
    %(nc_threshold)s
    %(nc_desc)s
    """

    roi: str | list[str] | None = None
    mask: np.ndarray | str | None = field(default=None, repr=False)
    mask_source: MaskSource = "anatomical"
    nc_threshold: float | None = None
    nc_desc: NoiseCeilingDesc = DEFAULT_NC_DESC

    def __post_init__(self) -> None:
        if self.roi is not None:
            object.__setattr__(self, "roi", tuple(as_names("roi", self.roi)))
        check_option("mask_source", self.mask_source, BRAIN_MASK_SOURCES)
        check_option("nc_desc", self.nc_desc, layout.SUBJECT_NOISE_CEILINGS)
        if self.nc_threshold is not None:
            object.__setattr__(
                self, "nc_threshold", check_number("nc_threshold", self.nc_threshold)
            )
        if isinstance(self.mask, str | os.PathLike):
            path = Path(self.mask).expanduser()
            if not path.is_file():
                raise ParameterError(
                    f"mask={os.fspath(self.mask)!r} is not a file; give a NIfTI mask on the "
                    "subject's functional grid (non-zero voxels are kept) or a 3-D boolean array."
                )
            object.__setattr__(self, "mask", str(path))
        elif self.mask is not None:
            _check_grid_array(self.mask)

    @cached_property
    def mask_grid(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """``(3-D boolean mask, its affine or None)`` of ``mask``, read once; None without one."""
        if self.mask is None:
            return None
        if isinstance(self.mask, str):
            data, image = read_nifti_image(self.mask)
            return _check_grid_array(nonzero_mask(data), self.mask), image.affine
        return np.asarray(self.mask), None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (YAML, checkpoints); an array ``mask`` is summarised, not copied."""
        mask = self.mask
        if isinstance(mask, np.ndarray):
            mask = f"<3-D boolean array {mask.shape}, {int(mask.sum())} voxels>"
        roi = list(self.roi) if self.roi is not None else None
        return {
            "roi": roi,
            "mask": mask,
            "mask_source": self.mask_source,
            "nc_threshold": self.nc_threshold,
            "nc_desc": self.nc_desc,
        }

    def describe(self) -> str:
        """One line: what this selection keeps."""
        parts = [f"roi {'+'.join(self.roi)}" if self.roi else "whole brain"]
        if self.mask is not None:
            parts.append("custom mask" if isinstance(self.mask, np.ndarray) else self.mask)
        if self.nc_threshold is not None:
            parts.append(f"{self.nc_desc} >= {self.nc_threshold:g}")
        return f"{', '.join(parts)} ({self.mask_source} brain mask)"


def _check_grid_array(mask: Any, source: str = "mask") -> np.ndarray:
    """A mask as a 3-D boolean array, or `ParameterError` saying the one accepted shape."""
    array = np.asarray(mask)
    if array.dtype != bool or array.ndim != 3:
        raise ParameterError(
            f"{source} must be a 3-D boolean array on the subject's functional grid (what "
            f"BetasDataset.voxel_mask() returns), got dtype {array.dtype} and shape "
            f"{array.shape}; a 1-D mask over brain voxels (laion_fmri's convention) goes onto "
            "the grid with neurotorch.fmri.masks.custom_mask_on_grid(mask, brain)."
        )
    return array


def voxel_selection_on_grid(
    root: DataRoot, subject: str, selection: VoxelSelection
) -> tuple[np.ndarray, np.ndarray]:
    """``(3-D boolean selection, affine of the brain mask it lives on)`` of one subject."""
    brain, affine = read_brain_mask(root, subject, selection.mask_source)
    roi_volume = None
    if selection.roi is not None:
        pairs = resolve_roi_query(selection.roi, available_rois(root, subject))
        roi_volume = union_roi_volume(root, subject, pairs, brain, affine)
    custom = None
    if selection.mask_grid is not None:
        custom, mask_affine = selection.mask_grid
        where = f"The mask {selection.mask if isinstance(selection.mask, str) else ''}".strip()
        reference = f"the brain mask {root.path(brain_mask_file(subject, selection.mask_source))}"
        check_grid(custom.shape, brain.shape, where, reference=reference)
        if mask_affine is not None:
            check_affine(mask_affine, affine, where, reference=reference)
    noise_ceiling = None
    if selection.nc_threshold is not None:
        relpath = layout.subject_noise_ceiling(subject, selection.nc_desc)
        what = f"Noise ceiling {selection.nc_desc} of {subject}"
        noise_ceiling = read_on_grid(root, relpath, what, brain, affine)
    combined = combine_voxel_mask(
        brain,
        roi=roi_volume,
        custom=custom,
        noise_ceiling=noise_ceiling,
        nc_threshold=selection.nc_threshold,
    )
    return combined, affine


def voxel_selection(root: DataRoot, subject: str, selection: VoxelSelection) -> np.ndarray:
    """The 3-D boolean selection of `voxel_selection_on_grid`."""
    return voxel_selection_on_grid(root, subject, selection)[0]
