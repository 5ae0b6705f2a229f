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
datasets that keep their position (`neurotorch.data.sharding.ResumableIterable`: the betas, simulated
M/EEG and connectome streams).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from neurotorch.data.collate import collate_items
from neurotorch.data.sharding import ShardedIterable
from neurotorch.errors import ShardingError

_SPENT = object()  # marks a restored pass with nothing left


class StatefulLoader(StatefulDataLoader):
    """torchdata's ``StatefulDataLoader`` (saves and restores its position mid-epoch), without the
    deprecation warning its constructor emits on current torch (an internal call of torchdata).

    ``fit_epoch``, when set (a DataModule sets it on its training loader), says at every pass
    which epoch the pass serves (``None``: an empty pass). A restored position in another epoch
    is dropped and the pass starts that epoch afresh; a restored position at the end of this
    epoch gives an empty pass. Lightning restores a loader's position whenever it trains by
    steps, also at the end of an epoch (every batch drawn, or cut short by
    ``limit_train_batches``), and then either moves on to the next epoch or first finishes the
    restored one (`neurotorch.lightning.base.NeurotorchDataModule._pass_epoch`).
    """

    fit_epoch: Callable[[], int | None] | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
            super().__init__(*args, **kwargs)
        self._restored_at: tuple[int, bool] | None = None  # (epoch, its batches all drawn)

    def __iter__(self):
        restored, self._restored_at = self._restored_at, None
        sampler = self.batch_sampler
        if self.fit_epoch is not None and hasattr(sampler, "set_epoch"):
            epoch = self.fit_epoch()
            if epoch is None or restored == (epoch, True):
                self.next_iter_state = None
                return iter(())
            if restored is None or restored[0] != epoch:
                self.next_iter_state = None
                sampler.set_epoch(epoch)
                inner = getattr(sampler, "sampler", None)
                if isinstance(inner, DistributedSampler):  # Lightning set it to its own count
                    inner.set_epoch(epoch)
        return super().__iter__()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume where ``state_dict`` was taken. A state taken after a pass had ended starts
        the next pass afresh: its batch sampler is told where it stood (a
        `neurotorch.data.sampling.GroupedBatchSampler` then starts the next epoch), where
        torchdata would replay the ended pass with workers or restore an empty one without.
        Mid-pass, a loader with another ``num_workers`` than the state's resumes a map-style
        pass from its batch sampler alone and refuses a stream's (`ShardingError`: a stream's
        position is kept per worker), where torchdata fails on an assertion."""
        main = state_dict.get("_snapshot", {}).get("_main_snapshot", state_dict)
        sampler_state = main.get("_index_sampler_state")
        if isinstance(sampler_state, dict) and "epoch" in sampler_state:
            drawn = bool(state_dict.get("_iterator_finished")) or int(
                sampler_state.get("yielded", 0)
            ) >= len(self.batch_sampler)
            self._restored_at = (int(sampler_state["epoch"]), drawn)
        finished = bool(state_dict.get("_iterator_finished"))
        saved_workers = len(state_dict.get("_snapshot", {}).get("_worker_snapshots", ()))
        if not finished and saved_workers == self.num_workers:
            super().load_state_dict(state_dict)
            return
        if not finished and not hasattr(self.batch_sampler, "load_state_dict"):
            raise ShardingError(
                f"This loader's state was saved with num_workers={saved_workers} and the loader "
                f"has num_workers={self.num_workers}: a stream's position is kept per worker. "
                f"Resume with num_workers={saved_workers} (the next epochs may use any number)."
            )
        # an ended pass, or a map-style pass resumed with other workers: its batch sampler holds
        # the position (the batches handed out), which does not depend on the workers
        super().load_state_dict({})  # forgets the current pass
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
        self._ended_epoch: int | None = None  # restored from a state taken after a pass ended

    def __iter__(self):
        self.dataset.pin_shard()
        ended, self._ended_epoch = self._ended_epoch, None
        following = self.fit_epoch is not None and self.advance_epoch
        if following:
            epoch = self.fit_epoch()
            if epoch is None or ended == epoch:
                self._restored, self.next_iter_state = False, None
                return iter(())
            if self._restored and self.dataset.epoch != epoch:  # a pass the fit has left
                self._restored, self.next_iter_state = False, None
            if not self._restored:
                self._epochs_started = epoch
        resumes = self._restored and self.advance_epoch
        if self.advance_epoch:
            if not self._restored:
                self.dataset.set_epoch(self._epochs_started)
            self._epochs_started = self.dataset.epoch + 1
        self._restored = False
        batches = super().__iter__()
        return self._unless_spent(batches, then_next=not following) if resumes else batches

    def _unless_spent(self, batches: Iterator[Any], then_next: bool) -> Iterator[Any]:
        """The rest of a restored pass. If nothing is left (the state was taken after its last
        batch, before its end was seen, e.g. a step checkpoint), the next epoch, unless a fit
        says which epoch each pass is (then the fit finishes this one)."""
        first = next(batches, _SPENT)
        if first is _SPENT:
            if then_next:
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
            self._ended_epoch = state_dict["epoch"]
            return
        super().load_state_dict(state_dict["loader"])
        self._restored = True
