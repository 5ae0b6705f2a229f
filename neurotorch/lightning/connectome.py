"""`ConnectomeDataModule`: subjects of a Lacuna connectome, split into train/val/test."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from neurotorch.connectome.batches import ConnectomeBatches
from neurotorch.data.collate import collate_items
from neurotorch.data.connectome import ConnectomeChunks, ConnectomeSubjects, split_subjects
from neurotorch.data.loader import StreamLoader

_SPLITS = ("train", "val", "test")


class ConnectomeDataModule(L.LightningDataModule):
    """Batches of whole subjects (time series, optionally parcel means and connectivity).

    Parameters
    ----------
    data_dir
        Folder of batch files, a local path or an fsspec URL (``s3://bucket/prefix``); ``None``
        uses the synthetic connectome of ``synthetic_size`` (written on first use under
        ``NEUROTORCH_DATA``).
    batch_size, num_workers
        DataLoader settings.
    val_fraction, test_fraction
        Fractions of subjects held out, split with ``seed``.
    parcellation
        Optional label image: voxels are averaged per parcel.
    connectivity
        Add each subject's parcel connectivity matrix (needs ``parcellation``).
    streaming
        Serve the training subjects with `ConnectomeChunks` (sharded across ranks and workers)
        instead of a shuffled map-style `ConnectomeSubjects`.
    seed
        Seed of the subject split and of the shuffling.
    synthetic_size
        ``tiny``, ``small`` or ``bench`` when ``data_dir`` is ``None``.
    storage_options
        fsspec options when ``data_dir`` is a URL (credentials, ``endpoint_url``, ``anon``).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        parcellation: str | None = None,
        connectivity: bool = False,
        streaming: bool = False,
        seed: int = 0,
        synthetic_size: str = "tiny",
        storage_options: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.datasets: dict[str, Dataset] = {}
        self._batches: ConnectomeBatches | None = None

    def _batch_dir(self) -> str:
        if self.hparams.data_dir is not None:
            return self.hparams.data_dir
        from neurotorch.synthetic.connectome import BATCH_DIR, default_synthetic_connectome

        root = default_synthetic_connectome(self.hparams.synthetic_size, self.hparams.seed)
        return str(root / BATCH_DIR)

    def prepare_data(self) -> None:
        self._batch_dir()

    @property
    def batches(self) -> ConnectomeBatches:
        if self._batches is None:
            self._batches = ConnectomeBatches(self._batch_dir(), self.hparams.storage_options)
        return self._batches

    def subject_splits(self) -> dict[str, list[int]]:
        """Subject indices of train, val and test."""
        hp = self.hparams
        n = self.batches.n_subjects
        rest, test = split_subjects(n, hp.test_fraction, hp.seed)
        val_share = hp.val_fraction / (1.0 - hp.test_fraction) if hp.val_fraction else 0.0
        train_pos, val_pos = split_subjects(len(rest), val_share, hp.seed + 1)
        return {
            "train": [rest[i] for i in train_pos],
            "val": [rest[i] for i in val_pos],
            "test": test,
        }

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        options = dict(parcellation=hp.parcellation, connectivity=hp.connectivity)
        splits = self.subject_splits()
        for name in _SPLITS:
            if name == "train" and hp.streaming:
                dataset = ConnectomeChunks(
                    self.batches, splits[name], shuffle=True, seed=hp.seed,
                    batch_size=hp.batch_size, **options,
                )  # fmt: skip
            else:
                dataset = ConnectomeSubjects(self.batches, splits[name], **options)
            options["parcellation"] = dataset.parcellation  # sample the label image once
            self.datasets[name] = dataset

    @property
    def n_features(self) -> int:
        """Columns of an item's time series: voxels, or parcels with a parcellation."""
        self.setup()
        parcellation = self.datasets["train"].parcellation
        return parcellation.n_parcels if parcellation is not None else self.batches.n_voxels

    @property
    def n_timepoints(self) -> int:
        return self.batches.n_timepoints

    def _loader(self, name: str) -> DataLoader:
        dataset, hp = self.datasets[name], self.hparams
        settings = dict(num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0)
        if isinstance(dataset, ConnectomeChunks):  # reshuffled every pass
            return StreamLoader(dataset, hp.batch_size, **settings)
        return DataLoader(
            dataset, hp.batch_size, shuffle=name == "train", collate_fn=collate_items, **settings
        )

    def train_dataloader(self) -> DataLoader:
        """Training subjects (a streamed set is reshuffled every epoch)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
