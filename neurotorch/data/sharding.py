"""The one sharding policy of every iterable dataset and batch sampler in neurotorch.

An epoch puts its ``n`` units (items, batches or chunks) in one global order (a seeded
permutation when shuffling, else ``0 … n-1``; a dataset may supply its own order, as the betas
stream does to read sessions sequentially). Then:

1. **Ranks.** Every rank gets the same number of units, ``ceil(n / world_size)``: a contiguous
   block of the order, the last block wrapping around to the start (as ``DistributedSampler``
   pads). With ``drop_last=True`` every rank gets ``floor(n / world_size)`` and the tail of the
   order is left out instead.
2. **Workers.** A rank's block is split into ``num_workers`` contiguous runs of whole batches of
   ``batch_size`` units, as even as possible, the runs with a batch more first; the rank's short
   batch (its ``units_per_rank % batch_size`` units) ends the first run without a batch more, so
   where they can the runs differ by less than a batch. The longer run goes first because the
   first worker of a rank that starts a session reads it from its start, while the others start
   at seek points, which is a little slower.
   Only one worker's last batch can be short, so a ``DataLoader`` that batches each worker's
   items separately still yields exactly ``ceil(units_per_rank / batch_size)`` batches
   (``floor`` with its ``drop_last``).

The contract that follows, for every rank, worker count and epoch:

* every rank yields the same number of units and batches (DDP never waits on a rank that ran
  out);
* with ``drop_last=False`` every unit appears at least once per epoch, and the only extras are
  the ``ceil(n / world_size) * world_size - n`` padding units at the start of the order;
* ``len()`` of a loader over such a dataset equals the number of batches it yields, for any
  ``num_workers``.

Rank and world size come from `rank_and_world_size`: an initialised process group first, then the
``RANK`` and ``WORLD_SIZE`` variables that ``torchrun`` sets, else a single process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from neurotorch.errors import ShardingError


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process.

    The default process group when one is initialised, else ``RANK``/``WORLD_SIZE`` as set by
    ``torchrun`` (before the group exists), else ``(0, 1)``.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    rank, world_size = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is not None and world_size is not None:
        try:
            return check_rank(int(rank), int(world_size))
        except ValueError as error:
            raise ShardingError(
                f"RANK={rank!r} and WORLD_SIZE={world_size!r} do not describe a process of a "
                "distributed run; unset them or set integers with 0 <= RANK < WORLD_SIZE."
            ) from error
    return 0, 1


def worker_and_count() -> tuple[int, int]:
    """``(worker id, number of workers)`` of the current ``DataLoader`` worker, ``(0, 1)`` outside."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def check_rank(rank: int, world_size: int) -> tuple[int, int]:
    """``(rank, world_size)`` if ``0 <= rank < world_size``, else `ShardingError`."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ShardingError(f"rank {rank} does not lie in a world of size {world_size}.")
    return rank, world_size


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` as a positive ``int``, or `ShardingError`."""
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ShardingError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def units_per_rank(n: int, world_size: int, drop_last: bool = False) -> int:
    """Units every rank yields per epoch: ``ceil(n / world_size)``, or ``floor`` with ``drop_last``."""
    return n // world_size if drop_last else -(-n // world_size)


def batches_per_rank(n: int, world_size: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches every rank yields per epoch (the last one short unless ``drop_last``)."""
    per_rank = units_per_rank(n, world_size, drop_last)
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)


def epoch_order(n: int, epoch: int = 0, seed: int = 0, shuffle: bool = False) -> np.ndarray:
    """The epoch's global order of ``n`` units: a permutation seeded by ``(seed, epoch)``."""
    if shuffle:
        return np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    return np.arange(n)


def shard_positions(
    n: int,
    rank: int = 0,
    world_size: int = 1,
    worker: int = 0,
    num_workers: int = 1,
    *,
    batch_size: int = 1,
    drop_last: bool = False,
) -> np.ndarray:
    """Positions in an epoch's global order of ``n`` units that one (rank, worker) reads, in order.

    See the module docstring for the policy and the contract.
    """
    check_rank(rank, world_size)
    if n < 0:
        raise ShardingError(f"the number of units must be 0 or more, got {n}.")
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise ShardingError(f"worker {worker} does not lie among {num_workers} workers.")
    check_batch_size(batch_size)
    per_rank = units_per_rank(n, world_size, drop_last)
    if n == 0 or per_rank == 0:
        return np.zeros(0, dtype=np.int64)
    mine = np.arange(rank * per_rank, (rank + 1) * per_rank) % n
    full, short = divmod(per_rank, batch_size)
    base, extra = divmod(full, num_workers)
    # whole batches: one more for the first `extra` runs; the short batch ends the first run
    # without one (so the runs differ by less than a batch where they can)
    sizes = [(base + (w < extra)) * batch_size for w in range(num_workers)]
    sizes[extra] += short
    first = sum(sizes[:worker])
    return mine[first : first + sizes[worker]]


def shard(
    n: int,
    rank: int = 0,
    world_size: int = 1,
    worker: int = 0,
    num_workers: int = 1,
    *,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = False,
    batch_size: int = 1,
    drop_last: bool = False,
) -> np.ndarray:
    """Units (``0 … n-1``) one (rank, worker) reads in one epoch, in read order.

    A pure function of its arguments: `epoch_order` composed with `shard_positions`.
    """
    positions = shard_positions(
        n,
        rank,
        world_size,
        worker=worker,
        num_workers=num_workers,
        batch_size=batch_size,
        drop_last=drop_last,
    )
    return epoch_order(n, epoch, seed=seed, shuffle=shuffle)[positions]


_MAX_COUNTED_WORKERS = 255  # DataLoader workers whose passes an auto-advancing dataset counts


class ShardedIterable(IterableDataset):
    """Base of the package's sharded iterable datasets: the shard and the epoch of the calling
    process.

    **Shard.** ``DataLoader`` worker processes do not see their parent's process group, so the
    parent pins its rank and world size (`pin_shard`) before the workers start; neurotorch's
    loader (`neurotorch.data.loader.StreamLoader`) does this on every pass. Explicit ``rank`` and
    ``world_size`` attributes win over both.

    **Epoch.** `set_epoch` (or assigning `epoch`) writes the epoch into a small shared-memory
    tensor that the ``DataLoader`` workers share with the process that made the dataset, so it
    reaches workers that persist across epochs (``persistent_workers=True``) as well as new ones.
    The tensor is made with the dataset, before any worker starts. A dataset with
    ``auto_advance`` (a simulator that should draw fresh data every pass) also moves on by one
    epoch at every pass without a new `set_epoch` (`pass_epoch`): the passes are counted in the
    same tensor, per worker number, so workers started anew for every pass
    (``persistent_workers=False``, fork or spawn) continue the count.
    """

    rank: int | None = None
    world_size: int | None = None
    batch_size: int  # set by the loader, for the datasets that batch their items themselves
    drop_last: bool
    _pinned: tuple[int, int] | None = None
    auto_advance: bool = False

    def __new__(cls, *args: object, **kwargs: object) -> ShardedIterable:
        dataset = super().__new__(cls)
        dataset._epoch_state()  # made with the dataset, so that the workers it starts share it
        return dataset

    def set_batching(self, batch_size: int, drop_last: bool = False) -> None:
        """The ``batch_size`` and ``drop_last`` of the loader that batches these items (workers
        get whole batches); `ShardingError` unless ``batch_size`` is a positive integer."""
        self.batch_size, self.drop_last = check_batch_size(batch_size), bool(drop_last)

    def pin_shard(self) -> None:
        """Record this process's rank and world size for the ``DataLoader`` workers it starts."""
        self._pinned = rank_and_world_size()

    def process_shard(self) -> tuple[int, int, int, int]:
        """``(rank, world_size, worker, num_workers)`` of the calling process and worker."""
        rank, world_size = self._pinned or rank_and_world_size()
        rank = rank if self.rank is None else int(self.rank)
        world_size = world_size if self.world_size is None else int(self.world_size)
        return (*check_rank(rank, world_size), *worker_and_count())

    # -- epochs --------------------------------------------------------------------------------
    def _epoch_state(self) -> torch.Tensor:
        """``[epoch, passes of the main process, passes of worker 0, worker 1, ...]`` in shared
        memory: the passes started since the epoch was set, one counter per process, so that a
        worker started for a new pass (``persistent_workers=False``) continues the count of the
        worker it replaces."""
        state = self.__dict__.get("_shared_epoch")
        if state is None:
            state = torch.zeros(2 + _MAX_COUNTED_WORKERS, dtype=torch.int64).share_memory_()
            self.__dict__["_shared_epoch"] = state
        return state

    @property
    def epoch(self) -> int:
        """The epoch last set (by `set_epoch`, in this process or the one that made the workers)."""
        return int(self._epoch_state()[0])

    @epoch.setter
    def epoch(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ShardingError(f"epoch must be an integer >= 0, got {value!r}.")
        state = self._epoch_state()
        state[0] = int(value)
        state[1:] = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch of the next passes (their order, seeds, fresh draws)."""
        self.epoch = epoch

    def pass_epoch(self) -> int:
        """The epoch of the pass this process starts now (call once at the start of a pass).

        The epoch last set; with ``auto_advance``, plus the passes this process (the main process,
        or the worker of this number) has started since.
        """
        state = self._epoch_state()
        if not self.auto_advance:
            return int(state[0])
        info = get_worker_info()
        if info is not None and info.num_workers > _MAX_COUNTED_WORKERS:
            raise ShardingError(
                f"{type(self).__name__} draws fresh data every pass and counts the passes of up "
                f"to {_MAX_COUNTED_WORKERS} workers; use fewer workers (got {info.num_workers})."
            )
        slot = 1 if info is None else 2 + info.id
        passes = int(state[slot])
        state[slot] = passes + 1
        return int(state[0]) + passes


#: What a resume position depends on besides the epoch: a position in another shard counts other
#: items (`ResumableIterable`, `neurotorch.data.sampling.GroupedBatchSampler`).
SHARD_SHAPE = ("world_size", "batch_size", "drop_last")


def check_same_shard(what: str, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """`ShardingError` unless a position taken in the shard ``saved`` can resume in ``now`` (the
    keys of `SHARD_SHAPE` that ``saved`` records: older states record fewer)."""
    keys = [key for key in SHARD_SHAPE if key in saved]
    differ = [key for key in keys if saved[key] != now[key]]
    if differ:
        was = ", ".join(f"{key}={saved[key]}" for key in keys)
        has = ", ".join(f"{key}={now[key]}" for key in keys)
        raise ShardingError(
            f"{what} cannot resume midway through this epoch: its state was taken with {was} "
            f"and this run has {has}, so the items already served are other items here. Resume "
            f"with the same {', '.join(differ)} (the number of devices for world_size), or start "
            "a fresh epoch without the checkpoint's data position."
        )


class ResumableIterable(ShardedIterable):
    """A `ShardedIterable` whose pass resumes where a state was taken, in any epoch.

    `state_dict` is the number of items this process (this ``DataLoader`` worker) has yielded in
    its current pass. torchdata's ``StatefulDataLoader`` keeps it per worker with every batch;
    a dataset restored by `load_state_dict` starts its next pass after those items (without
    them, a restore replays the items before the resume point to skip them: simulating or
    reading each one again). Subclasses give the items of a pass from a position on
    (`_items_after`); ``__iter__`` counts them.

    The count of a pass starts in ``__iter__`` itself, not at the first item: a persistent
    worker reports its state right after ``iter(dataset)``, and a count still holding the last
    pass's would resume the next run past that worker's items of this pass.
    """

    _yielded: int = 0  # items of the current pass yielded by this process
    _skip: int = 0  # items the next pass leaves out (a restored resume point)
    _saved_shard: dict[str, Any] | None = None  # the shard that state was taken in

    def state_dict(self) -> dict[str, Any]:
        """Items this process (this worker) has yielded in its current pass, and the shape of
        its shard (a position means nothing in another shard)."""
        return {"yielded": self._yielded, **self._shard_shape()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next pass continues after the ``yielded`` items of the pass the state
        was taken in (`ShardingError` then if the shard's shape differs)."""
        self._skip = int(state["yielded"])
        self._saved_shard = {k: state[k] for k in SHARD_SHAPE if k in state}

    def _shard_shape(self) -> dict[str, Any]:
        return {
            "world_size": self.process_shard()[1],
            "batch_size": getattr(self, "batch_size", 0),
            "drop_last": bool(getattr(self, "drop_last", False)),
        }

    def __iter__(self) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        saved, self._saved_shard = self._saved_shard, None
        if skip and saved:
            check_same_shard(type(self).__name__, saved, self._shard_shape())
        self._yielded = skip
        return self._counted(self._items_after(skip))

    def _counted(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self._yielded += 1
            yield item

    def _items_after(self, skip: int) -> Iterator[Any]:
        """This process's items of the current pass, after its first ``skip``."""
        raise NotImplementedError
