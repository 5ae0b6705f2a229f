"""Batches of dict items: a pre-batched result of ``__getitems__`` passes through unchanged.

`BetasDataset.__getitems__` reads a whole batch in one vectorised read and returns an `ItemBatch`:
a lazy sequence of per-item dicts (so torch's ``default_collate`` still works on it) that also
carries the already-stacked batch, which `collate_items` returns without copying again.
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
            if _stackable(values) and len({v.dtype for v in values}) == 1:
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
