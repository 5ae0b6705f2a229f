"""Batches of dict items: a pre-batched result of ``__getitems__`` passes through unchanged.

`BetasDataset.__getitems__` reads a whole batch in one vectorised read and returns an `ItemBatch`:
a lazy sequence of per-item dicts (so torch's ``default_collate`` still works on it) that also
carries the already-stacked batch, which `collate_items` returns without copying again.
A stream that knows its batch size writes each item's tensor into a row of the batch being
filled (`BatchRows`), and `collate_items` returns those rows as the batch without copying them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

from neurotorch.errors import MixedBatchError


class ItemBatch(Sequence):
    """A batch as one dict of stacked tensors / lists, viewed as a sequence of item dicts."""

    def __init__(self, data: dict[str, Any], length: int):
        self.data = data
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, k: int) -> dict[str, Any]:  # type: ignore[override]
        if not -self._length <= k < self._length:
            raise IndexError(k)
        return {key: value[k] for key, value in self.data.items()}


def batch_tensor(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor for a batch: in shared memory inside a ``DataLoader`` worker, so
    that sending it to the main process copies nothing (what ``default_collate`` does); in the
    main process allocated by numpy, which asks the kernel for transparent huge pages for large
    arrays (torch's allocator does not): whole-brain map-style batches ran at 0.22x a raw memmap
    read in 4 KiB pages and at 0.98x in huge pages (``scripts/bench_scale.py``, map-style row)."""
    if get_worker_info() is None:
        try:
            numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        except TypeError:  # a dtype numpy does not have (bfloat16)
            return torch.empty(tuple(shape), dtype=dtype)
        return torch.from_numpy(np.empty(tuple(shape), dtype=numpy_dtype))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).new(storage).view(tuple(shape))


_ROW_MARK = "_neurotorch_batch"  # set on the rows that BatchRows hands out: their batch


class BatchRows:
    """Rows of the batch being filled: `place` copies each item's values into the next row of
    a batch tensor (`batch_tensor`: shared memory in a ``DataLoader`` worker) and returns the
    row, so that `collate_items` takes ``batch_size`` consecutive rows as the batch without a
    second copy. The copy happens as each item is made, while the reader works ahead, not all
    at once when the batch is complete. A fresh batch every ``batch_size`` rows (or when the
    values' shape or dtype changes): a row handed out is never written again."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self._batch: torch.Tensor | None = None
        self._filled = 0

    def place(self, values: np.ndarray) -> torch.Tensor:
        """``values`` in the next row (a view of the batch, marked with it)."""
        batch = self._batch
        if (
            batch is None
            or self._filled == self.batch_size
            or tuple(batch.shape[1:]) != values.shape
            or batch.numpy().dtype != values.dtype
        ):
            dtype = torch.from_numpy(values[:0]).dtype
            batch = self._batch = batch_tensor((self.batch_size, *values.shape), dtype)
            self._filled = 0
        row = batch[self._filled]
        row.numpy()[...] = values
        setattr(row, _ROW_MARK, batch)
        self._filled += 1
        return row


def _rows_as_batch(values: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The batch whose rows ``0 … len(values) - 1`` ``values`` are, in order and in place, when
    the first is a row `BatchRows` handed out; otherwise ``None`` (they are copied: a user's
    tensors are never aliased)."""
    batch = getattr(values[0], _ROW_MARK, None)
    if batch is None or len(values) > len(batch):
        return None
    for k, value in enumerate(values):
        if not (
            value.data_ptr() == batch[k].data_ptr()
            and value.shape == batch.shape[1:]
            and value.is_contiguous()
        ):
            return None
    return batch[: len(values)]


def stack_into(values: Sequence[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """``torch.stack(values, out=out)``, copied item by item through numpy where it can: one
    memcpy per item on this thread, where torch's parallel copy keeps its OpenMP threads
    spinning (a tenth of a whole-brain stream's CPU, ``scripts/bench_scale.py``)."""
    try:
        target = out.numpy()
        for k, value in enumerate(values):
            target[k] = value.numpy()
    except (TypeError, RuntimeError):  # a dtype numpy lacks, a GPU tensor, one that needs grad
        torch.stack(list(values), out=out)
    return out


def _stackable(values: list[Any]) -> bool:
    first = values[0]
    return all(isinstance(v, torch.Tensor) and v.shape == first.shape for v in values)


def collate_items(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate dict items: an `ItemBatch` as is; otherwise tensors of one shape are stacked (in
    the dtype they promote to when they differ), numbers become tensors and everything else
    (strings, ragged tensors, lists) stays a list. fMRI items (``betas`` and ``subject``) of
    several subjects are refused with `MixedBatchError`: their voxels do not correspond."""
    if isinstance(batch, ItemBatch):
        return batch.data
    if "betas" in batch[0] and "subject" in batch[0]:
        subjects = list(dict.fromkeys(item["subject"] for item in batch))
        if len(subjects) > 1:
            raise MixedBatchError(
                f"A batch of {len(batch)} items mixes subjects {', '.join(subjects)}: their betas "
                "do not share voxels. Stream one subject at a time, or load batches of one "
                "subject each from the map-style dataset: dataset.loader(batch_size=32, "
                "shuffle=True, num_workers=2)."
            )
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if isinstance(values[0], torch.Tensor):
            if (rows := _rows_as_batch(values)) is not None:
                out[key] = rows
            elif _stackable(values) and len({v.dtype for v in values}) == 1:
                batched = batch_tensor((len(values), *values[0].shape), values[0].dtype)
                out[key] = stack_into(values, batched)
            elif _stackable(values):  # mixed dtypes: promoted, never cast to the first one's
                out[key] = torch.stack(values)
            else:
                out[key] = values
        elif isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            out[key] = default_collate(values)
        else:
            out[key] = values
    return out
