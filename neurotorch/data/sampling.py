"""`GroupedBatchSampler`: batches that each hold one group's items (e.g. one subject's trials).

Subjects have different voxel counts, so a batch of betas can only be stacked within a subject.
The sampler shards whole batches across distributed ranks with `neurotorch.data.sharding` (the
unit is a batch): every rank gets the same number of batches (the last ones wrap around to the
first), so DDP never waits on a rank that ran out. Under Lightning, the distributed sampler
Lightning injects only tells it the rank, world size and epoch.

Epochs: a shuffled sampler draws a new order at every pass, the epoch set by ``set_epoch`` (as
Lightning and ``DistributedSampler`` users do) or, when nobody sets it, the next epoch by itself
(a plain ``DataLoader`` loop). Its ``state_dict`` (saved by torchdata's ``StatefulDataLoader``
with the loader's) holds the epoch of the current pass and the batches it has yielded, so a
resumed pass continues that epoch's order where it stopped, in any epoch, with any number of
``DataLoader`` workers; with the world size, batch size and ``drop_last`` they were counted
in, which a mid-epoch resume must keep.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from typing import Any

import numpy as np
from torch.utils.data import BatchSampler, DistributedSampler, Sampler, SequentialSampler

from neurotorch.data.sharding import (
    check_batch_size,
    check_same_shard,
    rank_and_world_size,
    shard_positions,
    units_per_rank,
)
from neurotorch.errors import ParameterError


class GroupedBatchSampler(BatchSampler):
    """Seeded batches of indices, each drawn from one group.

    Parameters
    ----------
    sampler
        Only tells the shard: a ``DistributedSampler`` (as Lightning injects under DDP) gives
        its rank, world size and epoch; anything else (e.g. ``range(len(dataset))``) means the
        default process group's rank and size, or a single process.
    batch_size
        Items per batch (a group's last batch may be smaller unless ``drop_last``).
    drop_last
        Drop each group's incomplete last batch.
    groups
        Group label of every dataset index; ``None``: the ``batch_groups`` of the dataset the
        sampler draws from (a `BetasDataset` groups by subject), or one group when it has none
        (so that Lightning can re-create the sampler around a sampler of its own, e.g. for
        ``Trainer.predict``).
    shuffle
        Shuffle items within groups and the order of batches, anew each epoch: the epoch set by
        `set_epoch` (as Lightning does), or the next one at every pass when no one sets it (a
        plain ``DataLoader`` loop).
    seed
        Seed of the shuffling.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        batch_size: int,
        drop_last: bool = False,
        *,
        groups: Sequence | np.ndarray | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ):
        super().__init__(sampler, check_batch_size(batch_size), drop_last)
        self.groups = np.asarray(_groups_of(sampler) if groups is None else groups)
        self.shuffle, self.seed = shuffle, seed
        self.epoch = 0
        self._epoch_was_set, self._passes = False, 0
        self._pass_epoch, self._yielded = 0, 0  # the current pass: its epoch, batches handed out
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip) after a restore

    @classmethod
    def for_dataset(cls, dataset, batch_size: int, **kwargs) -> GroupedBatchSampler:
        """Batches of one group each (one subject's trials for a `BetasDataset`)."""
        return cls(SequentialSampler(dataset), batch_size, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._epoch_was_set = True

    def state_dict(self) -> dict[str, Any]:
        """The epoch of the current pass and how many of its batches were handed out (with the
        shape of the shard they were counted in)."""
        return {
            "epoch": self._pass_epoch,
            "yielded": self._yielded,
            "seed": self.seed,
            **self._shard_shape(),
        }

    def _shard_shape(self) -> dict[str, Any]:
        return {
            "world_size": self._shard()[1],
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next pass is epoch ``state["epoch"]`` from its batch ``state["yielded"]``,
        or the next epoch from its start when that pass had handed out all its batches (unless a
        different epoch is then set, which starts that epoch from its first batch).
        `ShardingError` for a pass left midway in a shard of another shape (world size, batch
        size, ``drop_last``): its batches were other batches."""
        self.seed = int(state.get("seed", self.seed))
        epoch, yielded = int(state["epoch"]), int(state["yielded"])
        _, size, _ = self._shard()
        finished = yielded >= units_per_rank(len(self._rank_batches(epoch, size)), size)
        if yielded and not finished:
            check_same_shard(type(self).__name__, state, self._shard_shape())
        self.set_epoch(epoch + 1 if finished else epoch)
        self._resume = None if finished else (epoch, yielded)

    def _shard(self) -> tuple[int, int, int]:
        """(rank, world size, epoch)."""
        if isinstance(self.sampler, DistributedSampler):
            return self.sampler.rank, self.sampler.num_replicas, max(self.epoch, self.sampler.epoch)
        rank, size = rank_and_world_size()
        return rank, size, self.epoch

    def _batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for group in dict.fromkeys(self.groups.tolist()):
            members = np.flatnonzero(self.groups == group)
            if self.shuffle:
                members = rng.permutation(members)
            stop = len(members) - len(members) % self.batch_size if self.drop_last else len(members)
            batches += [members[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _rank_batches(self, epoch: int, world_size: int) -> list[np.ndarray]:
        """The epoch's batches, split so that the ranks get equal counts without a repeat."""
        batches = self._batches(epoch)
        return batches if self.drop_last else split_for_ranks(batches, world_size)

    def __len__(self) -> int:
        _, size, epoch = self._shard()
        return units_per_rank(len(self._rank_batches(epoch, size)), size)

    def __iter__(self) -> Iterator[list[int]]:
        if self._passes and not self._epoch_was_set:  # nobody sets epochs: move on by itself
            self.epoch += 1
        self._epoch_was_set, self._passes = False, self._passes + 1
        rank, size, epoch = self._shard()
        resume, self._resume = self._resume, None
        skip = resume[1] if resume is not None and resume[0] == epoch else 0
        batches = self._rank_batches(epoch, size)
        self._pass_epoch, self._yielded = epoch, skip
        for k in shard_positions(len(batches), rank, size):
            if skip:
                skip -= 1
                continue
            self._yielded += 1
            yield batches[k].tolist()


def split_for_ranks(batches: list[np.ndarray], world_size: int) -> list[np.ndarray]:
    """``batches`` with the largest ones halved (in place, in order) until their count is a
    multiple of ``world_size``: every rank then gets the same number of batches and no item is
    served twice (padding would repeat a whole batch on the ranks short of one, and a repeated
    trial counts twice in a statistic summed over ranks). Where too few items remain to split,
    the ranks pad as before."""
    batches = list(batches)
    target = -(-len(batches) // world_size) * world_size
    while len(batches) < target:
        k = max(range(len(batches)), key=lambda i: len(batches[i]), default=None)
        if k is None or len(batches[k]) < 2:
            break
        half = -(-len(batches[k]) // 2)
        batches[k : k + 1] = [batches[k][:half], batches[k][half:]]
    return batches


def _groups_of(sampler: Sampler | Sized) -> np.ndarray:
    """The group of every item of the dataset a (sequential or distributed) sampler draws from:
    its ``batch_groups``, else one group."""
    dataset = getattr(sampler, "data_source", None) or getattr(sampler, "dataset", None)
    if dataset is None:
        raise ParameterError(
            "GroupedBatchSampler needs groups=, or a sampler over a dataset (its batch_groups)."
        )
    groups = getattr(dataset, "batch_groups", None)
    return np.zeros(len(dataset), dtype=np.int64) if groups is None else np.asarray(groups)
