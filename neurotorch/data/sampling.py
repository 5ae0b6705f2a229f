"""`GroupedBatchSampler`: batches that each hold one group's items (e.g. one subject's trials).

Subjects have different voxel counts, so a batch of betas can only be stacked within a subject.
The sampler shards whole batches across distributed ranks, giving every rank the same number of
batches (the last ones wrap around), so DDP never waits on a rank that ran out. It shards itself:
run Lightning with ``Trainer(use_distributed_sampler=False)`` when you pass it in a DataLoader.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from neurotorch.data.stream import distributed_rank_and_size


class GroupedBatchSampler(Sampler[list[int]]):
    """Seeded batches of indices, each drawn from one group.

    Parameters
    ----------
    groups
        Group label of every dataset index.
    batch_size
        Items per batch (a group's last batch may be smaller unless ``drop_last``).
    shuffle
        Shuffle items within groups and the order of batches, anew each epoch (`set_epoch`).
    seed
        Seed of the shuffling.
    drop_last
        Drop each group's incomplete last batch.
    rank, world_size
        Shard of this process; default from ``torch.distributed`` when initialised.
    """

    def __init__(
        self,
        groups: Sequence | np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.groups = np.asarray(groups)
        self.batch_size, self.shuffle, self.seed, self.drop_last = (
            int(batch_size),
            shuffle,
            seed,
            drop_last,
        )
        self._rank, self._world_size = rank, world_size
        self.epoch = 0

    @classmethod
    def for_dataset(cls, dataset, batch_size: int, **kwargs) -> GroupedBatchSampler:
        """Batches of one subject each, for a `BetasDataset`."""
        return cls(dataset.items["subject"].to_numpy(), batch_size, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
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

    def _shard(self) -> tuple[int, int]:
        rank, size = distributed_rank_and_size()
        return (rank if self._rank is None else self._rank), (
            size if self._world_size is None else self._world_size
        )

    def __len__(self) -> int:
        return -(-len(self._batches()) // self._shard()[1])

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        rank, size = self._shard()
        per_rank = -(-len(batches) // size)
        for k in range(rank * per_rank, (rank + 1) * per_rank):
            if batches:
                yield batches[k % len(batches)].tolist()
