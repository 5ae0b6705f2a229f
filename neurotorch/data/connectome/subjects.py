"""Torch datasets over a Lacuna connectome: subjects map-style, or streamed chunk by chunk.

Items are dicts: ``timeseries`` (n_timepoints, n_voxels) float32 (or (n_timepoints, n_parcels)
with a parcellation), ``subject`` (the subject's id, as in fMRI items) and ``index`` (its
position in the connectome), plus ``connectivity``
(n_parcels, n_parcels) when asked for. HDF5 handles open lazily in each worker process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset

from neurotorch.connectome.batches import ConnectomeBatches
from neurotorch.connectome.parcellation import Parcellation, connectivity_matrix
from neurotorch.data.partition import partition
from neurotorch.data.sharding import (
    ShardedIterable,
    check_batch_size,
    epoch_order,
    shard_positions,
    units_per_rank,
)
from neurotorch.errors import ParameterError

ParcellationInput = str | os.PathLike | nib.spatialimages.SpatialImage | Parcellation | None


class _ConnectomeItems:
    """What both datasets share: the batches, the subject selection and item building."""

    def __init__(
        self,
        data_dir: str | os.PathLike | ConnectomeBatches,
        subjects: Sequence[int] | None,
        parcellation: ParcellationInput,
        connectivity: bool,
        storage_options: dict | None,
    ):
        self.batches = (
            data_dir
            if isinstance(data_dir, ConnectomeBatches)
            else ConnectomeBatches(data_dir, storage_options)
        )
        n = self.batches.n_subjects
        self.subjects = list(range(n)) if subjects is None else [int(s) for s in subjects]
        outside = [s for s in self.subjects if not 0 <= s < n]
        if outside or len(set(self.subjects)) != len(self.subjects):
            raise ParameterError(
                f"subjects must be distinct indices in 0..{n - 1} (the connectome has {n}); got "
                f"{outside[:5] or 'repeated indices'}."
            )
        if parcellation is None or isinstance(parcellation, Parcellation):
            self.parcellation = parcellation
        else:
            self.parcellation = Parcellation.from_image(parcellation, self.batches)
        if connectivity and self.parcellation is None:
            raise ParameterError("connectivity=True needs a parcellation (a label image).")
        self.connectivity = connectivity
        self._ids = self.batches.subject_ids

    def item(self, subject: int, series: np.ndarray) -> dict:
        if self.parcellation is not None:
            series = self.parcellation.reduce(series)
        item = {
            "timeseries": torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32)),
            "subject": self._ids[subject],  # the id, as fMRI items carry theirs
            "index": subject,  # the subject's position in the connectome
        }
        if self.connectivity:
            item["connectivity"] = torch.from_numpy(connectivity_matrix(series).astype(np.float32))
        return item


class ConnectomeSubjects(Dataset, _ConnectomeItems):
    """Map-style dataset: item i is the i-th selected subject's whole time series.

    Parameters
    ----------
    data_dir
        Folder of batch files, local or an fsspec URL (``s3://bucket/prefix``), or a
        `ConnectomeBatches`.
    subjects
        Subject indices to serve (default: all).
    parcellation
        Optional label image (or `Parcellation`): voxels are averaged per parcel.
    connectivity
        Add the (n_parcels, n_parcels) Pearson connectivity matrix to each item.
    storage_options
        fsspec options when ``data_dir`` is a URL.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | ConnectomeBatches,
        subjects: Sequence[int] | None = None,
        parcellation: ParcellationInput = None,
        connectivity: bool = False,
        storage_options: dict | None = None,
    ):
        _ConnectomeItems.__init__(
            self, data_dir, subjects, parcellation, connectivity, storage_options
        )

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> dict:
        subject = self.subjects[index]
        return self.item(subject, self.batches.read_subject(subject))


class ConnectomeChunks(ShardedIterable, _ConnectomeItems):
    """Iterable dataset of subjects read chunk by chunk, sharded across rank x worker.

    The selected subjects are put in the order of the HDF5 chunks that hold them (one subject
    each in the Lacuna layout; the chunk order is shuffled per epoch when ``shuffle``) and sharded
    by `neurotorch.data.sharding`: equal contiguous blocks per rank, the last wrapping around,
    cut into whole batches of ``batch_size`` per ``DataLoader`` worker. So every rank yields the
    same number of subjects and batches, and a ``DataLoader`` with this ``batch_size`` yields
    exactly ``ceil(len / batch_size)`` batches for any number of workers.

    Parameters
    ----------
    data_dir, subjects, parcellation, connectivity, storage_options
        As in `ConnectomeSubjects`; chunks without a selected subject are skipped.
    shuffle
        Shuffle the chunk order every epoch (call `set_epoch`).
    seed
        Seed of the shuffle.
    batch_size, drop_last
        The ``DataLoader``'s batch size and ``drop_last`` (whole batches per worker; ``drop_last``
        leaves out the tail that does not fill a rank's share instead of padding it).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | ConnectomeBatches,
        subjects: Sequence[int] | None = None,
        parcellation: ParcellationInput = None,
        connectivity: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        storage_options: dict | None = None,
        batch_size: int = 1,
        drop_last: bool = False,
    ):
        _ConnectomeItems.__init__(
            self, data_dir, subjects, parcellation, connectivity, storage_options
        )
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.batch_size, self.drop_last = check_batch_size(batch_size), bool(drop_last)

    def chunks(self) -> list[list[int]]:
        """The selected subjects of every chunk that has any, in this epoch's order."""
        selected = set(self.subjects)
        offsets = np.concatenate([[0], np.cumsum([h.n_subjects for h in self.batches.headers])])
        chunks = []
        for file_idx, start, stop in self.batches.chunk_spans():
            members = [int(offsets[file_idx]) + r for r in range(start, stop)]
            members = [s for s in members if s in selected]
            if members:
                chunks.append(members)
        return [chunks[i] for i in epoch_order(len(chunks), self.epoch, self.seed, self.shuffle)]

    def __len__(self) -> int:
        """Subjects this rank yields per epoch (all its workers together)."""
        return units_per_rank(len(self.subjects), self.process_shard()[1], self.drop_last)

    def shard(self, rank: int, world_size: int, worker: int, num_workers: int) -> list[int]:
        """The subjects one worker of one rank reads, in read order."""
        order = [subject for members in self.chunks() for subject in members]
        positions = shard_positions(
            len(order), rank, world_size, worker, num_workers,
            batch_size=self.batch_size, drop_last=self.drop_last,
        )  # fmt: skip
        return [order[p] for p in positions]

    def __iter__(self) -> Iterator[dict]:
        for subject in self.shard(*self.process_shard()):
            yield self.item(subject, self.batches.read_subject(subject))


def load_connectome(
    split: str | None = None,
    streaming: bool = False,
    data_dir: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    storage_options: dict | None = None,
    **kwargs,
) -> ConnectomeSubjects | ConnectomeChunks:
    """`load_dataset("connectome", ...)`: subjects of a connectome as a torch dataset.

    Parameters
    ----------
    split
        ``None`` for all subjects, ``"train"`` or ``"test"`` for a seeded subject split.
    streaming
        ``True`` gives `ConnectomeChunks`, else `ConnectomeSubjects`.
    data_dir
        Folder (or URL) of batch files; ``None`` uses the tiny synthetic connectome (written on
        first use).
    test_fraction, seed
        The subject split.
    storage_options
        fsspec options when ``data_dir`` is a URL.
    **kwargs
        ``parcellation``, ``connectivity`` (and ``shuffle`` when streaming).
    """
    if data_dir is None:
        from neurotorch.synthetic.connectome import BATCH_DIR, default_synthetic_connectome

        data_dir = default_synthetic_connectome() / BATCH_DIR
    batches = ConnectomeBatches(data_dir, storage_options)
    subjects = kwargs.pop("subjects", None)
    if split is not None and subjects is not None:
        raise ParameterError("Pass either split= or subjects=, not both.")
    if split is not None:
        parts = partition(range(batches.n_subjects), 0.0, test_fraction, seed)
        if split not in parts:
            raise ParameterError(
                f"Unknown connectome split {split!r}; use 'train', 'test' or None."
            )
        subjects = parts[split]
    cls = ConnectomeChunks if streaming else ConnectomeSubjects
    return cls(batches, subjects=subjects, **kwargs)
