"""Epochs: the order changes every epoch for the map-style dataset and the stream, with
``persistent_workers`` true and false, by hand and through Lightning; a resume in epoch >= 1
continues that epoch's order (and the next epoch is the next one).

Every pass is checked to cover the selection exactly once; "the order of epoch e" is computed
independently from a fresh loader run for e + 1 passes without interruption."""

from __future__ import annotations

import pytest
from exactly_once import fmri_ids
from lightning.pytorch.callbacks import ModelCheckpoint
from record_ids import RecordIds, trainer
from torch.utils.data import DataLoader

from neurotorch.data.collate import collate_items
from neurotorch.data.fmri.betas import BetasDataset
from neurotorch.data.fmri.stream import BetasStream
from neurotorch.data.loader import StreamLoader
from neurotorch.errors import ShardingError
from neurotorch.lightning import LaionFMRIDataModule

SUBJECTS = ["sub-01", "sub-02"]
STREAMED = "sub-01"  # a stream over several subjects is not batched (test_data_stream.py)
FACE = {"roi": "face"}
TEST = {"split": "random_0", "part": "test"}


def _keys(batches) -> list[tuple[str, str, int]]:
    return [tuple(k) for batch in batches for k in fmri_ids(batch)]


def _covers_once(keys, table) -> None:
    expected = zip(table["subject"], table["session"], table["trial"].astype(int), strict=True)
    assert sorted(keys) == sorted(expected)


def _stream(root) -> BetasStream:
    return BetasStream(
        root, STREAMED, voxels=FACE, trials=TEST, features=None, read={"shuffle_buffer": 8}
    )


def _dataset(root) -> BetasDataset:
    return BetasDataset(root, SUBJECTS, voxels=FACE, trials=TEST, features=None)


def _passes(loader, n: int) -> list[list[tuple]]:
    return [_keys(loader) for _ in range(n)]


WORKERS = [
    pytest.param(0, False, id="no-workers"),
    pytest.param(2, False, id="workers", marks=pytest.mark.slow),
    pytest.param(2, True, id="persistent-workers", marks=pytest.mark.slow),
]


def _options(workers: int, persistent: bool) -> dict:
    return dict(num_workers=workers, persistent_workers=persistent)


@pytest.mark.parametrize("workers, persistent", WORKERS)
def test_stream_loader_moves_to_the_next_epoch_at_every_pass(tiny_laion_root, workers, persistent):
    stream = _stream(tiny_laion_root)
    passes = _passes(StreamLoader(stream, 8, **_options(workers, persistent)), 3)
    for keys in passes:
        _covers_once(keys, stream.trials)
    assert passes[0] != passes[1] != passes[2]
    for epoch in (1, 2):  # pass e is epoch e: the order of a stream set to that epoch by hand
        fixed = _stream(tiny_laion_root)
        fixed.set_epoch(epoch)
        by_hand = StreamLoader(fixed, 8, advance_epoch=False, **_options(workers, persistent))
        assert _keys(by_hand) == passes[epoch]


@pytest.mark.parametrize("workers, persistent", WORKERS)
def test_plain_dataloader_stream_follows_set_epoch(tiny_laion_root, workers, persistent):
    stream = BetasStream(
        tiny_laion_root,
        STREAMED,
        voxels=FACE,
        trials=TEST,
        features=None,
        read={"shuffle_buffer": 8},
        batch_size=8,
    )
    loader = DataLoader(stream, 8, collate_fn=collate_items, **_options(workers, persistent))
    orders = []
    for epoch in (0, 1, 0):
        stream.set_epoch(epoch)  # reaches persistent workers too
        orders.append(_keys(loader))
    _covers_once(orders[1], stream.trials)
    assert orders[0] != orders[1] and orders[0] == orders[2]


@pytest.mark.parametrize("workers, persistent", WORKERS)
def test_map_loader_reshuffles_every_epoch_without_set_epoch(tiny_laion_root, workers, persistent):
    dataset = _dataset(tiny_laion_root)
    loader = dataset.loader(8, shuffle=True, seed=3, **_options(workers, persistent))
    batches = [list(loader) for _ in range(3)]
    orders = [_keys(b) for b in batches]
    for epoch, keys in enumerate(orders):
        _covers_once(keys, dataset.items)
        assert all(len(set(b["subject"])) == 1 for b in batches[epoch])
    assert orders[0] != orders[1] != orders[2]
    by_hand = dataset.batch_sampler(8, shuffle=True, seed=3)
    by_hand.set_epoch(2)
    assert [i for batch in by_hand for i in batch] == [
        int(i) for b in batches[2] for i in b["index"]
    ]


def _resume_by_hand(make_loader, head_batches: int) -> tuple[list, list, list]:
    """(uninterrupted epochs 1 and 2, the resumed epoch 1 (before + after the stop), the epoch
    after it), each a list of keys."""
    uninterrupted = _passes(make_loader(), 3)[1:]
    stopped = make_loader()
    _keys(stopped)  # epoch 0
    iterator = iter(stopped)
    head = [next(iterator) for _ in range(head_batches)]
    state = stopped.state_dict()
    del iterator
    resumed = make_loader()
    resumed.load_state_dict(state)
    resumed_epoch = _keys(head) + _keys(resumed)
    return uninterrupted, resumed_epoch, _keys(resumed)


@pytest.mark.parametrize("head", [1, 3], ids=["one-batch", "three-batches"])
@pytest.mark.parametrize("workers, persistent", WORKERS)
def test_stream_resumed_in_epoch_one_continues_that_epoch(
    tiny_laion_root, workers, persistent, head
):
    """Stopped after ``head`` batches of epoch 1 (after one, the second worker has handed out
    none of its batches of the epoch yet) and restored: the rest of epoch 1, then epoch 2."""

    def make_loader():
        return StreamLoader(_stream(tiny_laion_root), 8, **_options(workers, persistent))

    (epoch_1, epoch_2), resumed, after = _resume_by_hand(make_loader, head)
    assert resumed == epoch_1 and after == epoch_2 != epoch_1


@pytest.mark.parametrize("workers, persistent", WORKERS)
def test_map_resumed_in_epoch_one_continues_that_epoch(tiny_laion_root, workers, persistent):
    dataset = _dataset(tiny_laion_root)

    def make_loader():
        return dataset.loader(8, shuffle=True, seed=5, **_options(workers, persistent))

    (epoch_1, epoch_2), resumed, after = _resume_by_hand(make_loader, 3)
    assert resumed == epoch_1 and after == epoch_2 != epoch_1


def _stopped(loader, head: int) -> tuple[list, dict]:
    """Epoch 0 whole, then ``head`` batches of epoch 1: their keys and the loader's state."""
    _keys(loader)
    iterator = iter(loader)
    seen = _keys([next(iterator) for _ in range(head)])
    state = loader.state_dict()
    del iterator
    return seen, state


@pytest.mark.slow
@pytest.mark.parametrize(("saved", "restored"), [(2, 0), (0, 2), (2, 3)])
def test_a_map_style_pass_resumes_with_another_number_of_workers(tiny_laion_root, saved, restored):
    """The batch sampler holds a map-style pass's position: a run resumed on a machine with
    more or fewer workers finishes the same epoch 1."""
    dataset = _dataset(tiny_laion_root)

    def loader(workers: int):
        return dataset.loader(8, shuffle=True, seed=5, num_workers=workers)

    epoch_1 = _passes(loader(0), 2)[1]
    head, state = _stopped(loader(saved), 3)
    resumed = loader(restored)
    resumed.load_state_dict(state)
    assert head + _keys(resumed) == epoch_1


SAVED_SHARD = "world_size=1, batch_size=8, drop_last=False and this run has"


def test_a_map_style_pass_refuses_the_state_of_another_shard(tiny_laion_root, monkeypatch):
    """Another number of devices, batch size or ``drop_last`` makes other batches: a position
    counted in the saved ones is refused, not applied to them."""
    dataset = _dataset(tiny_laion_root)
    sampler = dataset.batch_sampler(8, shuffle=True, seed=5)
    batches = iter(sampler)
    served = [next(batches) for _ in range(2)]
    state = sampler.state_dict()
    same = dataset.batch_sampler(8, shuffle=True, seed=5)
    same.load_state_dict(state)
    assert served + list(same) == list(dataset.batch_sampler(8, shuffle=True, seed=5))
    for key, other in [
        ("batch_size", dataset.batch_sampler(4, shuffle=True, seed=5)),
        ("drop_last", dataset.batch_sampler(8, shuffle=True, seed=5, drop_last=True)),
    ]:
        with pytest.raises(ShardingError, match=f"{SAVED_SHARD} .*the same {key} "):
            other.load_state_dict(state)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ShardingError, match=f"{SAVED_SHARD} world_size=2, .*the same world_size "):
        dataset.batch_sampler(8, shuffle=True, seed=5).load_state_dict(state)


@pytest.mark.slow
@pytest.mark.parametrize(("saved", "restored"), [(2, 0), (0, 2)])
def test_a_stream_refuses_the_state_of_another_number_of_workers(tiny_laion_root, saved, restored):
    _, state = _stopped(StreamLoader(_stream(tiny_laion_root), 8, num_workers=saved), 3)
    resumed = StreamLoader(_stream(tiny_laion_root), 8, num_workers=restored)
    with pytest.raises(ShardingError, match=f"Resume with num_workers={saved}"):
        resumed.load_state_dict(state)


def test_a_stream_refuses_the_state_of_another_shard(tiny_laion_root):
    """A position counts the items of one shard: with other ranks, batches or ``drop_last``,
    the items before it are other items (they would be skipped unseen, and served ones
    repeated)."""
    _, state = _stopped(StreamLoader(_stream(tiny_laion_root), 8), 3)
    two_ranks = _stream(tiny_laion_root)
    two_ranks.rank, two_ranks.world_size = 0, 2
    for key, loader in [
        ("world_size", StreamLoader(two_ranks, 8)),
        ("batch_size", StreamLoader(_stream(tiny_laion_root), 4)),
        ("drop_last", StreamLoader(_stream(tiny_laion_root), 8, drop_last=True)),
    ]:
        loader.load_state_dict(state)
        with pytest.raises(ShardingError, match=f"{SAVED_SHARD} .*the same {key} "):
            next(iter(loader))
    same = StreamLoader(_stream(tiny_laion_root), 8)
    same.load_state_dict(state)
    assert len(_keys(same)) == len(_stream(tiny_laion_root).trials) - 3 * 8


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "stream"])
@pytest.mark.parametrize("workers, persistent", WORKERS)
def test_a_state_taken_after_an_epoch_ended_resumes_at_the_next_epoch(
    tiny_laion_root, streaming, workers, persistent
):
    """What an end-of-epoch checkpoint holds: the restored loader's next pass is the epoch an
    uninterrupted loader would run next, whole (not that epoch again, not an empty pass)."""

    def make_loader():
        return _shuffled_loader(tiny_laion_root, streaming, workers, persistent)

    uninterrupted = _passes(make_loader(), 3)
    stopped = make_loader()
    _passes(stopped, 2)
    resumed = make_loader()
    resumed.load_state_dict(stopped.state_dict())
    assert _keys(resumed) == uninterrupted[2] != uninterrupted[1]


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "stream"])
@pytest.mark.parametrize("workers, persistent", WORKERS)
def test_a_state_taken_after_the_last_batch_resumes_at_the_next_epoch(
    tiny_laion_root, streaming, workers, persistent
):
    """What Lightning's step checkpoint after an epoch's last batch holds (every batch drawn, the
    end of the pass not yet seen): the restored loader's passes are the next epochs, not an
    empty pass first."""

    def make_loader():
        return _shuffled_loader(tiny_laion_root, streaming, workers, persistent)

    uninterrupted = _passes(make_loader(), 4)
    stopped = make_loader()
    _keys(stopped)  # epoch 0
    iterator = iter(stopped)
    drawn = [next(iterator) for _ in range(-(-len(uninterrupted[1]) // 8))]
    assert _keys(drawn) == uninterrupted[1]
    state = stopped.state_dict()
    del iterator
    resumed = make_loader()
    resumed.load_state_dict(state)
    assert _passes(resumed, 2) == uninterrupted[2:]


def _shuffled_loader(root, streaming: bool, workers: int, persistent: bool):
    if streaming:
        return StreamLoader(_stream(root), 8, **_options(workers, persistent))
    return _dataset(root).loader(8, shuffle=True, seed=5, **_options(workers, persistent))


def _module(root, streaming: bool, num_workers: int) -> LaionFMRIDataModule:
    return LaionFMRIDataModule(
        data_dir=str(root),
        subject=SUBJECTS if not streaming else STREAMED,
        voxels=FACE,
        trials={"split": "random_0"},
        features=None,
        read={"shuffle_buffer": 8} if streaming else None,
        streaming=streaming,
        batch_size=8,
        num_workers=num_workers,
    )


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["map", "stream"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_lightning_reshuffles_and_resumes_in_epoch_one(
    tiny_laion_root, tmp_path, streaming, num_workers
):
    """Three epochs uninterrupted; then a run stopped in epoch 1 (checkpoint) and resumed: its
    epoch 1 is the uninterrupted epoch 1, and its epoch 2 the uninterrupted epoch 2. The same
    from the checkpoint taken at the end of epoch 0 (Lightning's default checkpoint time), and
    from the step checkpoint at epoch 0's last batch."""
    whole = RecordIds(str(tmp_path), fmri_ids)
    steps = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    ends = ModelCheckpoint(
        dirpath=tmp_path / "ends", filename="{epoch}", save_top_k=-1, save_on_train_epoch_end=True
    )
    trainer(tmp_path, max_epochs=3, callbacks=[steps, ends], enable_checkpointing=True).fit(
        whole, _module(tiny_laion_root, streaming, num_workers)
    )
    epochs = [_keys_of(whole.seen[f"train/{e}"]) for e in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]
    per_epoch = len(whole.seen["train/0"])
    # one step into epoch 1: a second worker has delivered none of its batches of the epoch
    # (its state is the epoch's start, not the end of epoch 0); two steps: both have
    for done in (1, 2):
        resumed = RecordIds(str(tmp_path), fmri_ids)
        trainer(tmp_path, max_epochs=3).fit(
            resumed,
            _module(tiny_laion_root, streaming, num_workers),
            ckpt_path=tmp_path / "ckpt" / f"epoch=1-step={per_epoch + done}.ckpt",
        )
        assert _keys_of(resumed.seen["train/1"]) == epochs[1][done * 8 :]
        assert _keys_of(resumed.seen["train/2"]) == epochs[2]
    after_epoch_0 = RecordIds(str(tmp_path), fmri_ids)
    trainer(tmp_path, max_epochs=3).fit(
        after_epoch_0,
        _module(tiny_laion_root, streaming, num_workers),
        ckpt_path=tmp_path / "ends" / "epoch=0.ckpt",
    )
    assert "train/0" not in after_epoch_0.seen
    assert [_keys_of(after_epoch_0.seen[f"train/{e}"]) for e in (1, 2)] == epochs[1:]
    # the step checkpoint after epoch 0's last batch: the epoch is over, not yet ended
    last_step = RecordIds(str(tmp_path), fmri_ids)
    trainer(tmp_path, max_epochs=3).fit(
        last_step,
        _module(tiny_laion_root, streaming, num_workers),
        ckpt_path=tmp_path / "ckpt" / f"epoch=0-step={per_epoch}.ckpt",
    )
    assert [_keys_of(last_step.seen[f"train/{e}"]) for e in (1, 2)] == epochs[1:]


def _keys_of(batches: list[list]) -> list[tuple]:
    return [tuple(k) for batch in batches for k in batch]


def _batches_from(seen: dict, start_epoch: int) -> list[tuple]:
    """Every training batch from ``start_epoch`` on, in order, as tuples of ids."""
    epochs = sorted(int(key.split("/")[1]) for key in seen if key.startswith("train/"))
    return [
        tuple(tuple(k) for k in batch)
        for e in epochs
        if e >= start_epoch
        for batch in seen[f"train/{e}"]
    ]


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["map", "stream"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_fit_by_steps_resumed_at_an_epochs_end_trains_the_uninterrupted_batches(
    tiny_laion_root, tmp_path, streaming, num_workers
):
    """Training by steps, Lightning restores the loader's position from any checkpoint, also one
    taken when an epoch's batches were all drawn: at the end-of-epoch checkpoint, or at the last
    batch of an epoch cut short by ``limit_train_batches``. The resumed fit trains, batch for
    batch, what the uninterrupted fit trained after that checkpoint (it replayed the rest of the
    cut epoch as the next one, or skipped an epoch's order with workers)."""
    whole = RecordIds(str(tmp_path), fmri_ids)
    ends = ModelCheckpoint(dirpath=tmp_path / "ends", filename="{step}", save_top_k=-1)
    steps = ModelCheckpoint(
        dirpath=tmp_path / "steps", filename="{step}", every_n_train_steps=3, save_top_k=-1
    )
    by_steps = dict(max_steps=10, max_epochs=-1, limit_train_batches=3, limit_val_batches=1)
    trainer(tmp_path, callbacks=[ends, steps], enable_checkpointing=True, **by_steps).fit(
        whole, _module(tiny_laion_root, streaming, num_workers)
    )
    after_epoch_0 = _batches_from(whole.seen, 1)
    assert len(after_epoch_0) == 7 and _batches_from(whole.seen, 0)[:3] != after_epoch_0[:3]
    for checkpoint in (tmp_path / "ends" / "step=3.ckpt", tmp_path / "steps" / "step=3.ckpt"):
        resumed = RecordIds(str(tmp_path), fmri_ids)
        trainer(tmp_path, **by_steps).fit(
            resumed, _module(tiny_laion_root, streaming, num_workers), ckpt_path=checkpoint
        )
        assert _batches_from(resumed.seen, 0) == after_epoch_0, checkpoint.parent.name


def test_under_ddp_the_pass_follows_the_fit_not_lightnings_sampler_epoch(tiny_laion_root):
    """Lightning hands its count of processed epochs to the distributed sampler inside the
    batch sampler; where that count is ahead of the epoch the fit serves (a resume by steps
    from an end-of-epoch checkpoint), the pass is still the fit's epoch, on every rank."""
    from torch.utils.data import DistributedSampler

    from neurotorch.data.loader import StatefulLoader
    from neurotorch.data.sampling import GroupedBatchSampler

    dataset = _dataset(tiny_laion_root)
    for rank in (0, 1):

        def sampler(epoch: int, rank: int = rank):
            inner = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
            inner.set_epoch(epoch)
            return GroupedBatchSampler(inner, 8, shuffle=True, seed=5)

        by_hand = sampler(1)
        by_hand.set_epoch(1)
        loader = StatefulLoader(dataset, batch_sampler=sampler(2), collate_fn=collate_items)
        loader.fit_epoch = lambda: 1  # the fit serves epoch 1; Lightning's count says 2
        assert [[int(i) for i in b["index"]] for b in loader] == [list(b) for b in by_hand]
