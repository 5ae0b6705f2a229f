"""Brain masks and the combined voxel mask that defines the voxel axis of every array.

The voxel axis of a subject is its brain mask (``"anatomical"``: the shipped
``desc-brain_mask`` file; ``"rsquare"``: voxels whose mean R² is finite and non-zero, negative R²
included, as laion_fmri defines it) flattened in C order. A selection narrows it:
brain ∩ ROI ∩ (noise ceiling ≥ threshold) ∩ custom mask.
"""

from __future__ import annotations

import numpy as np

from neurotorch.errors import FormatError, ParameterError, ShapeMismatchError
from neurotorch.fmri import layout
from neurotorch.fmri.datafiles import require
from neurotorch.io.nibabel_read import read_nifti_image
from neurotorch.io.storage import DataRoot

BRAIN_MASK_SOURCES = ("anatomical", "rsquare")
# Largest difference (mm) between two affines that still count as the same grid: NIfTI stores
# affines as float32, so equal grids written by different tools differ by ~1e-4 mm.
AFFINE_TOLERANCE_MM = 1e-2


def read_volume(root: DataRoot, relpath: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The data (scaling applied, as nibabel's ``dataobj`` gives it) and affine of a NIfTI file.

    The gzip stream is verified; a damaged file raises `CorruptFileError` naming it.
    """
    require(root, relpath, what)
    data, image = read_nifti_image(root.local_path(relpath))
    return data, image.affine


def read_on_grid(
    root: DataRoot, relpath: str, what: str, brain: np.ndarray, affine: np.ndarray
) -> np.ndarray:
    """The data of a volume that must lie on the brain mask's grid (an ROI, a noise-ceiling map):
    its shape and its affine are checked against the mask's (``brain``, ``affine``), so a file
    stored flipped or shifted is refused rather than indexed voxel for voxel."""
    data, own_affine = read_volume(root, relpath, what)
    where = f"{what} ({root.path(relpath)})"
    check_grid(data.shape, brain.shape, where)
    check_affine(own_affine, affine, where)
    return data


def check_source(source: str) -> str:
    if source not in BRAIN_MASK_SOURCES:
        raise ParameterError(
            f"Unknown brain mask source {source!r}; choose one of {BRAIN_MASK_SOURCES}."
        )
    return source


def brain_mask_file(subject: str, source: str = "anatomical", res: str | None = "1pt8") -> str:
    """Relative path of the file the brain mask of ``source`` is read from."""
    if check_source(source) == "rsquare":
        return layout.subject_r2mean(subject)
    return layout.anatomical_brain_mask(subject, res)


def read_brain_mask(
    root: DataRoot, subject: str, source: str = "anatomical", res: str | None = "1pt8"
) -> tuple[np.ndarray, np.ndarray]:
    """The 3-D boolean brain mask of a subject and its affine.

    ``source="rsquare"`` is derived from the subject's mean-R² map (finite and != 0, so negative
    R² counts as inside, as in laion_fmri) and exists only on the functional grid, so ``res``
    applies to ``source="anatomical"`` only.
    """
    relpath = brain_mask_file(subject, source, res)
    if source == "rsquare":
        r2, affine = read_volume(root, relpath, f"Mean R² map of {subject}")
        return np.isfinite(r2) & (r2 != 0), affine
    data, affine = read_volume(root, relpath, f"Anatomical brain mask of {subject}")
    mask = nonzero_mask(data)
    if not mask.any():
        raise FormatError(
            f"The brain mask {root.path(relpath)} holds no voxel (every value is 0 or NaN); "
            "re-download it."
        )
    return mask, affine


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Boolean mask of the voxels that are neither 0 nor NaN."""
    mask = np.asarray(data != 0)
    if np.issubdtype(data.dtype, np.floating):
        mask &= ~np.isnan(data)
    return mask


def check_grid(
    shape: tuple[int, ...], grid: tuple[int, ...], what: str, reference: str = "the brain mask"
) -> None:
    """Raise `ShapeMismatchError` unless the spatial part of ``shape`` equals ``grid``."""
    if tuple(shape[:3]) != tuple(grid):
        raise ShapeMismatchError(
            f"{what} has grid {tuple(shape[:3])}, but {reference} has grid {tuple(grid)}; "
            "both must come from the same subject and resolution (res-1pt8)."
        )


def check_affine(
    affine: np.ndarray, reference_affine: np.ndarray, what: str, reference: str = "the brain mask"
) -> None:
    """Raise `ShapeMismatchError` unless two voxel-to-scanner affines describe the same grid."""
    if not np.allclose(affine, reference_affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        raise ShapeMismatchError(
            f"{what} and {reference} have the same grid shape but different affines "
            f"(largest difference {np.abs(affine - reference_affine).max():.3g} mm), so their "
            "voxels are not the same points in space; use files of the same subject and "
            "resolution (res-1pt8), or resample one onto the other."
        )


def custom_mask_on_grid(mask: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """A user's voxel mask as a 3-D boolean grid mask.

    Accepted: a 1-D boolean array over the brain voxels (the laion_fmri convention, e.g.
    ``sub.get_roi_mask("FFA1") & (nc > 20)``), a 3-D boolean array of the grid, or a 1-D boolean
    array over the whole flattened grid.
    """
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise ParameterError(
            f"mask must be a boolean array, got dtype {mask.dtype}; pass e.g. mask > 0."
        )
    n_brain = int(brain.sum())
    if mask.ndim == 1 and mask.size == n_brain:
        grid = np.zeros(brain.shape, dtype=bool)
        grid[brain] = mask
        return grid
    if mask.shape == brain.shape:
        return mask & brain
    if mask.ndim == 1 and mask.size == brain.size:
        return mask.reshape(brain.shape) & brain
    raise ShapeMismatchError(
        f"mask has shape {mask.shape}; expected ({n_brain},) (one entry per brain voxel of this "
        f"mask_source), the grid shape {brain.shape} or ({brain.size},) (the flattened grid)."
    )


def combine_voxel_mask(
    brain: np.ndarray,
    *,
    roi: np.ndarray | None = None,
    custom: np.ndarray | None = None,
    noise_ceiling: np.ndarray | None = None,
    nc_threshold: float | None = None,
) -> np.ndarray:
    """brain ∩ ROI ∩ (noise ceiling ≥ threshold) ∩ custom, as a 3-D boolean grid mask.

    ``roi`` and ``noise_ceiling`` are grid volumes; ``custom`` is anything `custom_mask_on_grid`
    accepts. A voxel whose noise ceiling equals the threshold passes (``nc >= t``, as in
    laion_fmri); one whose noise ceiling is NaN never does.

    Raises
    ------
    ParameterError
        The selection holds no voxel (the message gives the highest noise ceiling available when
        ``nc_threshold`` is what empties it).
    """
    combined = brain.copy()
    if roi is not None:
        check_grid(roi.shape, brain.shape, "The ROI mask")
        combined &= roi
    if custom is not None:
        combined &= custom_mask_on_grid(custom, brain)
    if not combined.any():
        raise ParameterError(
            "The voxel selection is empty: no voxel of the brain mask lies in the requested "
            "roi=/mask=. Choose another ROI or mask."
        )
    if nc_threshold is not None:
        if not isinstance(nc_threshold, (int, float, np.number)) or not np.isfinite(nc_threshold):
            raise ParameterError(
                f"nc_threshold must be a finite number (percent), got {nc_threshold!r}."
            )
        if noise_ceiling is None:
            raise ParameterError("nc_threshold needs a noise-ceiling volume.")
        check_grid(noise_ceiling.shape, brain.shape, "The noise-ceiling map")
        candidates = noise_ceiling[combined]
        with np.errstate(invalid="ignore"):
            combined &= np.asarray(noise_ceiling >= nc_threshold)
        if not combined.any():
            finite = candidates[np.isfinite(candidates)]
            highest = f"{finite.max():.4g}" if finite.size else "undefined (all NaN)"
            raise ParameterError(
                f"nc_threshold={nc_threshold} leaves no voxel: the highest noise ceiling among the "
                f"{candidates.size} selected voxels is {highest} (percent). Pass a lower "
                "nc_threshold."
            )
    return combined


def scatter_to_grid(values: np.ndarray, mask: np.ndarray, fill: float = 0) -> np.ndarray:
    """Put per-voxel ``values`` (n_voxels,) back on the grid of the 3-D ``mask``."""
    values = np.asarray(values)
    n_voxels = int(mask.sum())
    if values.shape != (n_voxels,):
        raise ShapeMismatchError(
            f"Expected one value per selected voxel, shape ({n_voxels},); got {values.shape}. "
            "Pass the same roi=/mask=/mask_source= that produced the array."
        )
    dtype = np.uint8 if values.dtype == bool else values.dtype
    volume = np.full(mask.shape, fill, dtype=dtype)
    volume[mask] = values
    return volume
