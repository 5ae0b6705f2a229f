"""`StreamLoader`: the ``DataLoader`` of neurotorch's sharded iterable datasets.

A ``StatefulDataLoader`` (torchdata) that, on every pass,

* pins the rank and world size into the dataset before its workers start (workers cannot see the
  process group; see `neurotorch.data.sharding.ShardedIterable`);
* hands its ``batch_size`` and ``drop_last`` to a dataset that yields items, so workers get whole
  batches and ``len(loader)`` is the number of batches it yields;
* optionally advances the dataset's epoch (``set_epoch``), so shuffles change from pass to pass
  and a Lightning checkpoint records where the stream stood.

Its ``state_dict`` (saved by Lightning in checkpoints, or by hand) holds the epoch counter and the
position of every worker; ``load_state_dict`` resumes mid-epoch with no item lost or repeated for
datasets that implement ``state_dict``/``load_state_dict`` (`neurotorch.data.fmri.stream.BetasStream`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from torchdata.stateful_dataloader import StatefulDataLoader

from neurotorch.data.collate import collate_items
from neurotorch.data.sharding import ShardedIterable

_SPENT = object()  # marks a restored pass with nothing left


class StatefulLoader(StatefulDataLoader):
    """torchdata's ``StatefulDataLoader`` (saves and restores its position mid-epoch), without the
    deprecation warning its constructor emits on current torch (an internal call of torchdata)."""

    def __init__(self, *args: Any, **kwargs: Any):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
            super().__init__(*args, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume where ``state_dict`` was taken. A state taken after a pass had ended starts
        the next pass afresh: its batch sampler is told where it stood (a
        `neurotorch.data.sampling.GroupedBatchSampler` then starts the next epoch), where
        torchdata would replay the ended pass with workers or restore an empty one without."""
        if not state_dict.get("_iterator_finished"):
            super().load_state_dict(state_dict)
            return
        super().load_state_dict({})  # forgets the current pass
        main = state_dict.get("_snapshot", {}).get("_main_snapshot", state_dict)
        sampler_state = main.get("_index_sampler_state")
        if sampler_state is not None and hasattr(self.batch_sampler, "load_state_dict"):
            self.batch_sampler.load_state_dict(sampler_state)


class StreamLoader(StatefulLoader):
    """Loader of a `ShardedIterable` (see the module docstring).

    Parameters
    ----------
    dataset
        A sharded iterable dataset.
    batch_size
        Items per batch; ``None`` when the dataset yields whole batches itself.
    advance_epoch
        Call ``dataset.set_epoch`` with a counter that grows by one every pass (training);
        ``False`` keeps the dataset's epoch (validation and test).
    drop_last, **kwargs
        As in ``DataLoader``; ``collate_fn`` defaults to `collate_items` when ``batch_size`` is set.
    """

    def __init__(
        self,
        dataset: ShardedIterable,
        batch_size: int | None = 1,
        *,
        drop_last: bool = False,
        advance_epoch: bool = True,
        **kwargs: Any,
    ):
        if batch_size is not None:
            kwargs.setdefault("collate_fn", collate_items)
            dataset.set_batching(batch_size, drop_last)
        super().__init__(dataset, batch_size, drop_last=drop_last, **kwargs)
        self.advance_epoch = advance_epoch
        self._epochs_started = 0
        self._restored = False

    def __iter__(self):
        self.dataset.pin_shard()
        resumes = self._restored and self.advance_epoch
        if self.advance_epoch:
            if not self._restored:
                self.dataset.set_epoch(self._epochs_started)
            self._epochs_started = self.dataset.epoch + 1
        self._restored = False
        batches = super().__iter__()
        return self._unless_spent(batches) if resumes else batches

    def _unless_spent(self, batches: Iterator[Any]) -> Iterator[Any]:
        """The rest of a restored pass; if nothing is left (the state was taken after its last
        batch, before its end was seen, e.g. Lightning's step checkpoint), the next epoch."""
        first = next(batches, _SPENT)
        if first is _SPENT:
            yield from self.__iter__()
            return
        yield first
        yield from batches

    def start_at_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (and the passes after it the epochs after it)."""
        self._epochs_started = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"loader": super().state_dict(), "epoch": self.dataset.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume where ``state_dict`` was taken: mid-epoch, the rest of that epoch; after a pass
        had ended, the next pass (the next epoch, unless the loader keeps its epoch)."""
        self.dataset.set_epoch(state_dict["epoch"])
        if state_dict["loader"].get("_iterator_finished"):
            self._epochs_started, self._restored = state_dict["epoch"] + 1, False
            return
        super().load_state_dict(state_dict["loader"])
        self._restored = True
