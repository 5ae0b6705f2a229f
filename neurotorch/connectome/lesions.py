"""Lesion masks brought onto a connectome's voxels, with their values, space and grid checked.

A lesion mask must be binary (0 and 1) unless a threshold says how to binarise it, be in the
connectome's template space, and lie on the connectome's grid unless resampling is asked for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from neurotorch._options import check_number
from neurotorch.connectome import layout
from neurotorch.connectome.batches import ConnectomeBatches, repeated
from neurotorch.connectome.grid import (
    check_same_grid,
    mask_world_coordinates,
    oriented_like,
    sample_at_mask,
)
from neurotorch.errors import (
    DataNotDownloadedError,
    FormatError,
    ParameterError,
    ShapeMismatchError,
    SpaceMismatchError,
)
from neurotorch.io.nibabel_read import read_nifti_image

LesionInput = str | os.PathLike | nib.spatialimages.SpatialImage | np.ndarray

_BIDS_SPACE = re.compile(r"(?:^|_)space-(?P<space>[A-Za-z0-9]+)(?:_|\.|$)")


@dataclass(repr=False)
class LesionSet:
    """Lesions on the connectome's voxels."""

    names: list[str]
    masks: np.ndarray  # (n_lesions, n_voxels) bool
    volumes_mm3: np.ndarray  # (n_lesions,) lesion volume in its own image
    sources: list[str]  # file of each lesion, or "<image>" / "<array>"
    options: dict = field(default_factory=dict)  # the options they were loaded with
    space: str = layout.UNKNOWN_SPACE  # the connectome's space, whose voxels the masks cover

    def __repr__(self) -> str:
        shown = ", ".join(self.names[:3]) + (", ..." if len(self.names) > 3 else "")
        folders = {os.path.dirname(source) for source in self.sources}
        where = f" from {folders.pop()!r}" if len(folders) == 1 and "" not in folders else ""
        voxels = self.masks.sum(axis=1)
        return (
            f"LesionSet({len(self.names)} lesions [{shown}]{where}, {voxels.min()}-{voxels.max()} "
            f"voxels each of the connectome's {self.masks.shape[1]}, space={self.space!r})"
        )


def _lesion_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not files:
        raise DataNotDownloadedError(f"No .nii/.nii.gz lesion masks in {folder}.")
    return files


def _lesion_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        name = name.removesuffix(suffix)
    return name


def _item_name(item: LesionInput, position: int) -> str:
    """A file's name without extension, else ``lesion-<position>``."""
    if isinstance(item, (str, os.PathLike)):
        return _lesion_name(Path(item))
    return f"lesion-{position:03d}"


def named_lesion_inputs(
    lesions: LesionInput | Sequence | Mapping,
) -> list[tuple[str, LesionInput]]:
    """(name, mask) pairs of any accepted lesion input; file names without extension name files.

    Raises `ParameterError` for no lesion at all and for two lesions of the same name (their
    output files would overwrite each other).
    """
    if isinstance(lesions, Mapping):
        named = [(str(k), v) for k, v in lesions.items()]
    elif isinstance(lesions, (str, os.PathLike)):
        path = Path(lesions)
        if not path.exists():
            raise DataNotDownloadedError(f"No lesion mask or folder at {path}.")
        files = _lesion_files(path) if path.is_dir() else [path]
        named = [(_lesion_name(f), f) for f in files]
    else:
        items = (
            [lesions]
            if isinstance(lesions, (nib.spatialimages.SpatialImage, np.ndarray))
            else lesions
        )
        named = [(_item_name(item, i), item) for i, item in enumerate(items)]
    if not named:
        raise ParameterError("No lesion given; pass a folder, a file, an image or a list of them.")
    twice = repeated([name for name, _ in named])
    if twice:
        raise ParameterError(
            f"Two lesions are named {twice[:3]} (the same file name in different folders?); "
            "rename them or pass a mapping {name: mask}."
        )
    return named


def bids_space(path: str | os.PathLike) -> str | None:
    """The ``space-<label>`` entity of a BIDS file name, or ``None``."""
    match = _BIDS_SPACE.search(Path(path).name)
    return match.group("space") if match else None


def binary_mask(values: np.ndarray, name: str, threshold: float | None) -> np.ndarray:
    """``values`` as a boolean mask: 0/1 values as they are, anything else only with a threshold.

    Raises
    ------
    FormatError
        Values other than 0 and 1 (or NaN) without ``threshold``.
    """
    values = np.asarray(values)
    if threshold is not None:
        return values > threshold
    if values.dtype == bool:
        return values
    odd = values[(values != 0) & (values != 1)]
    if odd.size:
        shown = ", ".join(f"{v:g}" for v in np.unique(odd)[:3])
        raise FormatError(
            f"Lesion {name!r} is not a binary mask: it holds {odd.size} voxels with values other "
            f"than 0 and 1 (e.g. {shown}). Binarise it, or pass threshold=T (CLI: --threshold T) "
            "to take the voxels with value > T."
        )
    return values == 1


def _check_space(name: str, lesion_space: str | None, connectome: ConnectomeBatches) -> None:
    if lesion_space is None or connectome.space == layout.UNKNOWN_SPACE:
        return
    if lesion_space != connectome.space:
        raise SpaceMismatchError(
            f"Lesion {name!r} is in space {lesion_space!r} but the connectome is in "
            f"{connectome.space!r}; register the lesion to {connectome.space}, or pass "
            "allow_other_space=True (CLI: --allow-other-space) if the two spaces are the same grid."
        )


def _image_values(
    img: nib.spatialimages.SpatialImage,
    name: str,
    connectome: ConnectomeBatches,
    *,
    world: np.ndarray,
    resample: bool,
) -> np.ndarray:
    """The image's values at the connectome's voxels; off-grid images only with ``resample``."""
    if not resample:
        aligned = oriented_like(img, connectome.affine, name)
        try:
            check_same_grid(
                aligned,
                (connectome.mask_shape, connectome.affine),
                name=name,
                ref_name="the connectome",
            )
        except ShapeMismatchError as exc:
            raise ShapeMismatchError(
                f"{exc} Voxel sizes: lesion {np.round(nib.affines.voxel_sizes(aligned.affine), 3)} mm, "
                f"connectome {np.round(nib.affines.voxel_sizes(connectome.affine), 3)} mm. Pass "
                "resample=True (CLI: --resample) to sample it nearest-neighbour at the "
                "connectome's voxels."
            ) from None
    return sample_at_mask(
        img, name, mask_indices=connectome.mask_indices, mask_affine=connectome.affine, world=world
    )


def _missed_centres(volume_mm3: float, connectome: ConnectomeBatches) -> str:
    """Why a resampled lesion inside the brain can still select no voxel."""
    voxel_mm3 = abs(np.linalg.det(connectome.affine[:3, :3]))
    return (
        f" Resampled, it is read at the centres of the connectome's {voxel_mm3:.0f} mm³ voxels "
        f"(nearest neighbour): a lesion of {volume_mm3:.0f} mm³ that covers none of those "
        "centres selects no voxel even inside the brain; dilate it, or bring it to the "
        "connectome's grid with a rule of your choice (such as any overlap)."
    )


def load_lesions(
    lesions: LesionInput | Sequence | Mapping,
    connectome: ConnectomeBatches,
    threshold: float | None = None,
    space: str | None = None,
    resample: bool = False,
    allow_other_space: bool = False,
) -> LesionSet:
    """Bring lesion masks onto the connectome's voxels.

    Parameters
    ----------
    lesions
        A folder of NIfTI masks, a file, an image, a list of these, or a mapping name -> mask. A
        numpy array is taken to be on the connectome's grid already: 3-D of the mask's shape or
        1-D over its voxels.
    connectome
        The connectome whose mask and affine define the target grid.
    threshold
        Binarise every mask as value > ``threshold``. Without it a mask holding values other than
        0 and 1 is refused.
    space
        Template space of the lesions (e.g. ``"MNI152NLin6Asym"``); default: the ``space-<label>``
        entity of a BIDS file name, else the connectome's space is assumed.
    resample
        Sample masks on another grid (voxel size, field of view) nearest-neighbour at the
        connectome's voxel centres, after bringing them to RAS+; without it they are refused.
    allow_other_space
        Accept lesions whose declared space differs from the connectome's.

    Raises
    ------
    FormatError
        A mask is not binary (and no ``threshold`` was given), or a file is not a NIfTI image.
    CorruptFileError
        A file is truncated or damaged.
    ShapeMismatchError
        A mask is on another grid (and ``resample`` is off), an array does not match the grid,
        or a lesion has no voxel inside the brain mask.
    SpaceMismatchError
        A lesion's space differs from the connectome's (and ``allow_other_space`` is off).
    OrientationMismatchError
        A lesion file's qform and sform disagree on orientation.
    """
    if threshold is not None:
        threshold = check_number("threshold", threshold)
    names, masks, volumes, sources = [], [], [], []
    voxel_mm3 = abs(np.linalg.det(connectome.affine[:3, :3]))
    world = mask_world_coordinates(connectome.mask_indices, connectome.affine)
    for name, item in named_lesion_inputs(lesions):
        declared = space
        if declared is None and isinstance(item, (str, os.PathLike)):
            declared = bids_space(item)
        if not allow_other_space:
            _check_space(name, declared, connectome)
        if isinstance(item, np.ndarray):
            source, own, own_voxel_mm3 = "<array>", item, voxel_mm3
            if item.shape == connectome.mask_shape:
                values = item[tuple(connectome.mask_indices.T)]
            elif item.shape == (connectome.n_voxels,):
                values = item
            else:
                raise ShapeMismatchError(
                    f"Lesion {name!r} has shape {item.shape}; an array must have the mask shape "
                    f"{connectome.mask_shape} or ({connectome.n_voxels},). Pass a NIfTI image to "
                    "resample from another grid."
                )
        else:
            img: nib.spatialimages.SpatialImage
            if isinstance(item, (str, os.PathLike)):
                own, img = read_nifti_image(item)
                source = os.fspath(item)
            else:
                img, source = item, item.get_filename() or "<image>"
                own = np.asarray(img.dataobj)
            values = _image_values(img, name, connectome, world=world, resample=resample)
            own_voxel_mm3 = abs(np.linalg.det(img.affine[:3, :3]))
        # the whole mask must be binary, not only where it is sampled
        own_volume = np.count_nonzero(binary_mask(own, name, threshold)) * own_voxel_mm3
        mask = binary_mask(values, name, threshold)
        if own_volume == 0:
            raise FormatError(
                f"Lesion {name!r} ({source}) is empty: no voxel of its mask is set"
                f"{'' if threshold is None else f' above threshold {threshold}'}."
            )
        if not mask.any():
            raise ShapeMismatchError(
                f"Lesion {name!r} has no voxel inside the connectome's brain mask; check that it is "
                f"in the connectome's space ({connectome.space}) and that its affine is right."
                + (_missed_centres(own_volume, connectome) if resample else "")
            )
        names.append(name)
        masks.append(mask)
        volumes.append(float(own_volume))
        sources.append(source)
    options = dict(
        threshold=threshold, space=space, resample=resample, allow_other_space=allow_other_space
    )
    return LesionSet(
        names,
        np.stack(masks),
        np.asarray(volumes),
        sources=sources,
        options=options,
        space=connectome.space,
    )
