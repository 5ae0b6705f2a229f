"""`LaionFMRIDataModule`: one owner of the voxel axis (the voxel table is the items' voxels, with a
noise-ceiling threshold and a custom mask, through a real encoder fit and test), what a model
needs before fit, parts selected by the datasets themselves, plain hyperparameters."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from encoder_helpers import fit_and_test_encoder
from exactly_once import fmri_ids
from lightning.pytorch.callbacks import ModelCheckpoint
from record_ids import RecordIds, trainer

from neurotorch.fmri import layout
from neurotorch.fmri.voxel_selection import VoxelSelection
from neurotorch.lightning import LaionFMRIDataModule

SUB = "sub-01"


def _volume(root, relpath: str) -> np.ndarray:
    return np.asarray(nib.load(root / relpath).dataobj)


def _brain(root, subject: str = SUB) -> np.ndarray:
    return _volume(root, layout.anatomical_brain_mask(subject)) != 0


def _face(root, subject: str = SUB) -> np.ndarray:
    face = np.zeros(_brain(root, subject).shape, dtype=bool)
    for roi in layout.ROI_CATEGORIES["face"]:
        path = root / layout.roi_volume(subject, "face", roi)
        if path.exists():
            face |= _volume(root, layout.roi_volume(subject, "face", roi)) != 0
    return face


def _module(root, **options) -> LaionFMRIDataModule:
    return LaionFMRIDataModule(data_dir=str(root), subject=SUB, batch_size=64, **options)


def _check_voxel_axis(dm: LaionFMRIDataModule, expected: np.ndarray, tmp_path) -> None:
    """Table, items and the encoder's report all have the voxels of ``expected`` (C order)."""
    table = dm.voxel_table
    np.testing.assert_array_equal(table["voxel"], np.flatnonzero(expected.ravel()))
    assert dm.n_voxels == {SUB: int(expected.sum())}
    model = fit_and_test_encoder(dm, tmp_path, penalties=[1.0, 100.0], per_voxel=False)
    assert dm.dataset("test")[0]["betas"].shape == (len(table),)
    assert model.test_metrics["n_voxels"] == len(table) == len(model.per_voxel_r())
    if "per_roi" in model.test_metrics:
        counts = sum(roi["n_voxels"] for roi in model.test_metrics["per_roi"].values())
        assert counts == len(table)


@pytest.mark.slow
def test_voxel_table_is_the_items_voxels_with_a_noise_ceiling_threshold(tiny_laion_root, tmp_path):
    dm = _module(tiny_laion_root, voxels={"nc_threshold": 20.0})
    ceiling = _volume(tiny_laion_root, layout.subject_noise_ceiling(SUB, "NoiseceilingAllrep"))
    with np.errstate(invalid="ignore"):
        expected = _brain(tiny_laion_root) & (ceiling >= 20.0)
    assert 0 < expected.sum() < _brain(tiny_laion_root).sum()  # the threshold drops voxels
    _check_voxel_axis(dm, expected, tmp_path)
    table = dm.voxel_table
    np.testing.assert_allclose(
        table["noise_ceiling"],
        _volume(tiny_laion_root, layout.subject_noise_ceiling(SUB, "Noiseceiling4rep"))[expected],
    )


@pytest.mark.slow
def test_voxel_table_is_the_items_voxels_with_a_custom_mask_and_rois(tiny_laion_root, tmp_path):
    brain = _brain(tiny_laion_root)
    custom = np.zeros(brain.shape, dtype=bool)
    custom[:, : brain.shape[1] // 2] = True
    path = tmp_path / "mask.nii.gz"
    affine = nib.load(tiny_laion_root / layout.anatomical_brain_mask(SUB)).affine
    nib.save(nib.Nifti1Image(custom.astype(np.uint8), affine), path)
    dm = _module(tiny_laion_root, voxels={"roi": ["face", "V1v"], "mask": str(path)})
    v1v = _volume(tiny_laion_root, layout.roi_volume(SUB, "retinotopy", "V1v")) != 0
    expected = brain & (_face(tiny_laion_root) | v1v) & custom
    _check_voxel_axis(dm, expected, tmp_path)
    assert set(dm.voxel_table["roi"]) <= {*layout.ROI_CATEGORIES["face"], "V1v"}


def test_what_a_model_needs_is_known_before_any_dataset(tiny_laion_root):
    dm = LaionFMRIDataModule(
        data_dir=str(tiny_laion_root),
        subject=["sub-01", "sub-02"],
        voxels={"roi": "face"},
        features=["CLIP", "DINOv2", "captions"],
    )
    assert dm.n_voxels == {
        s: int((_brain(tiny_laion_root, s) & _face(tiny_laion_root, s)).sum())
        for s in ("sub-01", "sub-02")
    }
    dims = {}
    for model in ("CLIP", "DINOv2"):
        with h5py.File(tiny_laion_root / layout.embeddings(model), "r") as f:
            dims[f"embedding_{model}"] = f["embedding"].shape[1]
    assert dm.feature_dims == dims
    assert dm.datasets == {}  # nothing was built


def test_parts_are_selected_by_the_datasets(tiny_laion_root):
    dm = _module(tiny_laion_root, voxels={"roi": "face"})
    parts = {part: dm.dataset(part) for part in ("train", "val", "test")}
    names = {part: set(d.trials["image_name"]) for part, d in parts.items()}
    assert all(names.values()) and not (
        names["train"] & names["val"] or names["test"] & names["train"]
    )
    for part, dataset in parts.items():
        assert dataset.trial_selection.part == part and dataset.trial_selection.image_names is None
    with pytest.raises(Exception, match="every part"):
        _module(tiny_laion_root, trials={"split": "tau", "part": "train"})
    no_val = _module(tiny_laion_root, trials={"split": "tau"})
    assert no_val.dataset("val") is None and no_val.val_dataloader() == []


def test_hyperparameters_are_plain_and_a_checkpoint_loads_with_weights_only(
    tiny_laion_root, tmp_path
):
    dm = _module(tiny_laion_root, voxels=VoxelSelection(roi="FFA1"), read={"zscore": True})
    assert dm.hparams["voxels"]["roi"] == ["FFA1"] and dm.hparams["read"]["zscore"] is True
    every = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)
    trainer(tmp_path, max_steps=1, callbacks=[every], enable_checkpointing=True).fit(
        RecordIds(str(tmp_path), fmri_ids), dm
    )
    (path,) = tmp_path.glob("*.ckpt")
    saved = torch.load(path, weights_only=True)["datamodule_hyper_parameters"]
    assert saved["voxels"]["roi"] == ["FFA1"] and saved["trials"]["split"] == "random_0"
    assert "split random_0/all of pool shared" in repr(dm) and "roi FFA1" in repr(dm)
