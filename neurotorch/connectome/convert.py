"""Convert 4-D resting-state NIfTI files into Lacuna connectome batch files."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from neurotorch.config import show_progress
from neurotorch.connectome import layout
from neurotorch.connectome.batches import indices_digest, read_batch_header
from neurotorch.connectome.grid import canonical, check_same_grid
from neurotorch.connectome.writer import write_batch
from neurotorch.errors import NeurotorchError, ShapeMismatchError

PathOrImage = str | os.PathLike | nib.spatialimages.SpatialImage


def _load(image: PathOrImage) -> tuple[nib.spatialimages.SpatialImage, str]:
    if isinstance(image, nib.spatialimages.SpatialImage):
        return image, image.get_filename() or "<in-memory image>"
    return nib.load(os.fspath(image)), os.fspath(image)


def _subject_id(image: PathOrImage, position: int) -> str:
    if isinstance(image, nib.spatialimages.SpatialImage):
        return f"sub-{position:04d}"
    name = Path(image).name
    for suffix in (".nii.gz", ".nii"):
        name = name.removesuffix(suffix)
    return name


def _masked_series(
    image: PathOrImage,
    mask: np.ndarray,
    mask_affine: np.ndarray,
    n_timepoints: int | None,
    reorient: bool,
) -> np.ndarray:
    """One subject's (n_timepoints, n_voxels) series inside the mask, checked against the mask grid."""
    img, name = _load(image)
    if len(img.shape) != 4:
        raise ShapeMismatchError(
            f"{name} has shape {img.shape}; expected a 4-D (x, y, z, t) series."
        )
    if reorient:
        img = canonical(img, name)
    check_same_grid(img.shape, img.affine, mask.shape, mask_affine, name, "the mask")
    if n_timepoints is not None and img.shape[3] != n_timepoints:
        raise ShapeMismatchError(
            f"{name} has {img.shape[3]} timepoints but the connectome has {n_timepoints}; every "
            "subject of one connectome needs the same number (trim or exclude this subject)."
        )
    data = np.asarray(img.dataobj, dtype=np.float32)
    return np.ascontiguousarray(data[mask].T)


def _batch_is_complete(path: Path, ids: list[str], digest: str, n_timepoints: int | None) -> bool:
    if not path.exists():
        return False
    try:
        header = read_batch_header(path)
    except NeurotorchError:
        return False
    return (
        header.subject_ids == tuple(ids)
        and header.mask_digest == digest
        and (n_timepoints is None or header.n_timepoints == n_timepoints)
    )


def convert_timeseries(
    nifti_paths: Sequence[PathOrImage],
    mask: PathOrImage,
    out_dir: str | os.PathLike,
    subjects_per_chunk: int = 10,
    prefix: str = layout.DEFAULT_PREFIX,
    space: str = layout.DEFAULT_SPACE,
    description: str = "",
    subject_ids: Sequence[str] | None = None,
    reorient: bool = True,
) -> list[Path]:
    """Turn 4-D NIfTI series into Lacuna batch files.

    Mask and series are brought to RAS+ (``reorient=True``) and must then share one grid. Each batch
    file is written to a temporary name and renamed when complete; a rerun skips batch files that
    are already complete for the same subjects and mask, so an interrupted conversion resumes.

    Parameters
    ----------
    nifti_paths
        One 4-D (x, y, z, t) image or path per subject, all with the same number of timepoints.
    mask
        3-D brain mask (non-zero = inside) on the grid of the series.
    out_dir
        Output folder for ``<prefix>_chunk_NNN.h5``.
    subjects_per_chunk
        Subjects per batch file.
    prefix, space, description
        File name prefix and the ``space``/``description`` attributes.
    subject_ids
        Ids stored with the subjects; default: the file names without extension.
    reorient
        ``False`` refuses (rather than fixes) series whose orientation differs from the mask's.

    Returns
    -------
    list of Path
        The batch files, in order.

    Raises
    ------
    ShapeMismatchError
        A series is not 4-D, is on another grid, or has a different number of timepoints.
    OrientationMismatchError
        A series is oriented differently from the mask (with ``reorient=False``) or its header
        transforms disagree on left/right.
    """
    if subjects_per_chunk < 1:
        raise ValueError(f"subjects_per_chunk must be >= 1, got {subjects_per_chunk}.")
    mask_img, mask_name = _load(mask)
    if reorient:
        mask_img = canonical(mask_img, mask_name)
    mask_bool = np.asarray(mask_img.dataobj) > 0
    if mask_bool.ndim != 3:
        raise ShapeMismatchError(f"{mask_name} has shape {mask_bool.shape}; a mask must be 3-D.")
    mask_indices = np.argwhere(mask_bool)  # C order
    ids = (
        list(subject_ids)
        if subject_ids is not None
        else [_subject_id(p, i) for i, p in enumerate(nifti_paths)]
    )
    if len(ids) != len(nifti_paths):
        raise ValueError(f"{len(ids)} subject ids for {len(nifti_paths)} series.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = indices_digest(mask_indices)

    first_img, _ = _load(nifti_paths[0]) if len(nifti_paths) else (None, "")
    n_timepoints = (
        int(first_img.shape[3]) if first_img is not None and len(first_img.shape) == 4 else None
    )
    paths = []
    with tqdm(
        total=len(nifti_paths),
        desc="convert connectome",
        unit="subject",
        disable=not show_progress(),
    ) as bar:
        for batch, start in enumerate(range(0, len(nifti_paths), subjects_per_chunk)):
            stop = min(start + subjects_per_chunk, len(nifti_paths))
            path = out_dir / layout.batch_file_name(batch, prefix)
            paths.append(path)
            if _batch_is_complete(path, ids[start:stop], digest, n_timepoints):
                bar.update(stop - start)
                continue

            def series(start: int = start, stop: int = stop) -> Iterator[np.ndarray]:
                for image in nifti_paths[start:stop]:
                    yield _masked_series(image, mask_bool, mask_img.affine, n_timepoints, reorient)
                    bar.update(1)

            write_batch(
                path,
                series(),
                ids[start:stop],
                mask_indices,
                mask_img.affine,
                mask_bool.shape,
                n_timepoints or 0,
                space=space,
                description=description,
                source="neurotorch.connectome.convert_timeseries",
            )
    return paths
