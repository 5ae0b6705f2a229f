"""Collation of dict items: tensors of one shape stacked into a fresh batch (allocated by numpy in
the main process, in shared memory in a worker), whatever their dtype, against torch.stack; rows
that BatchRows wrote into their batch taken as the batch, and nothing else aliased."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from neurotorch.data.collate import BatchRows, batch_tensor, collate_items


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.int64, torch.bool, torch.bfloat16]
)
def test_tensors_of_every_dtype_are_stacked_as_torch_stacks_them(dtype):
    generator = torch.Generator().manual_seed(0)
    values = [(torch.randn(3, 5, generator=generator) * 10).to(dtype) for _ in range(7)]
    batch = collate_items([{"x": v, "name": f"item{k}", "n": k} for k, v in enumerate(values)])
    assert batch["x"].dtype == dtype and batch["x"].shape == (7, 3, 5)
    assert torch.equal(batch["x"], torch.stack(values))
    assert batch["name"] == [f"item{k}" for k in range(7)] and batch["n"].tolist() == list(range(7))
    changed = values[0].logical_not() if dtype == torch.bool else values[0] + 1
    values[0].copy_(changed)
    assert not torch.equal(batch["x"][0], values[0])  # the batch owns its memory


def test_items_of_mixed_dtypes_are_promoted_not_cast_to_the_first_ones():
    items = [{"x": torch.tensor([1, 2])}, {"x": torch.tensor([0.5, 2.75])}]
    batch = collate_items(items)["x"]
    assert batch.dtype == torch.float32  # int64 with float32 promotes to float32
    assert torch.equal(batch, torch.tensor([[1.0, 2.0], [0.5, 2.75]]))  # 2.75 not cut to 2


def test_a_batch_tensor_has_the_shape_and_dtype_asked_for_and_is_writable():
    out = batch_tensor((4, 6), torch.float32)
    assert out.shape == (4, 6) and out.dtype == torch.float32
    out.fill_(2.5)
    assert float(out.sum()) == 2.5 * 24


class _Items(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> dict:
        return {"x": torch.full((3,), float(index)), "i": index}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_from_a_dataloader_equal_the_items_with_and_without_workers(num_workers):
    loader = DataLoader(_Items(), batch_size=4, collate_fn=collate_items, num_workers=num_workers)
    batches = list(loader)
    assert [b["i"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for b in batches:
        assert torch.equal(b["x"], b["i"].float()[:, None].expand(-1, 3))


# -- rows written into their batch as items are made (BatchRows) -----------------------------------


def _placed(values: list[np.ndarray], batch_size: int) -> list[dict]:
    rows = BatchRows(batch_size)
    return [{"x": rows.place(v), "i": k} for k, v in enumerate(values)]


def _values(n: int, width: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.standard_normal(width).astype(np.float32) for _ in range(n)]


def test_placed_rows_are_collated_as_their_batch_without_a_copy():
    values = _values(4)
    items = _placed(values, 4)
    batch = collate_items(items)["x"]
    np.testing.assert_array_equal(batch.numpy(), np.stack(values))
    assert batch.data_ptr() == items[0]["x"].data_ptr()  # the rows are the batch
    last = collate_items(_placed(values[:3], 4))["x"]  # a last batch that is not full
    assert last.shape == (3, 5)
    np.testing.assert_array_equal(last.numpy(), np.stack(values[:3]))


def test_a_placed_row_is_never_written_again():
    values = _values(7)
    items = _placed(values, 3)
    for item, value in zip(items, values, strict=True):
        np.testing.assert_array_equal(item["x"].numpy(), value)
    batches = [collate_items(items[k : k + 3])["x"] for k in range(0, 7, 3)]
    np.testing.assert_array_equal(torch.cat(batches).numpy(), np.stack(values))


@pytest.mark.parametrize(
    "case", ["reordered", "across-two-batches", "two-whole-batches", "one-row-replaced"]
)
def test_rows_that_are_not_their_batch_in_order_are_copied(case):
    values = _values(6)
    items = _placed(values, 3)
    if case == "reordered":
        picked = [items[1], items[0], items[2]]
    elif case == "across-two-batches":  # a stream resumed after a number of items not a batch
        picked = items[2:5]
    elif case == "two-whole-batches":  # a loader's batch_size larger than the stream's
        picked = items
    else:  # a transform that made a new tensor for one item
        items[1]["x"] = items[1]["x"] * 2
        picked = items[:3]
    expected = np.stack([item["x"].numpy() for item in picked])
    batch = collate_items(picked)["x"]
    np.testing.assert_array_equal(batch.numpy(), expected)
    batch.zero_()  # the batch is its own memory: the items keep their values
    np.testing.assert_array_equal(np.stack([item["x"].numpy() for item in picked]), expected)


def test_values_of_another_shape_or_dtype_start_a_new_batch():
    rows = BatchRows(4)
    first = rows.place(np.ones(5, dtype=np.float32))
    wider = rows.place(np.full(7, 2.0, dtype=np.float32))
    counts = rows.place(np.arange(7))
    assert wider.shape == (7,) and counts.dtype == torch.int64
    np.testing.assert_array_equal(first.numpy(), np.ones(5))
    np.testing.assert_array_equal(wider.numpy(), np.full(7, 2.0))
    np.testing.assert_array_equal(counts.numpy(), np.arange(7))


def test_consecutive_rows_of_a_users_tensor_are_copied_not_aliased():
    data = torch.arange(12.0).reshape(4, 3).clone()  # a tensor of its own, not a view
    batch = collate_items([{"x": data[k]} for k in range(4)])["x"]
    batch += 100  # a training step that normalises its batch in place
    assert torch.equal(data, torch.arange(12.0).reshape(4, 3))


class _PlacedStream(torch.utils.data.IterableDataset):
    """Each worker's items written into rows of its batches, as BetasStream does when batched."""

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rows = BatchRows(4)
        for i in range(worker * 100, worker * 100 + 10):
            yield {"x": rows.place(np.full(3, float(i), dtype=np.float32)), "i": i}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_placed_rows_reach_the_main_process_as_their_batches(num_workers):
    loader = DataLoader(
        _PlacedStream(), batch_size=4, collate_fn=collate_items, num_workers=num_workers
    )
    batches = list(loader)
    assert sum(len(b["i"]) for b in batches) == 10 * max(1, num_workers)
    for b in batches:
        assert torch.equal(b["x"], b["i"].float()[:, None].expand(-1, 3))
