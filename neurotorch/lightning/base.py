"""`NeurotorchDataModule`: what every neurotorch DataModule shares.

A family (LAION-fMRI, M/EEG, connectome) only says which dataset serves a part (`build_dataset`);
this base class owns the rest, once:

* **parts**: ``train``, ``val``, ``test``, and ``predict`` (the test part unless told otherwise);
  a family returns ``None`` for a part it does not have (no validation set), and its loader then
  yields no batch;
* **loaders**: a sharded iterable dataset (the streaming variant of every family) goes to
  `neurotorch.data.loader.StreamLoader`; a map-style dataset to a
  `neurotorch.data.loader.StatefulLoader` driven by a
  `neurotorch.data.sampling.GroupedBatchSampler` (batches of one group each: one subject's trials,
  or the whole set as one group), sharded over DDP ranks by `neurotorch.data.sharding`;
* **epochs**: the training order changes every epoch, with or without ``persistent_workers``, by
  hand or under Lightning, and a checkpoint taken mid-epoch resumes that epoch's order (the
  loaders' ``state_dict`` is saved by Lightning in the checkpoint);
* **what a model needs before fit**: `sizes` (items per part) and the family's own
  properties (voxel counts per subject and feature dimensions for fMRI, ``n_features`` for the
  connectome, the leadfield for M/EEG);
* a `__repr__` that says what the module serves.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sized
from typing import Any, cast

import lightning as L
from lightning.pytorch.utilities.parsing import AttributeDict
from torch.utils.data import DataLoader, Dataset

from neurotorch._options import check_bool, check_int, check_option
from neurotorch.data.collate import collate_items
from neurotorch.data.loader import StatefulLoader, StreamLoader
from neurotorch.data.sampling import GroupedBatchSampler
from neurotorch.data.sharding import ShardedIterable

PARTS = ("train", "val", "test")
PREDICT_PARTS = ("train", "val", "test")


def _batches_per_epoch(trainer: Any, loader: DataLoader) -> int:
    """The training batches Lightning draws per epoch from ``loader`` (``limit_train_batches``:
    a count, or a fraction of the loader)."""
    limit = trainer.limit_train_batches
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(limit, len(loader))
    return int(len(loader) * float(limit))


class NeurotorchDataModule(L.LightningDataModule):
    """Base of neurotorch's DataModules (see the module docstring).

    Parameters
    ----------
    batch_size
        Items per batch (a positive integer).
    num_workers
        ``DataLoader`` worker processes (0: load in the main process); workers persist across
        epochs.
    seed
        Seed of the splits and of the shuffling.
    streaming
        Serve the streaming (sharded iterable) variant of the family's datasets.
    predict_part
        The part ``predict`` runs on: ``"test"`` (default), ``"val"`` or ``"train"``.
    """

    def __init__(
        self,
        *,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        streaming: bool = False,
        predict_part: str = "test",
    ):
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.num_workers = check_int("num_workers", num_workers, minimum=0)
        self.seed = check_int("seed", seed)
        self.streaming = check_bool("streaming", streaming)
        self.predict_part = check_option("predict_part", predict_part, PREDICT_PARTS)
        self.datasets: dict[str, Dataset | None] = {}

    @property
    def hparams(self) -> AttributeDict:
        """The hyperparameters saved by ``save_hyperparameters``, with attribute access."""
        return cast(AttributeDict, super().hparams)

    # -- what a family provides -------------------------------------------------------------
    def build_dataset(self, part: str) -> Dataset | None:
        """The dataset of ``part`` (``"train"``, ``"val"``, ``"test"``), or ``None`` if absent."""
        raise NotImplementedError

    # -- datasets ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        for part in PARTS:
            if part not in self.datasets:
                self.datasets[part] = self.build_dataset(part)

    def dataset(self, part: str) -> Dataset | None:
        """The dataset of ``part`` (set up on first use)."""
        check_option("part", part, PARTS)
        if part not in self.datasets:
            self.setup()
        return self.datasets[part]

    # -- loaders -----------------------------------------------------------------------------
    def dataloader(self, part: str, *, shuffle: bool | None = None) -> DataLoader | list:
        """The loader of ``part`` (shuffled for ``train`` unless ``shuffle`` says otherwise);
        ``[]`` for a part the family does not have."""
        dataset = self.dataset(part)
        if dataset is None:
            return []
        shuffle = part == "train" if shuffle is None else shuffle
        settings: dict[str, Any] = dict(
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0
        )
        if isinstance(dataset, ShardedIterable):
            whole = getattr(dataset, "yields_batches", False)  # whole batches pass through
            batch_size = None if whole else self.batch_size
            loader = StreamLoader(dataset, batch_size, advance_epoch=shuffle, **settings)
            if shuffle:
                self._follow_fit(loader)
            return loader
        sampler = GroupedBatchSampler.for_dataset(
            dataset, self.batch_size, shuffle=shuffle, seed=self.seed
        )
        loader = StatefulLoader(
            dataset, batch_sampler=sampler, collate_fn=collate_items, **settings
        )
        if shuffle:
            self._follow_fit(loader)
        return loader

    def _follow_fit(self, loader: StatefulLoader) -> None:
        """Under a trainer, the training loader takes each pass's epoch from the fit (Lightning
        hands its epoch to a loader's ``sampler`` only, and restores positions the fit has left);
        used by hand, it moves on one epoch per pass by itself."""
        if self.trainer is not None:
            loader.fit_epoch = functools.partial(self._pass_epoch, loader)

    def _pass_epoch(self, loader: DataLoader) -> int | None:
        """The epoch the training loader's pass now starting serves, or ``None`` for an empty
        pass (`neurotorch.data.loader.StatefulLoader.fit_epoch`).

        Lightning's count of completed epochs, except where it resumes from a checkpoint taken
        when an epoch's batches were all drawn (at its last batch, or at its end, also one cut
        short by ``limit_train_batches``): the pass then serves the next epoch, as Lightning moves
        on with it, unless Lightning restored the loader's position from a checkpoint taken in
        the epoch's end hooks (training by steps): it then first finishes the restored epoch,
        which has nothing left to serve. (Measured on Lightning 2.6; the resume tests of
        tests/test_data_epochs.py walk each case.)"""
        trainer = cast(L.Trainer, self.trainer)
        loop = trainer.fit_loop
        epochs = loop.epoch_progress.current  # Lightning's _ProcessedTracker
        completed, processed = int(epochs.completed), int(getattr(epochs, "processed", 0))
        drawn = loop.epoch_loop.batch_progress.current.ready  # as restored, before any batch
        if drawn and drawn >= _batches_per_epoch(trainer, loader):
            return None if loop.restarting and processed > completed else completed + 1
        return completed

    def train_dataloader(self) -> DataLoader | list:
        return self.dataloader("train")

    def val_dataloader(self) -> DataLoader | list:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self.dataloader("test")

    def predict_dataloader(self) -> DataLoader | list:
        """The ``predict_part`` part in order, unshuffled (each item keeps its ids)."""
        return self.dataloader(self.predict_part, shuffle=False)

    # -- description -------------------------------------------------------------------------
    def sizes(self) -> dict[str, int]:
        """Items per part (0 for a part the family does not have); a dataset that yields whole
        batches counts their items."""

        def items(dataset: Dataset) -> int:
            n = len(cast(Sized, dataset))  # every dataset of neurotorch has a length
            batched = getattr(dataset, "yields_batches", False)
            return n * int(getattr(dataset, "batch_size", 1)) if batched else n

        return {part: items(d) if d is not None else 0 for part, d in self._datasets()}

    def _datasets(self) -> Iterator[tuple[str, Dataset | None]]:
        for part in PARTS:
            yield part, self.dataset(part)

    def describe_source(self) -> str:
        """One line: where the data come from (the family says)."""
        return ""

    def __repr__(self) -> str:
        parts = (
            ", ".join(f"{part}={n}" for part, n in self.sizes().items())
            if self.datasets
            else "not set up"
        )
        source = self.describe_source()
        return (
            f"{type(self).__name__}({source + '; ' if source else ''}{parts}; "
            f"batch_size={self.batch_size}, num_workers={self.num_workers}, "
            f"streaming={self.streaming}, seed={self.seed})"
        )

    __str__ = __repr__  # print(dm): LightningDataModule has a __str__ of its own
