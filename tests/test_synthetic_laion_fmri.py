"""Every file of the synthetic LAION-fMRI tree, read back with nibabel / h5py / pandas / PIL
directly (not through neurotorch) and checked against the contract of the real dataset."""

from __future__ import annotations

import io
import re
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

GLM = "derivatives/glmsingle-tedana"
ROI_NAMES = {
    "body": {"EBA", "FBA"}, "character": {"VWFA1", "VWFA2", "mfswords", "pSTSwords"},
    "face": {"FFA1", "FFA2", "OFA", "pSTSfaces"},
    "laion": {"laionEVC", "laiondorsal", "laiongeneral", "laionlateral", "laionventral"},
    "motion": {"MST", "MT"}, "object": {"lobjects", "vobjects"}, "place": {"MPA", "OPA", "PPA"},
    "retinotopy": {"IPCS", "IPS0", "LO1", "LO2", "SPCS", "TO1", "TO2", "V1d", "V1v", "V2d", "V2v",
                   "V3A", "V3B", "V3d", "V3v", "VO1", "VO2", "hV4"},
}  # fmt: skip
NAME_PATTERNS = [
    r"shared_12rep_LAION_cluster_\d+_i\d+\.jpg",
    r"shared_4rep_LAION_cluster_\d+_i\d+\.jpg",
    r"shared_4rep_OOD_(cropped|gabor|gaudy|illusion-classic|illusion-natural|relations|selfmade|shape|unusual)_\w+\.png",
    r"unique_LAION_fillup_cluster_\d+_i\d+_p\d+\.jpg",
]


def betas_path(root: Path, sub: str, ses: str) -> Path:
    name = f"{sub}_{ses}_task-images_space-T1w_stat-effect_desc-SingletrialBetas_statmap.nii.gz"
    return root / GLM / sub / ses / "func" / name


def trials_path(root: Path, sub: str, ses: str) -> Path:
    return (
        root
        / GLM
        / sub
        / ses
        / "func"
        / f"{sub}_{ses}_task-images_desc-SingletrialBetas_trials.tsv"
    )


@pytest.fixture(scope="module")
def metadata(tiny_laion_root) -> pd.DataFrame:
    return pd.read_csv(tiny_laion_root / "stimuli" / "task-images_metadata.csv")


def test_session_files(tiny_laion_root, metadata):
    root = tiny_laion_root
    for sub in ("sub-01", "sub-02"):
        mask_img = nib.load(root / f"derivatives/anatomical/{sub}/ses-PrismaAnat/anat/"
                            f"{sub}_ses-PrismaAnat_space-T1w_res-1pt8_desc-brain_mask.nii.gz")  # fmt: skip
        for ses in ("ses-01", "ses-02"):
            img = nib.load(betas_path(root, sub, ses))
            data = img.get_fdata(dtype=np.float32)
            trials = pd.read_csv(trials_path(root, sub, ses), sep="\t")
            assert list(trials.columns) == ["session", "run", "beta_index", "label"]
            assert img.get_data_dtype() == np.float32 and data.ndim == 4
            assert data.shape[3] == len(trials) and list(trials["beta_index"]) == list(
                range(len(trials))
            )
            assert np.allclose(img.affine, mask_img.affine) and data.shape[:3] == mask_img.shape
            assert np.allclose(np.abs(np.diag(img.affine)[:3]), 1.8)
            assert set(trials["label"]) <= set(metadata["image_name"])
            outside = mask_img.get_fdata() == 0
            assert np.all(data[outside] == 0) and np.all(np.isfinite(data))
            for desc in ("desc-Noiseceiling_statmap", "stat-rsquare_desc-R2_statmap"):
                stat = nib.load(
                    root
                    / GLM
                    / sub
                    / ses
                    / "func"
                    / f"{sub}_{ses}_task-images_space-T1w_{desc}.nii.gz"
                )
                assert stat.shape == data.shape[:3]
                assert np.all(np.isnan(stat.get_fdata()[outside]))


def _nsd_noise_ceiling(betas_by_session, labels_by_session, n):
    """NSD's formula written out independently: z-score per session, pooled repeat variance."""
    z, labels = [], []
    for b, lab in zip(betas_by_session, labels_by_session, strict=True):
        z.append((b - b.mean(0)) / b.std(0))
        labels += list(lab)
    z = np.concatenate(z)
    labels = np.array(labels)
    variances = [
        z[labels == name].var(axis=0, ddof=1)
        for name in np.unique(labels)
        if (labels == name).sum() > 1
    ]
    noise = np.mean(variances, axis=0)
    snr2 = np.clip(1 - noise, 0, None) / noise
    return 100 * snr2 / (snr2 + 1 / n)


def test_noise_ceilings_match_nsd_formula(tiny_laion_root):
    root, sub = tiny_laion_root, "sub-01"
    mask = nib.load(root / f"derivatives/anatomical/{sub}/ses-PrismaAnat/anat/"
                    f"{sub}_ses-PrismaAnat_space-T1w_res-1pt8_desc-brain_mask.nii.gz").get_fdata() > 0  # fmt: skip
    betas, labels = [], []
    for ses in ("ses-01", "ses-02"):
        data = nib.load(betas_path(root, sub, ses)).get_fdata(dtype=np.float32)
        betas.append(data[mask].T.astype(np.float64))
        labels.append(pd.read_csv(trials_path(root, sub, ses), sep="\t")["label"].to_numpy())
    for desc, n in (("Noiseceiling4rep", 4), ("Noiseceiling12rep", 12)):
        written = nib.load(
            root / GLM / sub / f"{sub}_task-images_space-T1w_desc-{desc}_statmap.nii.gz"
        ).get_fdata()
        np.testing.assert_allclose(
            written[mask], _nsd_noise_ceiling(betas, labels, n), rtol=1e-4, atol=1e-3
        )
    session_nc = nib.load(root / GLM / sub / "ses-01" / "func" /
                          f"{sub}_ses-01_task-images_space-T1w_desc-Noiseceiling_statmap.nii.gz").get_fdata()  # fmt: skip
    np.testing.assert_allclose(
        session_nc[mask], _nsd_noise_ceiling(betas[:1], labels[:1], 1), rtol=1e-4, atol=1e-3
    )


def test_subject_maps_anatomy_and_rois(tiny_laion_root):
    root, sub = tiny_laion_root, "sub-01"
    r2mean = nib.load(
        root / GLM / sub / f"{sub}_task-images_space-T1w_stat-rsquare_desc-R2mean_statmap.nii.gz"
    )
    anat = root / f"derivatives/anatomical/{sub}/ses-PrismaAnat/anat"
    low = nib.load(anat / f"{sub}_ses-PrismaAnat_space-T1w_res-1pt8_desc-brain_mask.nii.gz")
    full = nib.load(anat / f"{sub}_ses-PrismaAnat_space-T1w_desc-brain_mask.nii.gz")
    assert full.shape == tuple(2 * s for s in low.shape)
    # the centre of full-res voxel (0,0,0) lies inside low-res voxel (0,0,0)
    assert np.allclose(nib.affines.apply_affine(full.affine, [0.5, 0.5, 0.5]), low.affine[:3, 3])
    assert (r2mean.get_fdata() > 0).sum() > 0.5 * (low.get_fdata() > 0).sum()
    for modality in ("T1w", "T2w"):
        for res in ("_res-1pt8", ""):
            assert (
                nib.load(anat / f"{sub}_ses-PrismaAnat_space-T1w{res}_{modality}.nii.gz").ndim == 3
            )
    categories = sorted(p.name for p in (root / "derivatives/rois" / sub).iterdir())
    assert categories == sorted(ROI_NAMES)
    for category in categories:
        folder = root / "derivatives/rois" / sub / category
        names = {m.group(1) for p in folder.iterdir()
                 if (m := re.match(rf"{sub}_space-T1w_res-1pt8_label-(.+)_mask\.nii\.gz$", p.name))}  # fmt: skip
        assert names and names <= ROI_NAMES[category]
        for name in names:
            volume = nib.load(folder / f"{sub}_space-T1w_res-1pt8_label-{name}_mask.nii.gz")
            assert volume.shape == low.shape and np.allclose(volume.affine, low.affine)
            for hemi in ("L", "R"):
                gii = nib.load(
                    folder / f"{sub}_hemi-{hemi}_space-fsnative_label-{name}_mask.func.gii"
                )
                label = nib.freesurfer.read_label(
                    folder / f"{sub}_hemi-{hemi}_space-fsnative_label-{name}_mask.label"
                )
                np.testing.assert_array_equal(np.flatnonzero(gii.darrays[0].data), np.sort(label))


def test_stimuli_files(tiny_laion_root, metadata):
    stim = tiny_laion_root / "stimuli"
    assert list(metadata.columns) == [
        "image_name",
        "dataset",
        "participant",
        "unique_or_shared",
        "n_reps",
    ]
    assert all(any(re.fullmatch(p, n) for p in NAME_PATTERNS) for n in metadata["image_name"])
    n = len(metadata)
    with h5py.File(stim / "task-images_stimuli.h5") as f:
        assert f["images"].shape == (n,)
        for i in (0, n - 1):
            picture = Image.open(io.BytesIO(bytes(f["images"][i])))
            assert picture.format == (
                "PNG" if metadata["image_name"][i].endswith(".png") else "JPEG"
            )
    for model, dim in {"CLIP": 1024, "DINOv2": 1024, "PEcore": 1024, "SigLIP2": 1152}.items():
        with h5py.File(stim / f"task-images_desc-{model}_embeddings.h5") as f:
            assert f["embedding"].shape == (n, dim) and f["embedding"].dtype == np.float16
            assert [x.decode() for x in f["image_ids"][:]] == list(metadata["image_name"])
            assert f["valid"].dtype == bool
    captions = pd.read_csv(stim / "task-images_desc-captions.csv")
    assert list(captions.columns) == ["image_name", "caption_idx", "source", "caption"]
    per_image = captions.groupby("image_name")["caption_idx"].max()
    shared = metadata.set_index("image_name")["unique_or_shared"]
    assert (per_image[shared[shared == "shared"].index] == 5).all()
    assert (per_image[shared[shared == "unique"].index] == 3).all()
    seg = pd.read_csv(stim / "task-images_desc-segmentations_metadata.csv")
    assert list(seg.columns) == ["mask_row", "image_name", "noun", "instance_id", "score",
                                 "box_x0", "box_y0", "box_x1", "box_y1", "localized"]  # fmt: skip
    assert set(seg["image_name"]) <= set(shared[shared == "shared"].index)
    assert set(seg["localized"]) == {0, 1}
    with h5py.File(stim / "task-images_desc-segmentations.h5") as f:
        masks = f["masks"]
        assert masks.dtype == np.uint8 and masks.shape[0] == len(seg)
        for _, row in seg.iterrows():
            m = masks[int(row["mask_row"])]
            ys, xs = np.nonzero(m)
            assert row["box_x0"] <= xs.min() and xs.max() <= row["box_x1"]
            # localized: a box and a mask covering less than 99 % of the image
            assert row["localized"] == int(m.mean() < 0.99)


def test_splits_follow_official_schema(tiny_laion_root):
    import json

    folder = tiny_laion_root / "splits"
    assert sorted(p.name for p in folder.iterdir()) == ["shared", "sub-01", "sub-02"]
    expected = (
        {f"random_{k}" for k in range(5)} | {f"cluster_k5_{k}" for k in range(5)} | {"tau", "ood"}
    )
    for pool in ("shared", "sub-01"):
        assert {p.stem for p in (folder / pool).glob("*.json")} == expected
        split = json.loads((folder / pool / "random_0.json").read_text())
        assert set(split) == {"name", "pool", "splitter", "params", "n_train", "n_test", "variants"}
        v = split["variants"][0]
        assert len(v["train_ids"]) == split["n_train"] and not set(v["train_ids"]) & set(
            v["test_ids"]
        )


def test_reuse_and_refusal(tiny_laion_root, tmp_path):
    from neurotorch.synthetic.laion_fmri import make_laion_fmri

    assert make_laion_fmri(tiny_laion_root, size="tiny", seed=0) == tiny_laion_root
    with pytest.raises(FileExistsError, match="seed=1"):
        make_laion_fmri(tiny_laion_root, size="tiny", seed=1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("a user's file")
    with pytest.raises(FileExistsError):
        make_laion_fmri(tmp_path / "other", size="tiny")
