"""Torch datasets over a Lacuna connectome: subjects map-style, or streamed chunk by chunk.

Items are dicts: ``timeseries`` (n_timepoints, n_voxels) float32 (or (n_timepoints, n_parcels)
with a parcellation), ``subject`` (the subject's id, as in fMRI items) and ``index`` (its
position in the connectome), plus ``connectivity`` (n_parcels, n_parcels) when asked for. HDF5
handles open lazily in each worker process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset

from neurotorch._docs import fill_doc
from neurotorch._options import as_ints, check_bool, check_int, check_option
from neurotorch.connectome import layout
from neurotorch.connectome.batches import ConnectomeBatches
from neurotorch.connectome.parcellation import Parcellation, connectivity_matrix
from neurotorch.data.partition import partition
from neurotorch.data.sharding import (
    ResumableIterable,
    epoch_order,
    shard_positions,
    units_per_rank,
)
from neurotorch.errors import ParameterError
from neurotorch.synthetic.resolve import SYNTHETIC, resolve_data_dir

ParcellationInput = str | os.PathLike | nib.spatialimages.SpatialImage | Parcellation | None
ConnectomeSource = str | os.PathLike | Sequence[str | os.PathLike] | ConnectomeBatches | None
SyntheticSize = Literal["tiny", "small", "bench"]
SYNTHETIC_SIZES = ("tiny", "small", "bench")


def open_connectome(
    data_dir: ConnectomeSource,
    *,
    storage_options: dict | None = None,
    synthetic_size: SyntheticSize = "tiny",
    seed: int = 0,
) -> ConnectomeBatches:
    """The `ConnectomeBatches` that ``data_dir`` names (what the connectome datasets accept).

    ``"synthetic"`` (or ``None``) goes through `neurotorch.synthetic.resolve.resolve_data_dir`,
    which writes the synthetic connectome of ``synthetic_size`` and ``seed`` on first use.
    """
    if isinstance(data_dir, ConnectomeBatches):
        return data_dir
    if data_dir is None or (isinstance(data_dir, str) and data_dir == SYNTHETIC):
        check_option("synthetic_size", synthetic_size, SYNTHETIC_SIZES)
        root = resolve_data_dir("connectome", SYNTHETIC, size=synthetic_size, seed=seed)
        return ConnectomeBatches(Path(root) / layout.BATCH_DIR)
    return ConnectomeBatches(data_dir, storage_options)


def _checked_subjects(subjects: Sequence[int] | None, n_subjects: int) -> list[int]:
    if subjects is None:
        return list(range(n_subjects))
    chosen = as_ints("subjects", subjects, minimum=0)
    outside = [s for s in chosen if s >= n_subjects]
    if outside or len(set(chosen)) != len(chosen):
        raise ParameterError(
            f"subjects must be distinct indices in 0..{n_subjects - 1} (the connectome has "
            f"{n_subjects}); got {outside[:5] or 'repeated indices'}."
        )
    return chosen


class _ConnectomeItems:
    """What both datasets share: the batches, the subject selection and item building."""

    def __init__(
        self,
        data_dir: ConnectomeSource,
        *,
        subjects: Sequence[int] | None,
        parcellation: ParcellationInput,
        connectivity: bool,
        storage_options: dict | None,
    ):
        self.batches = open_connectome(data_dir, storage_options=storage_options)
        self.subjects = _checked_subjects(subjects, self.batches.n_subjects)
        if parcellation is None or isinstance(parcellation, Parcellation):
            self.parcellation = parcellation
        else:
            self.parcellation = Parcellation.from_image(parcellation, self.batches)
        self.connectivity = check_bool("connectivity", connectivity)
        if self.connectivity and self.parcellation is None:
            raise ParameterError("connectivity=True needs a parcellation (a label image).")
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

    @property
    def n_features(self) -> int:
        """Columns of an item's time series: voxels, or parcels with a parcellation."""
        if self.parcellation is not None:
            return self.parcellation.n_parcels
        return self.batches.n_voxels

    def _describe(self) -> str:
        columns = (
            f"{self.parcellation.n_parcels} parcels"
            if self.parcellation is not None
            else f"{self.batches.n_voxels} voxels"
        )
        extra = " + connectivity" if self.connectivity else ""
        return (
            f"{self.batches.location!r}: {len(self.subjects)} of {self.batches.n_subjects} "
            f"subjects, {self.batches.n_timepoints} timepoints x {columns}{extra}, "
            f"space={self.batches.space!r}"
        )


@fill_doc
class ConnectomeSubjects(Dataset, _ConnectomeItems):
    """Map-style dataset: item i is the i-th selected subject's whole time series.

    Parameters
    ----------
    %(connectome_data_dir)s
    %(connectome_subjects)s
    %(connectome_parcellation)s
    %(connectome_connectivity)s
    %(storage_options)s
    """

    def __init__(
        self,
        data_dir: ConnectomeSource,
        subjects: Sequence[int] | None = None,
        parcellation: ParcellationInput = None,
        connectivity: bool = False,
        storage_options: dict | None = None,
    ):
        _ConnectomeItems.__init__(
            self,
            data_dir,
            subjects=subjects,
            parcellation=parcellation,
            connectivity=connectivity,
            storage_options=storage_options,
        )

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> dict:
        subject = self.subjects[index]
        return self.item(subject, self.batches.read_subject(subject))

    def __repr__(self) -> str:
        return f"ConnectomeSubjects({self._describe()})"


@fill_doc
class ConnectomeChunks(ResumableIterable, _ConnectomeItems):
    """Iterable dataset of subjects read chunk by chunk, sharded across rank x worker.

    The selected subjects are put in the order of the HDF5 chunks that hold them (one subject
    each in the Lacuna layout; the chunk order is shuffled per epoch when ``shuffle``) and sharded
    by `neurotorch.data.sharding`: equal contiguous blocks per rank, the last wrapping around,
    cut into whole batches of ``batch_size`` per ``DataLoader`` worker. So every rank yields the
    same number of subjects and batches, and a ``DataLoader`` with this ``batch_size`` yields
    exactly ``ceil(len / batch_size)`` batches for any number of workers.

    The epoch (`set_epoch`, or `neurotorch.data.loader.StreamLoader` at every pass) lives in
    shared memory, so it reaches persistent ``DataLoader`` workers too.

    Parameters
    ----------
    %(connectome_data_dir)s
    %(connectome_subjects)s
        Chunks without a selected subject are skipped.
    %(connectome_parcellation)s
    %(connectome_connectivity)s
    shuffle
        Shuffle the chunk order every epoch (call `set_epoch`, or use ``StreamLoader``).
    %(seed)s
    %(storage_options)s
    batch_size, drop_last
        The ``DataLoader``'s batch size and ``drop_last`` (whole batches per worker; ``drop_last``
        leaves out the tail that does not fill a rank's share instead of padding it).
    """

    def __init__(
        self,
        data_dir: ConnectomeSource,
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
            self,
            data_dir,
            subjects=subjects,
            parcellation=parcellation,
            connectivity=connectivity,
            storage_options=storage_options,
        )
        self.shuffle, self.seed = check_bool("shuffle", shuffle), check_int("seed", seed)
        self.epoch = 0
        self.set_batching(batch_size, drop_last)

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
        order = epoch_order(len(chunks), self.epoch, seed=self.seed, shuffle=self.shuffle)
        return [chunks[i] for i in order]

    def __len__(self) -> int:
        """Subjects this rank yields per epoch (all its workers together)."""
        return units_per_rank(len(self.subjects), self.process_shard()[1], self.drop_last)

    def shard(self, rank: int, world_size: int, worker: int, num_workers: int) -> list[int]:
        """The subjects one worker of one rank reads, in read order."""
        order = [subject for members in self.chunks() for subject in members]
        positions = shard_positions(
            len(order),
            rank,
            world_size,
            worker=worker,
            num_workers=num_workers,
            batch_size=self.batch_size,
            drop_last=self.drop_last,
        )
        return [order[p] for p in positions]

    def _items_after(self, skip: int) -> Iterator[dict]:
        """This worker's subjects of the epoch after its first ``skip`` (those are not read)."""
        for subject in self.shard(*self.process_shard())[skip:]:
            yield self.item(subject, self.batches.read_subject(subject))

    def __repr__(self) -> str:
        return (
            f"ConnectomeChunks({self._describe()}, shuffle={self.shuffle}, seed={self.seed}, "
            f"epoch={self.epoch}, batch_size={self.batch_size})"
        )


@fill_doc
def load_connectome(
    split: Literal["train", "test"] | None = None,
    streaming: bool = False,
    data_dir: ConnectomeSource = SYNTHETIC,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    synthetic_size: SyntheticSize = "tiny",
    storage_options: dict | None = None,
    **kwargs,
) -> ConnectomeSubjects | ConnectomeChunks:
    """`load_dataset("connectome", ...)`: subjects of a connectome as a torch dataset.

    Parameters
    ----------
    split
        ``None`` for all subjects, ``"train"`` or ``"test"`` for a seeded subject split
        (`neurotorch.data.partition.partition`).
    streaming
        ``True`` gives `ConnectomeChunks`, else `ConnectomeSubjects`.
    %(connectome_data_dir)s
    test_fraction
        Share of the subjects in the ``"test"`` part.
    %(seed)s
    %(connectome_synthetic_size)s
    %(storage_options)s
    **kwargs
        ``subjects``, ``parcellation``, ``connectivity`` (and ``shuffle``, ``batch_size`` when
        streaming).
    """
    batches = open_connectome(
        data_dir, storage_options=storage_options, synthetic_size=synthetic_size, seed=seed
    )
    subjects = kwargs.pop("subjects", None)
    if split is not None and subjects is not None:
        raise ParameterError("Pass either split= or subjects=, not both.")
    if split is not None:
        check_option("split", split, ("train", "test"), hint="None serves all subjects.")
        parts = partition(
            range(batches.n_subjects), val_fraction=0.0, test_fraction=test_fraction, seed=seed
        )
        subjects = parts[split]
    cls = ConnectomeChunks if check_bool("streaming", streaming) else ConnectomeSubjects
    return cls(batches, subjects=subjects, **kwargs)
