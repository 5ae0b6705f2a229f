"""`BetasStream`: trials streamed straight from the ``.nii.gz`` files, no prepared store.

For one-pass work and data too big to prepare. Each epoch the selected trials are put in one
global order (sessions in a seeded order when shuffling, trials in volume order within a
session) and sharded by `neurotorch.data.sharding`: equal contiguous blocks per rank (the last
wraps around), cut into whole batches of ``batch_size`` per ``DataLoader`` worker, so that a
loader yields exactly ``ceil(len(stream) / batch_size)`` batches for any number of workers
(`StreamLoader` sets ``batch_size`` from its own). A worker reads its sessions sequentially (one
pass per session, stopping after its last trial) and passes trials through a seeded shuffle
buffer whose seed changes with `BetasStream.set_epoch`.

Mid-epoch resume: the order of a worker's items is a pure function of (seed, epoch, rank,
worker), so `state_dict` records the epoch and how many items the worker has yielded;
`load_state_dict` makes the next iteration regenerate the same order and skip those items. This
is the protocol of torchdata's ``StatefulDataLoader`` (which calls both in each worker), and
`StreamLoader` adds the epoch counter so that Lightning checkpoints resume too.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from neurotorch._docs import fill_doc
from neurotorch._options import as_settings, check_bool, check_int
from neurotorch.config import usable_cores
from neurotorch.data.collate import BatchRows
from neurotorch.data.fmri.betas import Settings, as_subject_list, describe_dataset
from neurotorch.data.fmri.pairing import Features, StimulusPairing
from neurotorch.data.fmri.settings import ReadSettings, laion_root
from neurotorch.data.fmri.trials import SELECTION_COLUMNS, TrialSelection, select_trials
from neurotorch.data.sharding import (
    ResumableIterable,
    epoch_order,
    shard_positions,
    units_per_rank,
)
from neurotorch.errors import MixedBatchError
from neurotorch.fmri import layout
from neurotorch.fmri.datafiles import require
from neurotorch.fmri.nan_policy import apply_nan_policy
from neurotorch.fmri.session_checks import check_session_files
from neurotorch.fmri.voxel_selection import VoxelSelection, voxel_selection
from neurotorch.io.integrity import verify_before_use
from neurotorch.io.nifti import iter_volumes
from neurotorch.io.seek_index import can_seek, has_index, iter_volume_range
from neurotorch.io.storage import DataRoot


def check_one_subject_per_batch(subjects: Sequence[str], batch_size: int) -> None:
    """`MixedBatchError` when a stream over several subjects would be batched: it interleaves
    their trials, so a batch would stack rows of different subjects (whose voxels differ even
    where their counts match)."""
    if len(subjects) > 1 and batch_size > 1:
        raise MixedBatchError(
            f"A stream over {', '.join(subjects)} cannot be batched (batch_size={batch_size}): "
            "it interleaves the subjects' trials, so a batch would stack betas of different "
            "subjects, whose voxels do not correspond. Stream one subject at a time, or use the "
            "map-style dataset, whose batches hold one subject each: BetasDataset(...).loader("
            f"batch_size={batch_size}, shuffle=True, num_workers=2) (a DataModule: "
            "streaming=False)."
        )


@fill_doc
class BetasStream(ResumableIterable):
    """Iterable-style trials of one or more subjects, read volume by volume from ``.nii.gz``.

    Items are dicts like `neurotorch.data.fmri.betas.BetasDataset`'s (``betas``, what
    ``features`` asks for, ``subject``, ``session``, ``trial``, ``image_name``), in stream order.
    Of ``read``, the stream honours ``nan_policy`` (per volume), ``verify`` and
    ``shuffle_buffer``; the map-style settings (``zscore``, ``average_repeats``, a float16
    ``dtype``) are refused.

    Parameters
    ----------
    %(data_dir)s
    %(fmri_subject)s
    %(trials)s
    %(voxels)s
    %(fmri_features)s
    %(read)s
    %(image_transform)s
    %(fmri_transform)s
    %(seed)s
    batch_size, drop_last
        Workers get whole batches of ``batch_size`` trials, so that a ``DataLoader`` with this
        ``batch_size`` yields exactly ``ceil(len / batch_size)`` batches (`StreamLoader` sets it
        from its own); ``drop_last`` leaves out the tail that does not fill a rank's share
        instead of padding it (see `neurotorch.data.sharding`). A stream over several subjects
        is not batched (`MixedBatchError` for ``batch_size`` > 1): it interleaves their trials.
    %(storage_options)s

    Notes
    -----
    The rank and world size come from the process (`neurotorch.data.sharding`); a
    ``DataLoader``'s workers cannot see the process group, so `StreamLoader` pins them before
    its workers start (call `pin_shard` yourself with a plain ``DataLoader`` under DDP, or set
    the ``rank`` and ``world_size`` attributes).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | DataRoot | None,
        subject: str | Sequence[str] = "sub-01",
        *,
        trials: TrialSelection | Settings = None,
        voxels: VoxelSelection | Settings = None,
        features: Features = "CLIP",
        read: ReadSettings | Settings = None,
        image_transform: Callable[[Any], Any] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        seed: int = 0,
        batch_size: int = 1,
        drop_last: bool = False,
        storage_options: dict | None = None,
    ):
        self.read = as_settings(ReadSettings, read, "read")
        self.read.check_streamable()
        self.seed = check_int("seed", seed)
        self.subjects = as_subject_list(subject)
        self.set_batching(batch_size, check_bool("drop_last", drop_last))
        self.root = laion_root(data_dir, storage_options)
        self.trial_selection = as_settings(TrialSelection, trials, "trials")
        self.voxel_selection = as_settings(VoxelSelection, voxels, "voxels")
        self.transform = transform
        self.trials = select_trials(self.root, self.subjects, self.trial_selection)
        self._masks = {
            s: voxel_selection(self.root, s, self.voxel_selection) for s in self.subjects
        }
        self.sessions = list(
            dict.fromkeys(zip(self.trials["subject"], self.trials["session"], strict=True))
        )
        for subj, ses in self.sessions:  # grids, affines and trial counts, before any epoch
            check_session_files(
                self.root,
                subj,
                ses,
                selection=self._masks[subj],
                mask_source=self.voxel_selection.mask_source,
            )
        self.pairing = StimulusPairing(
            self.root, self.trials["image_name"].tolist(), features, image_transform=image_transform
        )
        self._columns = {key: self.trials[key].to_numpy() for key in SELECTION_COLUMNS}
        self.shuffle_buffer = self.read.shuffle_buffer or 0
        self.epoch = 0

    def set_batching(self, batch_size: int, drop_last: bool = False) -> None:
        """As `ShardedIterable.set_batching`; `MixedBatchError` for batches of several trials
        over several subjects (see `check_one_subject_per_batch`)."""
        super().set_batching(batch_size, drop_last)
        check_one_subject_per_batch(self.subjects, self.batch_size)

    def __repr__(self) -> str:
        order = f"shuffle buffer {self.shuffle_buffer}" if self.shuffle_buffer > 1 else "file order"
        details = f"{order}, seed {self.seed}"
        return describe_dataset(self, f"{len(self.trials)} trials", details=details)

    def voxel_masks(self) -> dict[str, np.ndarray]:
        """The 3-D selection of every subject (its C-order flattening is the voxel axis)."""
        return dict(self._masks)

    # -- sharding ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Items this rank yields per epoch (all its workers together)."""
        world_size = self.process_shard()[1]
        return units_per_rank(len(self.trials), world_size, self.drop_last)

    def epoch_order(self) -> np.ndarray:
        """Rows of `trials` in this epoch's global order (sessions shuffled when shuffling)."""
        order = epoch_order(
            len(self.sessions), self.epoch, seed=self.seed, shuffle=self.shuffle_buffer > 1
        )
        session_of_trial = pd.MultiIndex.from_frame(self.trials[["subject", "session"]])
        position = pd.Series(np.argsort(order), index=pd.MultiIndex.from_tuples(self.sessions))
        rank_of_session = position.reindex(session_of_trial).to_numpy()
        return np.lexsort((self.trials["trial"].to_numpy(), rank_of_session))

    def shard(
        self, rank: int, world_size: int, worker: int = 0, num_workers: int = 1
    ) -> np.ndarray:
        """Trial-table rows of one (rank, worker) for the current epoch, in read order."""
        positions = shard_positions(
            len(self.trials),
            rank,
            world_size,
            worker=worker,
            num_workers=num_workers,
            batch_size=self.batch_size,
            drop_last=self.drop_last,
        )
        return self.epoch_order()[positions]

    # -- epochs and resume -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """Position in the stream: epoch and items yielded so far in this epoch (this worker)."""
        return {**super().state_dict(), "epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration continues after the ``yielded`` items of ``epoch``."""
        super().load_state_dict(state)
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))

    # -- iteration ---------------------------------------------------------------------------------
    def _rows_in_read_order(
        self, rows: np.ndarray, num_workers: int = 1
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(trial-table row, masked volume)`` for ``rows``, one sequential pass per run of
        rows in one session (from the first volume it needs: see `_session_volumes`); a run
        ends where the session changes or the volumes go back (the wrap-around of a padded
        shard)."""
        trials = self.trials
        subjects, sessions = trials["subject"].to_numpy(), trials["session"].to_numpy()
        volumes = trials["trial"].to_numpy()
        start = 0
        while start < len(rows):
            key = (subjects[rows[start]], sessions[rows[start]])
            stop = start + 1
            while (
                stop < len(rows)
                and (subjects[rows[stop]], sessions[rows[stop]]) == key
                and volumes[rows[stop]] >= volumes[rows[stop - 1]]
            ):
                stop += 1
            piece = rows[start:stop]
            by_volume = cast(
                dict[int, list[int]], pd.Series(piece).groupby(volumes[piece]).agg(list).to_dict()
            )
            relpath = require(self.root, layout.session_betas(*key), f"Betas of {key[0]} {key[1]}")
            where = self.root.path(relpath)
            read = self._session_volumes(
                relpath,
                self._masks[key[0]],
                min(by_volume),
                last=max(by_volume),
                num_workers=num_workers,
            )
            for volume, values in read:
                rows_here = by_volume.get(volume, ())
                if rows_here:
                    apply_nan_policy(values, self.read.nan_policy, where)
                for k, row in enumerate(rows_here):  # a padded shard repeats a trial
                    yield row, values if k == 0 else values.copy()
            start = stop

    def _session_volumes(
        self, relpath: str, mask: np.ndarray, first: int, last: int, num_workers: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(volume, masked values)`` of the volumes ``first … last`` of one session file.

        The file is verified first (`verify_before_use`; for a local ``.nii.gz`` that pass
        also builds its seek index). A reader that starts inside the file (a second worker or
        rank) starts at its first volume through the seek index instead of inflating what it
        does not serve; one that starts at the beginning reads it front to back.
        """
        verify_before_use(self.root, relpath, self.read.verify, seek_index=True)
        path = self.root.path(relpath)
        # with verification off, no pass is spent on an index: seek only where one exists
        seekable = self.root.is_local and can_seek(path)
        cores = max(1, usable_cores() // num_workers)  # of this DataLoader worker
        if first > 0 and seekable and (self.read.verify != "off" or has_index(path)):
            yield from iter_volume_range(path, first, last + 1, mask=mask, threads=cores)
            return
        with self.root.readable(relpath) as source:
            volumes = iter_volumes(source, mask, progress=False, cores=cores)
            for volume, values in enumerate(volumes):
                yield volume, values
                if volume >= last:
                    break

    def _shuffled(
        self, stream: Iterator[tuple[int, np.ndarray]], rng: np.random.Generator
    ) -> Iterator:
        if self.shuffle_buffer <= 1:
            yield from stream
            return
        buffer: list[tuple[int, np.ndarray]] = []
        for entry in stream:
            buffer.append(entry)
            if len(buffer) >= self.shuffle_buffer:
                k = int(rng.integers(len(buffer)))
                buffer[k], buffer[-1] = buffer[-1], buffer[k]
                yield buffer.pop()
        while buffer:
            k = int(rng.integers(len(buffer)))
            buffer[k], buffer[-1] = buffer[-1], buffer[k]
            yield buffer.pop()

    def _item(self, row: int, values: np.ndarray, batch: BatchRows | None) -> dict[str, Any]:
        columns = self._columns
        name = columns["image_name"][row]
        betas = torch.from_numpy(values) if batch is None else batch.place(values)
        item: dict[str, Any] = {"betas": betas}
        item.update({key: value[0] for key, value in self.pairing.batch([name]).items()})
        item.update(
            image_name=name,
            subject=columns["subject"][row],
            session=columns["session"][row],
            trial=int(columns["trial"][row]),
        )
        return item if self.transform is None else self.transform(item)

    def _items_after(self, skip: int) -> Iterator[dict[str, Any]]:
        """This worker's items of the epoch after its first ``skip`` (those are read all the
        same: the shuffle buffer's order depends on them)."""
        rank, world_size, worker, num_workers = self.process_shard()
        rows = self.shard(rank, world_size, worker=worker, num_workers=num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        read = self._rows_in_read_order(rows, num_workers)
        # batched: each trial's betas go straight into its row of the batch (no copy at collate)
        batch = BatchRows(self.batch_size) if self.batch_size > 1 else None
        for row, values in itertools.islice(self._shuffled(read, rng), skip, None):
            yield self._item(row, values, batch)
