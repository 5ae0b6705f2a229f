"""LAION-fMRI read and trained straight from ``s3://`` on a loopback server."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from encoder_helpers import fit_and_test_encoder, ground_truth_rows

from neurotorch.fmri import layout, load_subject
from neurotorch.io.nifti import read_masked_betas
from neurotorch.io.storage import DataRoot
from neurotorch.lightning import LaionFMRIDataModule

pytest_plugins = ["s3_server"]

SUB, SES, ROI = "sub-01", "ses-01", "FFA1"


def nibabel_betas(root: Path, roi: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(n_trials, n_voxels) betas and the 3-D voxel mask, from nibabel full loads of local files."""
    mask = nib.load(root / layout.anatomical_brain_mask(SUB)).get_fdata() > 0
    if roi is not None:
        mask &= nib.load(root / layout.roi_volume(SUB, "face", roi)).get_fdata() > 0
    data = np.asarray(nib.load(root / layout.session_betas(SUB, SES)).get_fdata(), dtype=np.float32)
    return data[mask].T, mask


def test_betas_through_s3_equal_nibabel_on_the_local_file(
    moto_server, public_laion_bucket, tiny_laion_root, isolated_cache
):
    expected, mask = nibabel_betas(tiny_laion_root, ROI)
    assert expected.shape[1] > 0

    root = DataRoot(public_laion_bucket, moto_server.options())
    with root.open(layout.session_betas(SUB, SES)) as handle:
        np.testing.assert_allclose(read_masked_betas(handle, mask), expected, rtol=1e-6)

    subject = load_subject(SUB, public_laion_bucket, storage_options=moto_server.options())
    streamed = subject.get_betas(SES, roi=ROI, streaming=True)
    np.testing.assert_allclose(streamed, expected, rtol=1e-6)
    # the streaming pass never put the betas file on disk (only the small masks are cached)
    betas_name = Path(layout.session_betas(SUB, SES)).name
    assert not [p for p in isolated_cache.rglob("*") if p.name.startswith(betas_name)]
    np.testing.assert_allclose(subject.get_betas(SES, roi=ROI), expected, rtol=1e-6)


@pytest.mark.slow
def test_datamodule_trains_from_s3(moto_server, public_laion_bucket, tiny_laion_root, tmp_path):
    dm = LaionFMRIDataModule(
        data_dir=public_laion_bucket,
        subject=SUB,
        features="CLIP",
        trials={"split": "random_0", "val_fraction": 0.1},
        batch_size=64,
        storage_options=moto_server.options(),
        read={"cache_dir": str(tmp_path / "store")},
    )
    model = fit_and_test_encoder(dm, tmp_path / "encoder")

    # the voxels are the brain mask's, in C order, as nibabel reads the local mask
    brain = nib.load(tiny_laion_root / layout.anatomical_brain_mask(SUB)).get_fdata() > 0
    voxels = dm.voxel_table["voxel"].to_numpy()
    np.testing.assert_array_equal(voxels, np.flatnonzero(brain.ravel()))
    # what training recovered, against the generator's ground truth
    truth = ground_truth_rows(tiny_laion_root, SUB, voxels)
    signal = truth["signal"]
    r = model.per_voxel_r()
    assert np.median(r[signal]) >= 0.8 * np.median(truth["attainable_r"][signal])
    assert abs(np.median(r[~signal])) < 0.1
