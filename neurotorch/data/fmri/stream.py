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

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from neurotorch.data.fmri.betas import as_subject_list
from neurotorch.data.fmri.trials import StimulusPairing, select_trials
from neurotorch.data.sharding import (
    ShardedIterable,
    check_batch_size,
    check_rank,
    epoch_order,
    shard_positions,
    units_per_rank,
)
from neurotorch.errors import ParameterError
from neurotorch.fmri import layout
from neurotorch.fmri.datafiles import require, resolve_root
from neurotorch.fmri.nan_policy import DEFAULT_NAN_POLICY, apply_nan_policy, check_nan_policy
from neurotorch.fmri.rois import RoiQuery
from neurotorch.fmri.session_checks import check_session_files
from neurotorch.fmri.splits import SHARED_POOL
from neurotorch.fmri.voxel_selection import DEFAULT_NC_DESC, voxel_selection
from neurotorch.io.integrity import check_verify_mode, verify_before_use
from neurotorch.io.nifti import iter_volumes
from neurotorch.io.storage import DataRoot


class BetasStream(ShardedIterable):
    """Iterable-style trials of one or more subjects, read volume by volume from ``.nii.gz``.

    Items are dicts like `neurotorch.data.fmri.betas.BetasDataset`'s (``betas``, ``embedding``,
    requested ``modalities``, ``subject``, ``session``, ``trial``, ``image_name``), in stream order.

    Parameters
    ----------
    data_dir, subject, roi, features, sessions, image_names
        As in `BetasDataset`.
    split, pool, variant_id, ood_types, stimuli
        Trial selection, as in `BetasDataset`.
    mask, nc_threshold, nc_desc, mask_source
        Voxel selection, as in `BetasDataset`.
    modalities, image_transform
        Paired stimulus modalities, as in `BetasDataset`.
    shuffle_buffer
        Size of the shuffle buffer; 0 or 1 streams in file order. Sessions are also visited in a
        seeded order when this is > 1.
    seed
        Seed of every shuffle; combined with the epoch, rank and worker.
    batch_size, drop_last
        Workers get whole batches of ``batch_size`` trials, so that a ``DataLoader`` with this
        ``batch_size`` yields exactly ``ceil(len / batch_size)`` batches (`StreamLoader` sets it
        from its own); ``drop_last`` leaves out the tail that does not fill a rank's share
        instead of padding it (see `neurotorch.data.sharding`).
    rank, world_size
        Shard of this process; default from `neurotorch.data.sharding.rank_and_world_size`.
    storage_options
        fsspec options for a URL ``data_dir``.
    nan_policy
        Non-finite betas: ``"raise"`` (default), ``"zero"`` or ``"keep"``, applied per volume.
    verify
        ``"first-use"`` (default): a betas file not yet verified is read in full (gzip CRC and
        length) before any item is served from it, once per file version; ``"off"`` skips that.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | DataRoot | None,
        subject: str | Sequence[str] = "sub-01",
        roi: RoiQuery | None = None,
        features: str | Sequence[str] | None = "CLIP",
        sessions: Sequence[str] | dict[str, Sequence[str]] | None = None,
        image_names: Iterable[str] | None = None,
        *,
        split: str | None = None,
        pool: str = SHARED_POOL,
        variant_id: int = 0,
        ood_types: str | Sequence[str] | None = None,
        stimuli: str | None = None,
        mask: np.ndarray | None = None,
        nc_threshold: float | None = None,
        nc_desc: str = DEFAULT_NC_DESC,
        mask_source: str = "anatomical",
        modalities: Sequence[str] = (),
        image_transform: Callable[[Any], Any] | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        batch_size: int = 1,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        storage_options: dict | None = None,
        nan_policy: str = DEFAULT_NAN_POLICY,
        verify: str = "first-use",
    ):
        self.verify = check_verify_mode(verify)
        self.root = resolve_root(data_dir, storage_options)
        self.subjects = as_subject_list(subject)
        self.trials = select_trials(
            self.root, self.subjects, sessions, split=split, pool=pool, variant_id=variant_id,
            ood_types=ood_types, stimuli=stimuli, image_names=image_names,
        )  # fmt: skip
        self.voxel_masks = {
            s: voxel_selection(
                self.root,
                s,
                roi=roi,
                mask=mask,
                nc_threshold=nc_threshold,
                nc_desc=nc_desc,
                mask_source=mask_source,
            )  # fmt: skip
            for s in self.subjects
        }
        self.sessions = list(
            dict.fromkeys(zip(self.trials["subject"], self.trials["session"], strict=True))
        )
        for subj, ses in self.sessions:  # grids, affines and trial counts, before any epoch
            check_session_files(self.root, subj, ses, self.voxel_masks[subj], mask_source)
        self.pairing = StimulusPairing(
            self.root, self.trials["image_name"].tolist(), features, modalities, image_transform
        )
        self._columns = {
            key: self.trials[key].to_numpy()
            for key in ("subject", "session", "trial", "image_name")
        }
        if shuffle_buffer < 0:
            raise ParameterError(f"shuffle_buffer must be 0 or more, got {shuffle_buffer}.")
        if rank is not None or world_size is not None:  # a missing one comes from the process
            given_rank = 0 if rank is None else rank
            check_rank(given_rank, max(given_rank, 0) + 1 if world_size is None else world_size)
        self.shuffle_buffer, self.seed = int(shuffle_buffer), int(seed)
        self.nan_policy = check_nan_policy(nan_policy)
        self.batch_size, self.drop_last = check_batch_size(batch_size), bool(drop_last)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._yielded = 0
        self._skip = 0

    # -- sharding ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Items this rank yields per epoch (all its workers together)."""
        world_size = self.process_shard()[1]
        return units_per_rank(len(self.trials), world_size, self.drop_last)

    def epoch_order(self) -> np.ndarray:
        """Rows of `trials` in this epoch's global order (sessions shuffled when shuffling)."""
        order = epoch_order(len(self.sessions), self.epoch, self.seed, self.shuffle_buffer > 1)
        session_of_trial = pd.MultiIndex.from_frame(self.trials[["subject", "session"]])
        position = pd.Series(np.argsort(order), index=pd.MultiIndex.from_tuples(self.sessions))
        rank_of_session = position.reindex(session_of_trial).to_numpy()
        return np.lexsort((self.trials["trial"].to_numpy(), rank_of_session))

    def shard(
        self, rank: int, world_size: int, worker: int = 0, num_workers: int = 1
    ) -> np.ndarray:
        """Trial-table rows of one (rank, worker) for the current epoch, in read order."""
        positions = shard_positions(
            len(self.trials), rank, world_size, worker, num_workers,
            batch_size=self.batch_size, drop_last=self.drop_last,
        )  # fmt: skip
        return self.epoch_order()[positions]

    # -- epochs and resume -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """Position in the stream: epoch and items yielded so far in this epoch (this worker)."""
        return {"epoch": self.epoch, "yielded": self._yielded, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration continues after the ``yielded`` items of ``epoch``."""
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))
        self._skip = int(state["yielded"])

    # -- iteration ---------------------------------------------------------------------------------
    def _rows_in_read_order(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """``(trial-table row, masked volume)`` for ``rows``, one sequential pass per session."""
        trials = self.trials
        subjects, sessions = trials["subject"].to_numpy(), trials["session"].to_numpy()
        volumes = trials["trial"].to_numpy()
        start = 0
        while start < len(rows):
            key = (subjects[rows[start]], sessions[rows[start]])
            stop = start
            while stop < len(rows) and (subjects[rows[stop]], sessions[rows[stop]]) == key:
                stop += 1
            piece = rows[start:stop]
            by_volume = pd.Series(piece).groupby(volumes[piece]).agg(list).to_dict()
            last = max(by_volume)
            relpath = require(self.root, layout.session_betas(*key), f"Betas of {key[0]} {key[1]}")
            verify_before_use(self.root, relpath, self.verify)
            with self.root.readable(relpath) as source:
                for volume, values in enumerate(
                    iter_volumes(source, self.voxel_masks[key[0]], progress=False)
                ):
                    if volume in by_volume:
                        apply_nan_policy(values, self.nan_policy, self.root.path(relpath))
                    for row in by_volume.get(volume, ()):
                        yield row, values
                    if volume >= last:
                        break
            start = stop

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

    def _item(self, row: int, values: np.ndarray) -> dict[str, Any]:
        columns = self._columns
        name = columns["image_name"][row]
        item: dict[str, Any] = {"betas": torch.from_numpy(np.array(values, dtype=np.float32))}
        item.update({key: value[0] for key, value in self.pairing.batch([name]).items()})
        item.update(
            image_name=name,
            subject=columns["subject"][row],
            session=columns["session"][row],
            trial=int(columns["trial"][row]),
        )
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world_size, worker, num_workers = self.process_shard()
        rows = self.shard(rank, world_size, worker, num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        skip, self._skip, self._yielded = self._skip, 0, 0
        for row, values in self._shuffled(self._rows_in_read_order(rows), rng):
            self._yielded += 1
            if self._yielded <= skip:
                continue
            yield self._item(row, values)
