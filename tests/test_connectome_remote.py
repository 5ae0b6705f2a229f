"""A connectome read through ``s3://`` (moto server on loopback) equals the local read."""

from __future__ import annotations

import pickle

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from neurotorch.connectome import ConnectomeBatches, network_map
from neurotorch.data.connectome.subjects import ConnectomeSubjects
from neurotorch.synthetic.connectome import BATCH_DIR, LESION_DIR, make_connectome

pytest_plugins = ["s3_server"]


@pytest.fixture(scope="module")
def local_root(tmp_path_factory):
    return make_connectome(
        tmp_path_factory.mktemp("remote") / "c",
        n_subjects=5,
        n_timepoints=20,
        voxel_mm=8,
        subjects_per_chunk=2,
        seed=4,
    )


@pytest.fixture(scope="module")
def bucket_url(moto_server, local_root):
    return moto_server.upload_tree(local_root / BATCH_DIR, "connectome", prefix="gsp/batches")


def _h5py_subjects(folder):
    """Every subject's time series, read with plain h5py file by file."""
    series = []
    for path in sorted(folder.glob("*_chunk_*.h5")):
        with h5py.File(path) as f:
            series += list(f["timeseries"][()])
    return series


def _cached_files(cache):
    return [path for path in cache.rglob("*.h5") if path.is_file()]


def test_batches_through_s3_equal_the_local_files(
    moto_server, bucket_url, local_root, isolated_cache
):
    remote = ConnectomeBatches(bucket_url, storage_options=moto_server.options())
    assert remote.files[0] == f"{bucket_url}/gsp1000_chunk_000.h5"
    assert not _cached_files(isolated_cache), "reading headers downloads no batch file"
    expected = _h5py_subjects(local_root / BATCH_DIR)
    assert remote.n_subjects == len(expected) == 5
    with h5py.File(local_root / BATCH_DIR / "gsp1000_chunk_000.h5") as f:
        np.testing.assert_array_equal(remote.mask_indices, f["mask_indices"][()])
        np.testing.assert_array_equal(remote.affine, f["mask_affine"][()])
    clone = pickle.loads(pickle.dumps(remote))  # as a spawned DataLoader worker gets it
    for subject, series in enumerate(expected):
        np.testing.assert_array_equal(clone.read_subject(subject), series)
    assert len(_cached_files(isolated_cache)) == 3, "one cached copy per batch file"
    single = ConnectomeBatches(
        f"{bucket_url}/gsp1000_chunk_001.h5", storage_options=moto_server.options()
    )
    np.testing.assert_array_equal(single.read_subject(1), expected[3])
    dataset = ConnectomeSubjects(bucket_url, subjects=[4, 1], storage_options=moto_server.options())
    np.testing.assert_array_equal(dataset[0]["timeseries"].numpy(), expected[4])


def test_network_map_over_s3_equals_the_local_result(
    moto_server, bucket_url, local_root, isolated_cache
):
    lesions = local_root / LESION_DIR
    local = network_map(lesions, local_root / BATCH_DIR)
    remote = network_map(lesions, bucket_url, storage_options=moto_server.options())
    assert remote.names == local.names
    for kind in ("mean_z", "t", "p", "q"):
        np.testing.assert_array_equal(getattr(remote, kind), getattr(local, kind))


def test_datamodule_serves_subjects_from_s3(moto_server, bucket_url, local_root, isolated_cache):
    from neurotorch.lightning.connectome import ConnectomeDataModule

    data = ConnectomeDataModule(
        data_dir=bucket_url, batch_size=2, seed=0, storage_options=moto_server.options()
    )
    data.setup("fit")
    expected = _h5py_subjects(local_root / BATCH_DIR)
    batch = next(iter(data.val_dataloader()))
    for row, subject in enumerate(batch["index"].tolist()):
        assert torch.equal(batch["timeseries"][row], torch.from_numpy(expected[subject]))


def test_lnm_command_reads_a_public_bucket(
    moto_server, local_root, tmp_path, no_aws_credentials, isolated_cache, capsys
):
    from neurotorch.cli import main

    url = moto_server.upload_tree(local_root / BATCH_DIR, "connectome-public", public=True)
    out = tmp_path / "maps"
    lesions = local_root / LESION_DIR
    remote = ["--connectome", url, "--endpoint-url", moto_server.endpoint]
    assert main(["lnm", str(lesions), *remote, "--out", str(out), "--no-figures"]) == 0
    expected = network_map(lesions, local_root / BATCH_DIR)
    name = expected.names[0]
    t_map = nib.load(out / f"{name}_desc-t_map.nii.gz").get_fdata()
    np.testing.assert_allclose(t_map[tuple(expected.mask_indices.T)], expected.t[0], rtol=1e-6)
    assert name in capsys.readouterr().out
