"""Torch datasets over a Lacuna connectome: subjects map-style, or streamed chunk by chunk.

Items are dicts: ``timeseries`` (n_timepoints, n_voxels) float32 (or (n_timepoints, n_parcels)
with a parcellation), ``subject`` (index) and ``subject_id``, plus ``connectivity``
(n_parcels, n_parcels) when asked for. HDF5 handles open lazily in each worker process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from neurotorch.connectome.batches import ConnectomeBatches
from neurotorch.connectome.parcellation import Parcellation, connectivity_matrix
from neurotorch.data.stream import distributed_rank_and_size

ParcellationInput = str | os.PathLike | nib.spatialimages.SpatialImage | Parcellation | None


def split_subjects(
    n_subjects: int, test_fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Seeded split of subject indices into (train, test), each sorted."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    order = np.random.default_rng(seed).permutation(n_subjects)
    n_test = int(round(test_fraction * n_subjects))
    if test_fraction > 0 and n_test == 0:
        n_test = 1
    return sorted(order[n_test:].tolist()), sorted(order[:n_test].tolist())


class _ConnectomeItems:
    """What both datasets share: the batches, the subject selection and item building."""

    def __init__(
        self,
        path: str | os.PathLike | ConnectomeBatches,
        subjects: Sequence[int] | None,
        parcellation: ParcellationInput,
        connectivity: bool,
        storage_options: dict | None,
    ):
        self.batches = (
            path
            if isinstance(path, ConnectomeBatches)
            else ConnectomeBatches(path, storage_options)
        )
        self.subjects = (
            list(range(self.batches.n_subjects)) if subjects is None else [int(s) for s in subjects]
        )
        for s in self.subjects:
            self.batches.locate(s)  # raises IndexError for a subject that is not there
        if parcellation is None or isinstance(parcellation, Parcellation):
            self.parcellation = parcellation
        else:
            self.parcellation = Parcellation.from_image(parcellation, self.batches)
        if connectivity and self.parcellation is None:
            raise ValueError("connectivity=True needs a parcellation (a label image).")
        self.connectivity = connectivity
        self._ids = self.batches.subject_ids

    def item(self, subject: int, series: np.ndarray) -> dict:
        if self.parcellation is not None:
            series = self.parcellation.reduce(series)
        item = {
            "timeseries": torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32)),
            "subject": subject,
            "subject_id": self._ids[subject],
        }
        if self.connectivity:
            item["connectivity"] = torch.from_numpy(connectivity_matrix(series).astype(np.float32))
        return item


class ConnectomeSubjects(Dataset, _ConnectomeItems):
    """Map-style dataset: item i is the i-th selected subject's whole time series.

    Parameters
    ----------
    path
        Folder of batch files, local or an fsspec URL (``s3://bucket/prefix``), or a
        `ConnectomeBatches`.
    subjects
        Subject indices to serve (default: all).
    parcellation
        Optional label image (or `Parcellation`): voxels are averaged per parcel.
    connectivity
        Add the (n_parcels, n_parcels) Pearson connectivity matrix to each item.
    storage_options
        fsspec options when ``path`` is a URL.
    """

    def __init__(
        self,
        path: str | os.PathLike | ConnectomeBatches,
        subjects: Sequence[int] | None = None,
        parcellation: ParcellationInput = None,
        connectivity: bool = False,
        storage_options: dict | None = None,
    ):
        _ConnectomeItems.__init__(self, path, subjects, parcellation, connectivity, storage_options)

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> dict:
        subject = self.subjects[index]
        return self.item(subject, self.batches.read_subject(subject))


class ConnectomeChunks(IterableDataset, _ConnectomeItems):
    """Iterable dataset over the HDF5 chunks of the batch files, sharded across rank x worker.

    The chunks (one subject each in the Lacuna layout) are put in one order per epoch (seeded
    shuffle when ``shuffle``), padded by wrapping around to a multiple of the world size so that
    every rank gets the same number of chunks, dealt to ranks round-robin and, within a rank, to
    ``DataLoader`` workers round-robin. Each worker reads only its own chunks.

    Parameters
    ----------
    path, subjects, parcellation, connectivity, storage_options
        As in `ConnectomeSubjects`; chunks without a selected subject are skipped.
    shuffle
        Shuffle the chunk order every epoch (call `set_epoch`).
    seed
        Seed of the shuffle.
    """

    def __init__(
        self,
        path: str | os.PathLike | ConnectomeBatches,
        subjects: Sequence[int] | None = None,
        parcellation: ParcellationInput = None,
        connectivity: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        storage_options: dict | None = None,
    ):
        _ConnectomeItems.__init__(self, path, subjects, parcellation, connectivity, storage_options)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

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
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        return chunks

    def shard(self, rank: int, world_size: int, worker: int, n_workers: int) -> list[list[int]]:
        """The chunks one worker of one rank reads."""
        chunks = self.chunks()
        if not chunks:
            return []
        per_rank = -(-len(chunks) // world_size)
        padded = [chunks[k % len(chunks)] for k in range(per_rank * world_size)]
        return padded[rank::world_size][worker::n_workers]

    def __iter__(self) -> Iterator[dict]:
        rank, world_size = distributed_rank_and_size()
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        for members in self.shard(rank, world_size, worker, n_workers):
            for subject in members:
                yield self.item(subject, self.batches.read_subject(subject))


def load_connectome(
    split: str | None = None,
    streaming: bool = False,
    path: str | os.PathLike | None = None,
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
    path
        Folder (or URL) of batch files; ``None`` uses the tiny synthetic connectome (written on
        first use).
    test_fraction, seed
        The subject split.
    storage_options
        fsspec options when ``path`` is a URL.
    **kwargs
        ``parcellation``, ``connectivity`` (and ``shuffle`` when streaming).
    """
    if path is None:
        from neurotorch.synthetic.connectome import BATCH_DIR, default_synthetic_connectome

        path = default_synthetic_connectome() / BATCH_DIR
    batches = ConnectomeBatches(path, storage_options)
    subjects = None
    if split is not None:
        train, test = split_subjects(batches.n_subjects, test_fraction, seed)
        parts = {"train": train, "test": test}
        if split not in parts:
            raise ValueError(f"Unknown connectome split {split!r}; use 'train', 'test' or None.")
        subjects = parts[split]
    cls = ConnectomeChunks if streaming else ConnectomeSubjects
    return cls(batches, subjects=subjects, **kwargs)
