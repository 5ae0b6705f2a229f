"""Collation of dict items: tensors of one shape stacked into a fresh batch (allocated by numpy in
the main process, in shared memory in a worker), whatever their dtype, against torch.stack."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from neurotorch.data.collate import batch_tensor, collate_items


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
