"""Convert 4-D resting-state NIfTI files into Lacuna connectome batch files."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from tqdm.auto import tqdm

from neurotorch._options import check_int
from neurotorch.config import show_progress
from neurotorch.connectome import layout
from neurotorch.connectome.batches import indices_digest, read_batch_header
from neurotorch.connectome.grid import canonical, check_same_grid
from neurotorch.connectome.writer import write_batch
from neurotorch.errors import (
    CorruptFileError,
    DatasetExistsError,
    FormatError,
    NeurotorchError,
    ParameterError,
    ShapeMismatchError,
)

PathOrImage = str | os.PathLike | nib.spatialimages.SpatialImage


def _load(image: PathOrImage) -> tuple[nib.spatialimages.SpatialImage, str]:
    """The image (header read, data not yet) and its name; a file nibabel cannot parse raises
    `FormatError` naming it."""
    if isinstance(image, nib.spatialimages.SpatialImage):
        return image, image.get_filename() or "<in-memory image>"
    try:
        return cast(nib.spatialimages.SpatialImage, nib.load(os.fspath(image))), os.fspath(image)
    except FileNotFoundError:
        raise
    except (ImageFileError, OSError, ValueError, EOFError) as exc:
        raise FormatError(
            f"{image} cannot be read as a NIfTI image ({type(exc).__name__}: {exc}); replace it."
        ) from exc


def _data(img: nib.spatialimages.SpatialImage, name: str) -> np.ndarray:
    """The image's float32 data; a truncated or damaged file raises `CorruptFileError`."""
    try:
        return np.asarray(img.dataobj, dtype=np.float32)
    except (OSError, EOFError, ValueError) as exc:
        raise CorruptFileError(
            f"{name} is truncated or damaged ({type(exc).__name__}: {exc}); copy it again."
        ) from exc


def _subject_id(image: PathOrImage, position: int) -> str:
    if isinstance(image, nib.spatialimages.SpatialImage):
        return f"sub-{position:04d}"
    name = Path(image).name
    for suffix in (".nii.gz", ".nii"):
        name = name.removesuffix(suffix)
    return name


def _masked_series(
    image: PathOrImage,
    mask: nib.spatialimages.SpatialImage,
    *,
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
    inside = np.asarray(mask.dataobj) > 0
    check_same_grid(img, (inside.shape, mask.affine), name=name, ref_name="the mask")
    if n_timepoints is not None and img.shape[3] != n_timepoints:
        raise ShapeMismatchError(
            f"{name} has {img.shape[3]} timepoints but the connectome has {n_timepoints}; every "
            "subject of one connectome needs the same number (trim or exclude this subject)."
        )
    return np.ascontiguousarray(_data(img, name)[inside].T)


def _refuse_other_batch_files(
    out_dir: Path, n_subjects: int, subjects_per_chunk: int, prefix: str
) -> None:
    """Refuse a folder holding batch files this conversion does not write (left by an earlier
    conversion of more subjects, or with another prefix): the folder is read as one connectome,
    so their subjects would join it."""
    if not out_dir.is_dir():
        return
    ours = {layout.batch_file_name(b, prefix) for b in range(-(-n_subjects // subjects_per_chunk))}
    others = [n for n in layout.sorted_batch_names(os.listdir(out_dir)) if n not in ours]
    if others:
        listed = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise DatasetExistsError(
            f"{out_dir} holds batch files this conversion does not write ({listed}); a folder is "
            "read as one connectome, so their subjects would join the "
            f"{n_subjects} converted now. Remove them, or convert into a new or empty folder."
        )


def _batch_is_complete(path: Path, ids: list[str], *, digest: str, n_timepoints: int) -> bool:
    """Whether ``path`` is this conversion's batch file, complete (resume skips it); `False` when
    there is no file. Any other file there is refused rather than replaced."""
    if not path.exists():
        return False
    try:
        header = read_batch_header(path)
    except NeurotorchError as exc:
        raise DatasetExistsError(
            f"{path} exists and is not a readable batch file ({exc}); neurotorch does not "
            "replace files it cannot identify as its own. Remove it, or convert into another folder."
        ) from exc
    if (header.subject_ids, header.mask_digest, header.n_timepoints) != (
        tuple(ids),
        digest,
        n_timepoints,
    ):
        raise DatasetExistsError(
            f"{path} holds other subjects, another mask or another number of timepoints than "
            "this conversion writes there; neurotorch does not replace it. Convert into a new or "
            "empty folder (or remove the old batch files)."
        )
    return True


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
    DatasetExistsError
        A file of another connectome (or an unreadable one) sits where a batch file goes, or the
        folder holds batch files this conversion does not write (from a conversion of more
        subjects, or with another prefix).
    ParameterError
        No series, ``subjects_per_chunk`` below 1, or ids that do not name each series once.
    ShapeMismatchError
        A series is not 4-D, is on another grid, or has a different number of timepoints.
    OrientationMismatchError
        A series is oriented differently from the mask (with ``reorient=False``) or its header
        transforms disagree on left/right.
    """
    check_int("subjects_per_chunk", subjects_per_chunk, minimum=1)
    if not len(nifti_paths):
        raise ParameterError("nifti_paths is empty; give at least one 4-D series.")
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
    if len(ids) != len(nifti_paths) or len(set(ids)) != len(ids):
        raise ParameterError(
            f"subject_ids must name each of the {len(nifti_paths)} series once; got {len(ids)} "
            f"ids, {len(ids) - len(set(ids))} repeated."
        )
    out_dir = Path(out_dir)
    _refuse_other_batch_files(out_dir, len(nifti_paths), subjects_per_chunk, prefix)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = indices_digest(mask_indices)

    first_img, first_name = _load(nifti_paths[0])
    if len(first_img.shape) != 4:
        raise ShapeMismatchError(
            f"{first_name} has shape {first_img.shape}; expected a 4-D (x, y, z, t) series."
        )
    n_timepoints = int(first_img.shape[3])
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
            if _batch_is_complete(path, ids[start:stop], digest=digest, n_timepoints=n_timepoints):
                bar.update(stop - start)
                continue

            def series(start: int = start, stop: int = stop) -> Iterator[np.ndarray]:
                for image in nifti_paths[start:stop]:
                    yield _masked_series(
                        image, mask_img, n_timepoints=n_timepoints, reorient=reorient
                    )
                    bar.update(1)

            write_batch(
                path,
                series(),
                ids[start:stop],
                mask_indices=mask_indices,
                mask_affine=mask_img.affine,
                mask_shape=mask_bool.shape,
                n_timepoints=n_timepoints,
                space=space,
                description=description,
                source="neurotorch.connectome.convert_timeseries",
            )
    return paths
