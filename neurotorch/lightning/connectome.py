"""`ConnectomeDataModule`: subjects of a Lacuna connectome, split into train/val/test."""

from __future__ import annotations

from torch.utils.data import Dataset

from neurotorch.connectome.batches import ConnectomeBatches
from neurotorch.data.connectome.subjects import ConnectomeChunks, ConnectomeSubjects
from neurotorch.data.partition import check_fractions, partition
from neurotorch.lightning.base import NeurotorchDataModule


class ConnectomeDataModule(NeurotorchDataModule):
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
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, seed=seed, streaming=streaming
        )
        check_fractions(val_fraction, test_fraction)
        self.save_hyperparameters()
        self._splits: dict[str, list[int]] | None = None
        self._parcellation = None
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
        """Subject indices of train, val and test (`neurotorch.data.partition.partition`)."""
        if self._splits is None:
            hp = self.hparams
            subjects = range(self.batches.n_subjects)
            self._splits = partition(subjects, hp.val_fraction, hp.test_fraction, hp.seed)
        return self._splits

    def build_dataset(self, part: str) -> Dataset | None:
        hp = self.hparams
        subjects = self.subject_splits()[part]
        if not subjects:
            return None
        options = dict(
            parcellation=self._parcellation or hp.parcellation, connectivity=hp.connectivity
        )
        if part == "train" and hp.streaming:
            dataset = ConnectomeChunks(
                self.batches, subjects, shuffle=True, seed=hp.seed, batch_size=hp.batch_size,
                **options,
            )  # fmt: skip
        else:
            dataset = ConnectomeSubjects(self.batches, subjects, **options)
        self._parcellation = dataset.parcellation  # sample the label image once
        return dataset

    @property
    def n_features(self) -> int:
        """Columns of an item's time series: voxels, or parcels with a parcellation."""
        parcellation = self.dataset("train").parcellation
        return parcellation.n_parcels if parcellation is not None else self.batches.n_voxels

    @property
    def n_timepoints(self) -> int:
        return self.batches.n_timepoints

    def describe_source(self) -> str:
        return f"{self._batch_dir()} ({self.batches.n_subjects} subjects)"
