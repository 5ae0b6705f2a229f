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
from typing import Any

from torchdata.stateful_dataloader import StatefulDataLoader

from neurotorch.data.collate import collate_items
from neurotorch.data.sharding import ShardedIterable


class StatefulLoader(StatefulDataLoader):
    """torchdata's ``StatefulDataLoader`` (saves and restores its position mid-epoch), without the
    deprecation warning its constructor emits on current torch (an internal call of torchdata)."""

    def __init__(self, *args: Any, **kwargs: Any):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
            super().__init__(*args, **kwargs)


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
        if self.advance_epoch:
            if not self._restored:
                self.dataset.set_epoch(self._epochs_started)
            self._epochs_started = self.dataset.epoch + 1
        self._restored = False
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        return {"loader": super().state_dict(), "epoch": self.dataset.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.dataset.set_epoch(state_dict["epoch"])
        super().load_state_dict(state_dict["loader"])
        self._restored = True
