"""Bad input to the fMRI data layer: settings objects, masks, loaders, the prepared store.

Each case damages a copy of the tiny tree (or nothing, when only a value is wrong), calls what a
user would call, and must raise a named neurotorch error (`tests/faults/framework.py`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from faults.framework import BETAS, BRAIN, CLIP, SES, SESSION_NC, SUB, Fault, run_fault, tree_case
from torch.utils.data import DataLoader

import neurotorch
from neurotorch.errors import (
    CacheError,
    DtypeRangeError,
    FormatError,
    MixedBatchError,
    ParameterError,
    ShapeMismatchError,
    SplitError,
)
from neurotorch.fmri import layout as fmri_layout
from neurotorch.fmri import load_subject


def _nothing(root: Path) -> None:
    return None


def _dataset(root: Path, **config):
    config.setdefault("subject", SUB)
    config.setdefault("features", None)
    return neurotorch.load_dataset(
        "laion-fmri", data_dir=root, cache_dir=root.parent / "cache", **config
    )


def _stream(root: Path, **config):
    return neurotorch.load_dataset("laion-fmri", data_dir=root, streaming=True, **config)


def _module(root: Path, **config):
    from neurotorch.lightning import LaionFMRIDataModule

    return LaionFMRIDataModule(data_dir=str(root), **config)


def _brain(root: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(root / BRAIN)
    return np.asarray(image.dataobj) != 0, image.affine


def _mask_file(name: str, change: Callable[[np.ndarray, np.ndarray], tuple]) -> Callable:
    """Damage: write a mask NIfTI next to the tree, made from the brain mask by ``change``."""

    def damage(root: Path) -> str:
        brain, affine = _brain(root)
        data, affine = change(brain, affine)
        nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), root.parent / name)
        return name

    return damage


def _shifted(brain: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same grid moved by 5 mm along x: same shape, other voxels in space."""
    moved = affine.copy()
    moved[0, 3] += 5.0
    return brain, moved


def _shift_file(relpath: str) -> Callable[[Path], str]:
    """Damage: a file of the tree rewritten with its affine moved 5 mm along x (same shape, the
    voxels elsewhere in space); the culprit is its name."""

    def damage(root: Path) -> str:
        image = nib.load(root / relpath)
        data, affine = _shifted(np.asarray(image.dataobj), image.affine)
        nib.save(nib.Nifti1Image(data, affine, image.header), root / relpath)
        return Path(relpath).name

    return damage


def _invalid_embedding_row(root: Path) -> str:
    """Damage: one image's CLIP row marked not valid (the file's ``valid`` column), as the
    dataset marks images it could not embed."""
    import h5py

    with h5py.File(root / CLIP, "r+") as f:
        f["valid"][0] = False
    return Path(CLIP).name


def _with_mask(name: str) -> Callable[[Path], object]:
    return lambda r: _dataset(r, mask=str(r.parent / name))


def _big_beta(root: Path) -> str:
    """A finite beta of 70000 (beyond float16) in a brain voxel of the session's betas."""
    image = nib.load(root / BETAS)
    data = np.asarray(image.dataobj).astype(np.float32)
    voxel = tuple(np.argwhere(_brain(root)[0])[0])
    data[(*voxel, 0)] = 70000.0
    nib.save(nib.Nifti1Image(data, image.affine, image.header), root / BETAS)
    return Path(BETAS).name


def _mixed_batch(root: Path) -> object:
    dataset = _dataset(root, subject=[SUB, "sub-02"], roi="face")
    return next(iter(DataLoader(dataset, batch_size=400, shuffle=False)))


def _swapped_statistics(root: Path) -> Callable[[], object]:
    """A dataset opened, then another session's statistics copied over its own (``cp -p``)."""
    dataset = _dataset(root, zscore=True, sessions=[SES, "ses-02"])
    files = dataset.stores[SUB]
    shutil.copy2(files.session("ses-02").stats_path, files.session(SES).stats_path)
    return lambda: dataset[0]


FAULTS: list[Fault] = [
    # Trial selections: one meaning of the split string, parts, OOD types.
    tree_case(
        "split-with-part-in-a-selection",
        SplitError,
        _nothing,
        lambda r: _dataset(r, trials={"split": "random_0/train"}),
        "random_0/train",
    ),
    tree_case(
        "part-without-split", ParameterError, _nothing, lambda r: _dataset(r, part="test"), "test"
    ),
    tree_case(
        "val-part-without-val-fraction",
        ParameterError,
        _nothing,
        lambda r: _dataset(r, split="random_0/val"),
        "val_fraction",
    ),
    tree_case(
        "ood-types-on-another-split",
        ParameterError,
        _nothing,
        lambda r: _dataset(r, split="tau/test", ood_types="shape"),
        "tau",
    ),
    tree_case(
        "ood-type-unknown-dataset",
        ParameterError,
        _nothing,
        lambda r: _dataset(r, split="ood/test", ood_types=["shapes"]),
        "shapes",
    ),
    tree_case(
        "selection-keeps-no-trial",
        ParameterError,
        _nothing,
        lambda r: _dataset(r, split="random_0/test", image_names="unique_nothing.jpg"),
        "image_names",
    ),
    # Voxel selections: masks in one shape, on the subject's grid.
    tree_case(
        "mask-one-dimensional",
        ParameterError,
        _nothing,
        lambda r: _dataset(r, mask=_brain(r)[0][_brain(r)[0]]),
        "3-D boolean",
    ),
    tree_case(
        "mask-not-boolean",
        ParameterError,
        _nothing,
        lambda r: _dataset(r, mask=_brain(r)[0].astype(np.float32)),
        "float32",
    ),
    tree_case(
        "mask-file-missing",
        ParameterError,
        _nothing,
        lambda r: _dataset(r, mask=str(r.parent / "absent.nii.gz")),
        "absent.nii.gz",
    ),
    tree_case(
        "mask-file-other-grid",
        ShapeMismatchError,
        _mask_file("cropped.nii.gz", lambda brain, affine: (brain[:-1], affine)),
        _with_mask("cropped.nii.gz"),
    ),
    tree_case(
        "mask-file-other-affine",
        ShapeMismatchError,
        _mask_file("shifted.nii.gz", _shifted),
        _with_mask("shifted.nii.gz"),
    ),
    tree_case(
        "roi-file-other-affine",
        ShapeMismatchError,
        _shift_file(fmri_layout.roi_volume(SUB, "face", "FFA1")),
        lambda r: _dataset(r, roi="FFA1"),
    ),
    tree_case(
        "noise-ceiling-other-affine",
        ShapeMismatchError,
        _shift_file(fmri_layout.subject_noise_ceiling(SUB, "NoiseceilingAllrep")),
        lambda r: _dataset(r, nc_threshold=10),
    ),
    tree_case(
        "session-noise-ceiling-other-affine",
        ShapeMismatchError,
        _shift_file(SESSION_NC),
        lambda r: load_subject(SUB, data_dir=r).get_betas(SES, nc_threshold=10),
    ),
    tree_case(
        "embedding-row-not-valid",
        FormatError,
        _invalid_embedding_row,
        lambda r: _dataset(r, features="CLIP"),
    ),
    tree_case(
        "nc-desc-unknown",
        ParameterError,
        _nothing,
        lambda r: _dataset(r, nc_threshold=10, nc_desc="Noiseceiling3rep"),
        "Noiseceiling3rep",
    ),
    # Settings objects: keys, types, and what only the store can do.
    tree_case(
        "settings-unknown-key",
        ParameterError,
        _nothing,
        lambda r: _dataset(r, voxels={"rois": "face"}),
        "rois",
    ),
    tree_case(
        "settings-not-a-dict",
        ParameterError,
        _nothing,
        lambda r: _dataset(r, voxels="face"),
        "voxels",
    ),
    tree_case(
        "settings-given-twice",
        ParameterError,
        _nothing,
        lambda r: _dataset(r, roi="face", voxels={"roi": "place"}),
        "roi",
    ),
    tree_case(
        "stream-zscore", ParameterError, _nothing, lambda r: _stream(r, zscore=True), "zscore"
    ),
    tree_case(
        "stream-float16", ParameterError, _nothing, lambda r: _stream(r, dtype="float16"), "dtype"
    ),
    tree_case(
        "module-selection-with-part",
        ParameterError,
        _nothing,
        lambda r: _module(r, trials={"split": "tau", "part": "train"}),
        "part='train'",
    ),
    tree_case(
        "module-selection-without-split",
        ParameterError,
        _nothing,
        lambda r: _module(r, trials={"sessions": "ses-01"}),
        "split",
    ),
    # Loaders and the store.
    tree_case("plain-loader-mixes-subjects", MixedBatchError, _nothing, _mixed_batch, "sub-02"),
    tree_case(
        "float16-beyond-range",
        DtypeRangeError,
        _big_beta,
        lambda r: _dataset(r, sessions=SES, dtype="float16"),
    ),
    tree_case(
        "statistics-of-another-session",
        CacheError,
        lambda r: f"{SES}.stats.npz",
        lambda r: _swapped_statistics(r)(),
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_gives_named_error(
    fault: Fault, tiny_laion_root: Path, tmp_path: Path, record_property
):
    run_fault(fault, tiny_laion_root, tmp_path, record_property)
