"""Connectome torch datasets, parcellation, DataModule, registry and the ``lnm`` command."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from neurotorch.cli import main
from neurotorch.connectome import ConnectomeBatches, Parcellation, connectivity_matrix
from neurotorch.data.collate import collate_items
from neurotorch.data.connectome.subjects import ConnectomeChunks, ConnectomeSubjects
from neurotorch.data.registry import load_dataset
from neurotorch.errors import NotFittedError
from neurotorch.synthetic.connectome import BATCH_DIR, LESION_DIR, NETWORKS_FILE, make_connectome

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_connectome(
        tmp_path_factory.mktemp("data") / "c", n_subjects=7, n_timepoints=30, subjects_per_chunk=3
    )


def _h5py_subject(root, subject):
    """Read a subject with plain h5py, walking the files by hand."""
    for path in sorted((root / BATCH_DIR).glob("*.h5")):
        with h5py.File(path) as f:
            n = f["timeseries"].shape[0]
            if subject < n:
                return f["timeseries"][subject]
            subject -= n
    raise IndexError(subject)


def test_subjects_dataset_matches_h5py(root):
    dataset = ConnectomeSubjects(root / BATCH_DIR, subjects=[6, 0, 4])
    assert len(dataset) == 3
    clone = pickle.loads(pickle.dumps(dataset))
    for k, subject in enumerate([6, 0, 4]):
        item = clone[k]
        assert item["index"] == subject and item["subject"] == f"sub-{subject:04d}"
        np.testing.assert_array_equal(item["timeseries"].numpy(), _h5py_subject(root, subject))


def test_parcellation_and_connectivity(root):
    batches = ConnectomeBatches(root / BATCH_DIR)
    labels_img = nib.load(root / NETWORKS_FILE)
    parcellation = Parcellation.from_image(labels_img, batches)
    labels = np.asarray(labels_img.dataobj)[tuple(batches.mask_indices.T)]
    assert list(parcellation.labels) == [1, 2, 3]
    x = _h5py_subject(root, 2)
    expected = np.stack([x[:, labels == k].astype(np.float64).mean(axis=1) for k in (1, 2, 3)], 1)
    np.testing.assert_allclose(parcellation.reduce(x), expected, rtol=1e-5, atol=1e-6)
    dataset = ConnectomeSubjects(batches, parcellation=parcellation, connectivity=True)
    item = dataset[2]
    np.testing.assert_allclose(item["timeseries"].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(item["connectivity"].numpy(), np.corrcoef(expected.T), atol=1e-5)
    np.testing.assert_allclose(connectivity_matrix(expected), np.corrcoef(expected.T), atol=1e-12)


def test_chunks_shard_by_rank_and_worker(root):
    stream = ConnectomeChunks(root / BATCH_DIR, shuffle=True, seed=1)
    shards = {
        (rank, worker): stream.shard(rank, 2, worker, 2) for rank in (0, 1) for worker in (0, 1)
    }
    per_rank = [len(shards[(r, 0)]) + len(shards[(r, 1)]) for r in (0, 1)]
    assert per_rank == [4, 4]  # equal length per rank: DDP never waits
    seen = [s for subjects in shards.values() for s in subjects]
    assert set(seen) == set(range(7)) and len(seen) == 8  # one subject repeated as padding
    stream.set_epoch(1)
    assert stream.chunks() != ConnectomeChunks(root / BATCH_DIR, shuffle=True, seed=1).chunks()


@pytest.mark.slow
def test_chunks_two_workers_yield_every_subject_once(root):
    stream = ConnectomeChunks(root / BATCH_DIR, subjects=[0, 2, 3, 5, 6])
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    items = list(loader)
    assert sorted(item["index"] for item in items) == [0, 2, 3, 5, 6]
    for item in items:
        np.testing.assert_array_equal(
            item["timeseries"].numpy(), _h5py_subject(root, item["index"])
        )


def test_registry_split(root):
    train = load_dataset("connectome", split="train", data_dir=root / BATCH_DIR, test_fraction=0.3)
    test = load_dataset("connectome", split="test", data_dir=root / BATCH_DIR, test_fraction=0.3)
    assert sorted(train.subjects + test.subjects) == list(range(7)) and len(test.subjects) == 2
    assert isinstance(
        load_dataset("connectome", data_dir=root / BATCH_DIR, streaming=True), ConnectomeChunks
    )


def test_datamodule_trains_with_plain_trainer(root):
    import lightning as L

    from neurotorch.lightning.connectome import ConnectomeDataModule
    from neurotorch.models.lesion_network import LesionNetworkModel

    data = ConnectomeDataModule(data_dir=str(root / BATCH_DIR), batch_size=2, seed=0)
    data.setup("fit")
    splits = data.subject_splits()
    assert sorted(sum(splits.values(), [])) == list(range(7))
    batch = collate_items([data.datasets["train"][0], data.datasets["train"][1]])
    assert batch["timeseries"].shape == (2, 30, data.n_features)
    model = LesionNetworkModel(rank=4, n_seeds=8)
    with pytest.raises(NotFittedError, match="LesionNetworkModel cannot predict"):
        model(torch.ones(1, data.n_features))  # no voxel count before setup: no weights yet
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    assert model.encoder.shape == (data.n_features, 4)


@pytest.mark.slow
def test_lnm_yaml_runs_through_the_cli(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = ["--config", str(REPO / "configs" / "lnm.yaml")]
    options = ["--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]
    main(["fit", *config, *options, f"--data.init_args.data_dir={root / BATCH_DIR}"])
    assert list((tmp_path / "runs" / "lnm").rglob("metrics.csv"))


def test_lnm_command_writes_maps_table_and_png(root, tmp_path, capsys):
    out = tmp_path / "maps"
    main(["lnm", str(root / LESION_DIR), "--connectome", str(root / BATCH_DIR), "--out", str(out)])
    summary = pd.read_csv(out / "summary.csv")
    names = sorted(p.name.removesuffix(".nii.gz") for p in (root / LESION_DIR).iterdir())
    assert sorted(summary["lesion"]) == names
    for name in names:
        assert (out / f"{name}_figure.png").stat().st_size > 0
        t_img = nib.load(out / f"{name}_desc-t_map.nii.gz")
        np.testing.assert_array_equal(t_img.affine, nib.load(root / "mask.nii.gz").affine)
    assert names[0] in capsys.readouterr().out


def test_datamodule_streaming_serves_the_train_subjects(root):
    from neurotorch.lightning.connectome import ConnectomeDataModule

    data = ConnectomeDataModule(
        data_dir=str(root / BATCH_DIR), batch_size=2, streaming=True, seed=3
    )
    data.setup("fit")
    assert isinstance(data.datasets["train"], ConnectomeChunks)
    served = [s for batch in data.train_dataloader() for s in batch["index"].tolist()]
    assert sorted(served) == data.subject_splits()["train"]


def test_datamodule_refuses_a_parcellation_that_is_not_a_path():
    from neurotorch.errors import ParameterError
    from neurotorch.lightning import ConnectomeDataModule

    with pytest.raises(ParameterError, match="parcellation must be the path"):
        ConnectomeDataModule(parcellation=5)
