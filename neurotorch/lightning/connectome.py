"""`ConnectomeDataModule`: subjects of a Lacuna connectome, split into train/val/test."""

from __future__ import annotations

import os
from typing import cast

from torch.utils.data import Dataset

from neurotorch._docs import fill_doc
from neurotorch._options import check_bool, check_option
from neurotorch.connectome.batches import ConnectomeBatches
from neurotorch.connectome.parcellation import Parcellation
from neurotorch.data.connectome.subjects import (
    SYNTHETIC_SIZES,
    ConnectomeChunks,
    ConnectomeSubjects,
    SyntheticSize,
    open_connectome,
)
from neurotorch.data.partition import check_fractions, partition
from neurotorch.errors import ParameterError
from neurotorch.lightning.base import NeurotorchDataModule
from neurotorch.synthetic.resolve import SYNTHETIC


@fill_doc
class ConnectomeDataModule(NeurotorchDataModule):
    """Batches of whole subjects (time series, optionally parcel means and connectivity).

    The subjects are split into train, val and test parts by `neurotorch.data.partition`
    (seeded by ``seed``). The training order changes every epoch, with or without persistent
    workers, and a checkpoint taken mid-epoch resumes that epoch's order (see
    `neurotorch.lightning.base`).

    Parameters
    ----------
    %(connectome_data_dir)s
    %(batch_size)s
    %(num_workers)s
    val_fraction, test_fraction
        Shares of the subjects held out for validation and test, each in [0, 1), their sum
        below 1.
    %(connectome_parcellation)s
    %(connectome_connectivity)s
    %(streaming)s
        Here: the training subjects come from `neurotorch.data.connectome.ConnectomeChunks`,
        read chunk by chunk and reshuffled every epoch, instead of a shuffled map-style
        `neurotorch.data.connectome.ConnectomeSubjects`.
    %(seed)s
        Here: of the subject split and of the shuffling.
    %(connectome_synthetic_size)s
    %(storage_options)s
    %(predict_part)s
    """

    def __init__(
        self,
        data_dir: str | None = SYNTHETIC,
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        parcellation: str | None = None,
        connectivity: bool = False,
        streaming: bool = False,
        seed: int = 0,
        synthetic_size: SyntheticSize = "tiny",
        storage_options: dict | None = None,
        predict_part: str = "test",
    ):
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            streaming=streaming,
            predict_part=predict_part,
        )
        check_fractions(val_fraction, test_fraction)
        check_option("synthetic_size", synthetic_size, SYNTHETIC_SIZES)
        check_bool("connectivity", connectivity)
        if parcellation is not None and not isinstance(parcellation, str | os.PathLike):
            raise ParameterError(
                f"parcellation must be the path of a label image (or None), got {parcellation!r}."
            )
        self.save_hyperparameters()
        self._splits: dict[str, list[int]] | None = None
        self._parcellation: Parcellation | None = None
        self._batches: ConnectomeBatches | None = None

    def prepare_data(self) -> None:
        """Write the synthetic connectome on first use (once per node)."""
        self._open()

    def _open(self) -> ConnectomeBatches:
        hp = self.hparams
        return open_connectome(
            hp.data_dir,
            storage_options=hp.storage_options,
            synthetic_size=hp.synthetic_size,
            seed=hp.seed,
        )

    @property
    def batches(self) -> ConnectomeBatches:
        """The connectome's batch files."""
        if self._batches is None:
            self._batches = self._open()
        return self._batches

    def subject_splits(self) -> dict[str, list[int]]:
        """Subject indices of train, val and test (`neurotorch.data.partition.partition`)."""
        if self._splits is None:
            hp = self.hparams
            self._splits = partition(
                range(self.batches.n_subjects),
                val_fraction=hp.val_fraction,
                test_fraction=hp.test_fraction,
                seed=hp.seed,
            )
        return self._splits

    def build_dataset(self, part: str) -> Dataset | None:
        hp = self.hparams
        subjects = self.subject_splits()[part]
        if not subjects:
            return None
        options = dict(
            subjects=subjects,
            parcellation=self._parcellation or hp.parcellation,
            connectivity=hp.connectivity,
        )
        dataset: ConnectomeChunks | ConnectomeSubjects
        if part == "train" and hp.streaming:
            dataset = ConnectomeChunks(
                self.batches, shuffle=True, seed=hp.seed, batch_size=hp.batch_size, **options
            )
        else:
            dataset = ConnectomeSubjects(self.batches, **options)
        self._parcellation = dataset.parcellation  # sample the label image once
        return dataset

    @property
    def n_features(self) -> int:
        """Columns of an item's time series: voxels, or parcels with a parcellation."""
        # `partition` always leaves training subjects
        train = cast("ConnectomeChunks | ConnectomeSubjects", self.dataset("train"))
        return train.n_features

    @property
    def n_timepoints(self) -> int:
        """Timepoints of every subject."""
        return self.batches.n_timepoints

    def describe_source(self) -> str:
        if self._batches is None:  # describing does not write or open the data
            return f"data_dir={self.hparams.data_dir!r}, not opened yet"
        batches = self._batches
        columns = f"{self.n_features} features" if self.datasets else f"{batches.n_voxels} voxels"
        return (
            f"{batches.location!r}: {batches.n_subjects} subjects, {batches.n_timepoints} "
            f"timepoints x {columns}, space={batches.space!r}"
        )
