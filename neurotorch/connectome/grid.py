"""Voxel grids: RAS+ canonical orientation, grid comparison and nearest-neighbour sampling.

Connectome batches store every image in the RAS+ canonical orientation of their brain mask. The
helpers here bring other images (subject series, lesion masks, parcellations) onto that grid and
refuse the cases where doing so silently could swap left and right.
"""

from __future__ import annotations

from typing import cast

import nibabel as nib
import numpy as np

from neurotorch.errors import OrientationMismatchError, ShapeMismatchError

AFFINE_ATOL_MM = 1e-3


def check_header_orientation(img: nib.spatialimages.SpatialImage, name: str) -> None:
    """Raise `OrientationMismatchError` if the qform and sform of ``img`` disagree on orientation.

    A file whose two header transforms point the x axis in opposite directions is the classic source
    of left/right flips: different tools read different transforms from it.
    """
    if not hasattr(img.header, "get_qform"):
        return
    header = cast(nib.Nifti1Header, img.header)  # a NIfTI header: it has a qform and an sform
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if qform is None or sform is None or not qcode or not scode:
        return
    if nib.aff2axcodes(qform) != nib.aff2axcodes(sform):
        raise OrientationMismatchError(
            f"{name}: the qform ({''.join(nib.aff2axcodes(qform))}) and sform "
            f"({''.join(nib.aff2axcodes(sform))}) orientations disagree, so left and right are "
            "ambiguous. Fix the header (e.g. copy the correct transform into both) and retry."
        )


def canonical(img: nib.spatialimages.SpatialImage, name: str) -> nib.spatialimages.SpatialImage:
    """``img`` reoriented to RAS+ (nibabel's closest canonical), after the header check."""
    check_header_orientation(img, name)
    return nib.as_closest_canonical(img)


def oriented_like(
    img: nib.spatialimages.SpatialImage, affine: np.ndarray, name: str
) -> nib.spatialimages.SpatialImage:
    """``img`` with its axes permuted and flipped to the orientation of ``affine`` (for a
    connectome stored in another orientation than RAS+), after the header check."""
    check_header_orientation(img, name)
    orientations = nib.orientations
    ornt = orientations.ornt_transform(
        orientations.io_orientation(img.affine), orientations.io_orientation(affine)
    )
    return img.as_reoriented(ornt)


def check_same_grid(
    img: nib.spatialimages.SpatialImage,
    reference: tuple[tuple[int, ...], np.ndarray],
    *,
    name: str,
    ref_name: str,
) -> None:
    """Raise unless the 3-D grid of ``img`` is the ``reference`` grid, given as (shape, affine).

    Differing axis directions raise `OrientationMismatchError`; differing shapes, voxel sizes or
    origins raise `ShapeMismatchError`.
    """
    shape, affine = img.shape, img.affine
    ref_shape, ref_affine = reference
    if nib.aff2axcodes(affine) != nib.aff2axcodes(ref_affine):
        raise OrientationMismatchError(
            f"{name} is oriented {''.join(nib.aff2axcodes(affine))} but {ref_name} is "
            f"{''.join(nib.aff2axcodes(ref_affine))}; bring both to the same orientation "
            "(e.g. nibabel.as_closest_canonical) before combining them."
        )
    if tuple(shape[:3]) != tuple(ref_shape[:3]) or not np.allclose(
        affine, ref_affine, atol=AFFINE_ATOL_MM
    ):
        raise ShapeMismatchError(
            f"{name} (shape {tuple(shape[:3])}, affine {np.round(affine, 3).tolist()}) is not on the "
            f"grid of {ref_name} (shape {tuple(ref_shape[:3])}, affine "
            f"{np.round(ref_affine, 3).tolist()}); resample it to that grid first."
        )


def mask_world_coordinates(mask_indices: np.ndarray, mask_affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of the mask voxels, shape (n_voxels, 3)."""
    return nib.affines.apply_affine(mask_affine, np.asarray(mask_indices, dtype=np.float64))


def _volume(img: nib.spatialimages.SpatialImage, name: str) -> np.ndarray:
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ShapeMismatchError(f"{name} has shape {data.shape}; expected a 3-D image.")
    return data


def sample_at_world(
    img: nib.spatialimages.SpatialImage, world: np.ndarray, name: str
) -> np.ndarray:
    """Values of a 3-D image at world coordinates (mm), nearest neighbour, shape (n_points,).

    ``img`` may be on any grid and in any orientation its affine describes truthfully; it is first
    brought to RAS+ after the header check. Points outside the image read 0.
    """
    img = canonical(img, name)
    data = _volume(img, name)
    voxels = np.rint(nib.affines.apply_affine(np.linalg.inv(img.affine), world)).astype(np.int64)
    inside = np.all((voxels >= 0) & (voxels < np.array(data.shape)), axis=1)
    values = np.zeros(len(voxels), dtype=data.dtype)
    values[inside] = data[tuple(voxels[inside].T)]
    return values


def sample_at_mask(
    img: nib.spatialimages.SpatialImage,
    name: str,
    *,
    mask_indices: np.ndarray,
    mask_affine: np.ndarray,
    world: np.ndarray | None = None,
) -> np.ndarray:
    """Values of a 3-D image at the connectome's mask voxels, nearest neighbour, shape (n_voxels,).

    An image already on the mask's grid (after reorientation to RAS+) is indexed directly; any
    other is resampled. ``world`` may pass precomputed `mask_world_coordinates`.
    """
    img = canonical(img, name)
    if np.allclose(img.affine, mask_affine, atol=AFFINE_ATOL_MM):
        data = _volume(img, name)
        if np.all(np.asarray(mask_indices).max(0) < data.shape):
            return data[tuple(np.asarray(mask_indices).T)]
    if world is None:
        world = mask_world_coordinates(mask_indices, mask_affine)
    return sample_at_world(img, world, name)
