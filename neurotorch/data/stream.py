"""`BetasStream`: trials streamed straight from the ``.nii.gz`` files, no prepared store.

For one-pass work and data too big to prepare. Each epoch the selected trials are put in one
global order (sessions in a seeded order when shuffling, trials in volume order within a
session), and cut into ``world_size`` contiguous shards of equal length (the last shard wraps
around to the start, as ``DistributedSampler`` pads, so every rank yields the same number of
items and DDP never waits on a rank that ran out). A rank's shard is cut again into contiguous
pieces, one per ``DataLoader`` worker. A worker reads its sessions sequentially (one pass per
session, stopping after its last trial) and passes trials through a seeded shuffle buffer whose
seed changes with `BetasStream.set_epoch`.

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
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from neurotorch.data.betas import as_subject_list
from neurotorch.data.collate import collate_items
from neurotorch.data.store import DEFAULT_NC_DESC, open_source, voxel_selection
from neurotorch.data.trials import StimulusPairing, select_trials
from neurotorch.fmri import layout
from neurotorch.fmri.datafiles import require, resolve_root
from neurotorch.fmri.nan_policy import DEFAULT_NAN_POLICY, apply_nan_policy, check_nan_policy
from neurotorch.fmri.rois import RoiQuery
from neurotorch.fmri.session_checks import check_session_files
from neurotorch.fmri.splits import SHARED_POOL
from neurotorch.io.integrity import check_verify_mode, verify_before_use
from neurotorch.io.nifti import iter_volumes
from neurotorch.io.storage import DataRoot


def distributed_rank_and_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class BetasStream(IterableDataset):
    """Iterable-style trials of one or more subjects, read volume by volume from ``.nii.gz``.

    Items are dicts like `neurotorch.data.betas.BetasDataset`'s (``betas``, ``embedding``,
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
    rank, world_size
        Shard of this process; default from ``torch.distributed`` when initialised.
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
        self.shuffle_buffer, self.seed = int(shuffle_buffer), int(seed)
        self.nan_policy = check_nan_policy(nan_policy)
        self._rank, self._world_size = rank, world_size
        self.epoch = 0
        self._yielded = 0
        self._skip = 0

    # -- sharding ----------------------------------------------------------------------------------
    def _rank_and_size(self) -> tuple[int, int]:
        found_rank, found_size = distributed_rank_and_size()
        rank = found_rank if self._rank is None else self._rank
        size = found_size if self._world_size is None else self._world_size
        return rank, size

    def items_per_rank(self) -> int:
        """Items every rank yields per epoch: ``ceil(n_trials / world_size)``."""
        return -(-len(self.trials) // self._rank_and_size()[1])

    def __len__(self) -> int:
        """Items this rank yields per epoch (all its workers together)."""
        return self.items_per_rank()

    def epoch_order(self) -> np.ndarray:
        """Rows of `trials` in this epoch's global order (sessions shuffled when shuffling)."""
        order = np.arange(len(self.sessions))
        if self.shuffle_buffer > 1:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.sessions))
        session_of_trial = pd.MultiIndex.from_frame(self.trials[["subject", "session"]])
        position = pd.Series(np.argsort(order), index=pd.MultiIndex.from_tuples(self.sessions))
        rank_of_session = position.reindex(session_of_trial).to_numpy()
        return np.lexsort((self.trials["trial"].to_numpy(), rank_of_session))

    def shard(
        self, rank: int, world_size: int, worker: int = 0, num_workers: int = 1
    ) -> np.ndarray:
        """Trial-table rows of one (rank, worker) for the current epoch, in read order."""
        order = self.epoch_order()
        per_rank = -(-len(order) // world_size)
        if len(order):
            mine = np.take(order, np.arange(rank * per_rank, (rank + 1) * per_rank), mode="wrap")
        else:
            mine = order
        return np.array_split(mine, num_workers)[worker]

    # -- epochs and resume -------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (changes the session order and the shuffle buffer's seed)."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        """Position in the stream: epoch and items yielded so far in this epoch (this worker)."""
        return {"epoch": self.epoch, "yielded": self._yielded, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration continues after the ``yielded`` items of ``epoch``."""
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))
        self._skip = int(state["yielded"])

    # -- iteration ---------------------------------------------------------------------------------
    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

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
            with open_source(self.root, relpath) as source:
                for volume, values in enumerate(iter_volumes(source, self.voxel_masks[key[0]])):
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
        rank, world_size = self._rank_and_size()
        worker, num_workers = self._worker()
        rows = self.shard(rank, world_size, worker, num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        skip, self._skip, self._yielded = self._skip, 0, 0
        for row, values in self._shuffled(self._rows_in_read_order(rows), rng):
            self._yielded += 1
            if self._yielded <= skip:
                continue
            yield self._item(row, values)


class StreamLoader(StatefulDataLoader):
    """A ``StatefulDataLoader`` for `BetasStream` that advances the stream's epoch on every pass.

    Its ``state_dict`` (saved by Lightning in checkpoints, or by hand) holds the epoch counter and
    the position of every worker; ``load_state_dict`` resumes mid-epoch with no trial lost or
    repeated. Uses `collate_items` by default.
    """

    def __init__(self, dataset: BetasStream, *args: Any, **kwargs: Any):
        kwargs.setdefault("collate_fn", collate_items)
        super().__init__(dataset, *args, **kwargs)
        self._epochs_started = 0
        self._restored = False

    def __iter__(self):
        if not self._restored:
            self.dataset.set_epoch(self._epochs_started)
        self._restored = False
        self._epochs_started = self.dataset.epoch + 1
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        return {"loader": super().state_dict(), "epoch": self.dataset.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.dataset.set_epoch(state_dict["epoch"])
        super().load_state_dict(state_dict["loader"])
        self._restored = True
