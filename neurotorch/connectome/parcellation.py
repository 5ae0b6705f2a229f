"""Parcellations: a label image that groups the connectome's voxels into parcels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import nibabel as nib
import numpy as np

from neurotorch._options import check_option
from neurotorch.connectome.batches import ConnectomeBatches
from neurotorch.connectome.grid import sample_at_mask
from neurotorch.errors import ParameterError, ShapeMismatchError
from neurotorch.io.nibabel_read import read_nifti_image

# how `Parcellation.reduce` summarises a parcel's voxels; "percent" is 100 x the fraction of them
# that are non-zero (for a binary map: the percentage of the parcel it covers, as Lacuna)
REDUCTIONS = ("mean", "sum", "median", "percent")
Reduction = Literal["mean", "sum", "median", "percent"]


@dataclass(frozen=True)
class Parcellation:
    """Parcel label of every connectome voxel (0 = in no parcel).

    Use `Parcellation.from_image` to build one from a label image on any grid.
    """

    voxel_labels: np.ndarray  # (n_voxels,) int

    def __repr__(self) -> str:
        return f"Parcellation({self.n_parcels} parcels over {len(self.voxel_labels)} voxels)"

    @classmethod
    def from_image(
        cls,
        image: str | os.PathLike | nib.spatialimages.SpatialImage,
        connectome: ConnectomeBatches,
    ) -> Parcellation:
        """Sample a 3-D label image (nearest neighbour) at the connectome's voxels.

        Raises
        ------
        ShapeMismatchError
            No parcel overlaps the brain mask (wrong space or affine).
        OrientationMismatchError
            The image's qform and sform disagree on orientation.
        CorruptFileError, FormatError
            The file is damaged or not a NIfTI image.
        """
        if isinstance(image, nib.spatialimages.SpatialImage):
            img, name = image, image.get_filename() or "the parcellation image"
        else:
            img, name = read_nifti_image(image)[1], os.fspath(image)
        labels = sample_at_mask(
            img, name, mask_indices=connectome.mask_indices, mask_affine=connectome.affine
        )
        labels = np.rint(labels).astype(np.int64)
        if not labels.any():
            raise ShapeMismatchError(
                f"{name} labels no voxel of the connectome's brain mask; check that it is in "
                f"{connectome.space} and that its affine is right."
            )
        return cls(labels)

    @property
    def labels(self) -> np.ndarray:
        """The parcel labels present, sorted; parcel p of `reduce` is ``labels[p]``."""
        return np.unique(self.voxel_labels[self.voxel_labels != 0])

    @property
    def n_parcels(self) -> int:
        return len(self.labels)

    @property
    def voxel_counts(self) -> np.ndarray:
        """Voxels of each parcel, in the order of `labels`."""
        return np.unique(self.voxel_labels[self.voxel_labels != 0], return_counts=True)[1]

    def reduce(self, values: np.ndarray, how: Reduction = "mean") -> np.ndarray:
        """Summarise each parcel's voxels: (..., n_voxels) -> (..., n_parcels).

        ``how`` is one of `REDUCTIONS`; means and sums are computed in float64 and returned in
        the dtype of floating-point ``values`` (float64 otherwise).
        """
        check_option("how", how, REDUCTIONS)
        if not self.voxel_labels.any():
            raise ParameterError("The parcellation puts no voxel in a parcel; nothing to reduce.")
        values = np.asarray(values)
        in_parcel = np.flatnonzero(self.voxel_labels != 0)
        order = in_parcel[np.argsort(self.voxel_labels[in_parcel], kind="stable")]
        sorted_labels = self.voxel_labels[order]
        starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
        counts = np.diff(np.r_[starts, len(order)])
        grouped = values[..., order]
        if how == "median":
            parcels = np.split(grouped, starts[1:], axis=-1)
            reduced = np.stack([np.median(p, axis=-1) for p in parcels], axis=-1)
        else:
            summed = grouped != 0 if how == "percent" else grouped
            reduced = np.add.reduceat(summed.astype(np.float64), starts, axis=-1)
            if how != "sum":
                reduced /= counts
            if how == "percent":
                reduced *= 100.0
        dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
        return reduced.astype(dtype, copy=False)


def connectivity_matrix(series: np.ndarray) -> np.ndarray:
    """Pearson correlation between the columns of a (n_timepoints, n_regions) series.

    NaN where a region has zero variance.
    """
    centred = np.asarray(series, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    norms = np.sqrt(np.sum(centred**2, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (centred.T @ centred) / np.outer(norms, norms)
