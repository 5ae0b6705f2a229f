"""Iterable `BetasStream`: coverage, values, sharding, shuffling and mid-epoch resume."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from neurotorch.data.collate import collate_items
from neurotorch.data.fmri import settings as fmri_settings
from neurotorch.data.fmri.settings import training_shuffle_buffer
from neurotorch.data.fmri.stream import BetasStream
from neurotorch.data.loader import StreamLoader
from neurotorch.errors import MixedBatchError
from neurotorch.fmri import layout
from neurotorch.lightning import LaionFMRIDataModule

SUBJECTS = ["sub-01", "sub-02"]


def _stream(root, shuffle_buffer: int = 0, subjects=SUBJECTS, **kwargs) -> BetasStream:
    return BetasStream(
        root,
        subjects,
        voxels={"roi": "face"},
        trials={"split": "random_0", "part": "train"},
        read={"shuffle_buffer": shuffle_buffer},
        **kwargs,
    )


def _rank_stream(root, rank: int, world_size: int) -> BetasStream:
    stream = _stream(root)
    stream.rank, stream.world_size = rank, world_size
    return stream


def _keys(items) -> list[tuple[str, str, int]]:
    return [(i["subject"], i["session"], int(i["trial"])) for i in items]


def _batch_keys(batches) -> list[tuple[str, str, int]]:
    return [
        (s, ses, int(t))
        for b in batches
        for s, ses, t in zip(b["subject"], b["session"], b["trial"], strict=True)
    ]


def _expected(stream: BetasStream) -> list[tuple[str, str, int]]:
    return sorted(
        zip(stream.trials["subject"], stream.trials["session"], stream.trials["trial"], strict=True)
    )


def test_one_epoch_covers_the_selection_with_nibabel_values(tiny_laion_root):
    stream = _stream(tiny_laion_root, shuffle_buffer=8, seed=3)
    items = list(stream)
    assert sorted(_keys(items)) == _expected(stream) and len(items) == len(stream)
    volumes = {}
    for item in items[::7]:
        key = (item["subject"], item["session"])
        if key not in volumes:
            volumes[key] = np.asarray(
                nib.load(tiny_laion_root / layout.session_betas(*key)).dataobj
            )
        expected = volumes[key][..., item["trial"]][stream.voxel_masks()[item["subject"]]]
        np.testing.assert_array_equal(item["betas"].numpy(), expected)


def test_shuffle_is_seeded_and_changes_with_the_epoch(tiny_laion_root):
    first = _keys(_stream(tiny_laion_root, shuffle_buffer=16, seed=1))
    again = _keys(_stream(tiny_laion_root, shuffle_buffer=16, seed=1))
    later = _stream(tiny_laion_root, shuffle_buffer=16, seed=1)
    later.set_epoch(1)
    assert first == again and first != _keys(later) and sorted(first) == sorted(_keys(later))
    assert first != sorted(first)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_equal_counts_and_together_cover_everything(tiny_laion_root, world_size):
    shards = [_keys(_rank_stream(tiny_laion_root, r, world_size)) for r in range(world_size)]
    total = len(_stream(tiny_laion_root).trials)
    per_rank = -(-total // world_size)
    assert [len(s) for s in shards] == [per_rank] * world_size
    flat = [k for s in shards for k in s]
    assert set(flat) == set(_expected(_stream(tiny_laion_root)))
    assert (
        len(flat) - len(set(flat)) == per_rank * world_size - total
    )  # only the wrap-around padding repeats


@pytest.mark.parametrize(("subjects", "batch_size"), [(SUBJECTS, 1), (["sub-02"], 10)])
def test_workers_split_a_rank_without_overlap(tiny_laion_root, subjects, batch_size):
    stream = _stream(tiny_laion_root, shuffle_buffer=8, subjects=subjects)
    batches = list(StreamLoader(stream, batch_size=batch_size, num_workers=2))
    assert sorted(_batch_keys(batches)) == _expected(stream)
    assert all(len(set(batch["subject"])) == 1 for batch in batches)


def _nibabel_betas(root, stream: BetasStream, subject: str, session: str, trial: int):
    volume = np.asarray(nib.load(root / layout.session_betas(subject, session)).dataobj)
    return volume[..., trial][stream.voxel_masks()[subject]]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_of_a_batched_stream_hold_nibabels_values_row_by_row(tiny_laion_root, num_workers):
    stream = _stream(tiny_laion_root, shuffle_buffer=8, subjects=["sub-02"])
    batches = list(StreamLoader(stream, batch_size=7, num_workers=num_workers))
    assert sorted(_batch_keys(batches)) == _expected(stream)
    assert len(stream) % 7 and len(batches[-1]["betas"]) == len(stream) % 7  # a partial last
    volumes = {}
    for batch in batches:
        for row, (subject, session, trial) in enumerate(_batch_keys([batch])):
            if session not in volumes:
                path = tiny_laion_root / layout.session_betas(subject, session)
                volumes[session] = np.asarray(nib.load(path).dataobj)
            expected = volumes[session][..., trial][stream.voxel_masks()[subject]]
            np.testing.assert_array_equal(batch["betas"][row].numpy(), expected)


def test_a_batched_stream_writes_each_trial_into_its_batch(tiny_laion_root):
    stream = _stream(tiny_laion_root, subjects=["sub-02"], batch_size=4)
    items = list(itertools.islice(stream, 4))
    batch = collate_items(items)["betas"]
    assert batch.data_ptr() == items[0]["betas"].data_ptr()  # collated without a copy
    for item, row in zip(items, batch, strict=True):
        expected = _nibabel_betas(tiny_laion_root, stream, "sub-02", item["session"], item["trial"])
        np.testing.assert_array_equal(row.numpy(), expected)


def test_a_stream_over_several_subjects_is_never_batched(tiny_laion_root):
    """Its trials interleave the subjects, so batches would stack rows of different subjects
    (their voxels differ even where the counts match: V1v has 33 voxels in both)."""
    stream = _stream(tiny_laion_root)
    assert set(stream.trials["subject"]) == set(SUBJECTS)
    with pytest.raises(MixedBatchError, match="sub-01, sub-02"):
        StreamLoader(stream, batch_size=8)
    with pytest.raises(MixedBatchError, match="batch_size=4"):
        _stream(tiny_laion_root, batch_size=4)
    # a plain DataLoader batches behind the stream's back: collate_items refuses the batch
    same_counts = BetasStream(tiny_laion_root, SUBJECTS, voxels={"roi": "V1v"}, features=None)
    assert len({int(mask.sum()) for mask in same_counts.voxel_masks().values()}) == 1
    with pytest.raises(MixedBatchError, match="mixes subjects"):
        list(DataLoader(same_counts, batch_size=len(same_counts), collate_fn=collate_items))
    with pytest.raises(MixedBatchError, match="streaming=False"):
        LaionFMRIDataModule(data_dir=tiny_laion_root, subject=SUBJECTS, streaming=True)
    single = _stream(tiny_laion_root, subjects=["sub-01"], batch_size=4)  # one subject batches
    assert single.batch_size == 4


def test_resume_from_state_dict_in_process(tiny_laion_root):
    stream = _stream(tiny_laion_root, shuffle_buffer=16, seed=5)
    iterator = iter(stream)
    head = [next(iterator) for _ in range(37)]
    state = stream.state_dict()
    restored = _stream(tiny_laion_root, shuffle_buffer=16, seed=5)
    restored.load_state_dict(state)
    keys = _keys(head) + _keys(restored)
    assert sorted(keys) == _expected(stream) and len(set(keys)) == len(keys)
    assert keys == _keys(
        _stream(tiny_laion_root, shuffle_buffer=16, seed=5)
    )  # the same order as uninterrupted


@pytest.mark.slow
@pytest.mark.parametrize("loader_class", [StatefulDataLoader, StreamLoader])
def test_resume_with_stateful_dataloader_workers(tiny_laion_root, loader_class):
    def loader():
        stream = _stream(tiny_laion_root, shuffle_buffer=16, seed=2, subjects=["sub-01"])
        return loader_class(stream, batch_size=8, num_workers=2, collate_fn=collate_items)

    first = loader()
    iterator = iter(first)
    head = [next(iterator) for _ in range(5)]
    state = first.state_dict()
    del iterator
    second = loader()
    second.load_state_dict(state)
    keys = _batch_keys(head) + _batch_keys(list(second))
    assert sorted(keys) == _expected(first.dataset) and len(set(keys)) == len(keys)


def test_the_default_training_buffer_holds_1024_trials_or_256_mb():
    # 2**28 bytes // (4 bytes x voxels), capped at 1024 trials, never below 2 (still shuffles)
    assert training_shuffle_buffer(572_557) == 117  # LAION-fMRI's whole brain: 2.29 MB an item
    assert training_shuffle_buffer(65_536) == 1024  # exactly 1024 items of 256 KiB
    assert training_shuffle_buffer(65_537) == 1023
    assert training_shuffle_buffer(17_000) == 1024  # an ROI
    assert training_shuffle_buffer(200_000_000) == 2


@pytest.mark.parametrize(("given", "train_buffer"), [(None, 37), (5, 5)])
def test_a_datamodules_training_stream_buffer_is_bounded_by_memory(
    tiny_laion_root, monkeypatch, given, train_buffer
):
    dm = LaionFMRIDataModule(
        data_dir=str(tiny_laion_root),
        subject="sub-01",
        trials={"split": "random_0", "val_fraction": 0.2},
        read={"shuffle_buffer": given},
        streaming=True,
        batch_size=4,
    )
    widest = max(dm.n_voxels.values())
    assert widest > 100  # whole brain of the tiny set
    monkeypatch.setattr(fmri_settings, "TRAINING_SHUFFLE_BYTES", 4 * widest * 37 + 3)
    dm.setup("fit")
    assert dm.datasets["train"].read.shuffle_buffer == train_buffer
    assert dm.datasets["val"].read.shuffle_buffer == 0
