"""The sharding contract (`neurotorch.data.sharding`) against hand-computed counts, for sizes that
leave remainders, and the batch samplers and datasets that use it."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from exactly_once import check_exactly_once, free_port, numbers_seen_by_rank, read_records

from neurotorch.data.fmri.stream import BetasStream
from neurotorch.data.sampling import GroupedBatchSampler
from neurotorch.data.sharding import (
    ShardingError,
    batches_per_rank,
    epoch_order,
    rank_and_world_size,
    shard,
    shard_positions,
)
from neurotorch.errors import ParameterError

SIZES = [0, 1, 2, 5, 7, 13, 31]


def _rank_units(n, rank, world, workers, batch, drop_last):
    return [
        shard_positions(
            n, rank, world, worker=w, num_workers=workers, batch_size=batch, drop_last=drop_last
        )
        for w in range(workers)
    ]


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("batch", [1, 3, 7])
@pytest.mark.parametrize("world, workers", [(1, 1), (1, 2), (2, 3), (3, 2), (4, 1)])
@pytest.mark.parametrize("n", SIZES)
def test_contract_for_sizes_with_remainders(n, world, workers, batch, drop_last):
    per_rank = n // world if drop_last else math.ceil(n / world)
    seen = Counter()
    for rank in range(world):
        pieces = _rank_units(n, rank, world, workers, batch, drop_last)
        units = np.concatenate(pieces)
        assert len(units) == per_rank  # every rank the same number of units
        batches = sum(len(p) // batch if drop_last else math.ceil(len(p) / batch) for p in pieces)
        assert batches == (per_rank // batch if drop_last else math.ceil(per_rank / batch))
        assert batches_per_rank(n, world, batch, drop_last=drop_last) == batches
        short = [p for p in pieces if len(p) % batch]
        assert len(short) <= 1  # only the rank's last batch can be short
        seen.update(units.tolist())
    if drop_last:
        assert sorted(seen) == list(range(world * per_rank)) and max(seen.values(), default=1) == 1
    else:
        assert set(seen) == set(range(n))
        # padding: the order wraps around from its start (more than once when n < world)
        assert seen == Counter(k % n for k in range(world * per_rank))
        if n >= world:
            padding = world * per_rank - n
            assert {u for u, c in seen.items() if c == 2} == set(range(padding))
            assert max(seen.values(), default=1) <= 2


def test_batches_per_rank_by_hand():
    # 31 units over 2 ranks: 16 each (15 with drop_last); batches of 7: 3 (2 with drop_last)
    assert batches_per_rank(31, 2, 7) == 3 and batches_per_rank(31, 2, 7, drop_last=True) == 2
    assert batches_per_rank(13, 4, 3, drop_last=True) == 1  # 3 units each: one full batch
    assert batches_per_rank(5, 1, 2, drop_last=True) == 2 and batches_per_rank(5, 1, 2) == 3


def test_workers_share_a_session_by_units_not_only_by_batches():
    # 1,050 trials in batches of 64: 16 full batches and one of 26. Two workers get 9 and 8
    # batches, the 9 being the first run, which ends in the short one: 538 and 512 trials (not
    # 576 and 474, a worker idling for 102 volumes of a whole-brain stream). The first worker
    # reads the session from its start; the second starts at a seek point, a little slower.
    counts = [len(shard_positions(1050, worker=w, num_workers=2, batch_size=64)) for w in (0, 1)]
    assert counts == [538, 512]
    # 17 whole batches and a short one: the extra whole batch first, the short batch second
    counts = [len(shard_positions(1114, worker=w, num_workers=2, batch_size=64)) for w in (0, 1)]
    assert counts == [576, 538]
    # 5 units in batches of 2 over 2 workers: [0, 1, 2] and [3, 4]
    pieces = [shard_positions(5, worker=w, num_workers=2, batch_size=2).tolist() for w in (0, 1)]
    assert pieces == [[0, 1, 2], [3, 4]]


@pytest.mark.parametrize("n", [7, 13, 31, 97, 1050])
@pytest.mark.parametrize("workers", [2, 3, 5])
@pytest.mark.parametrize("batch", [2, 7, 64])
def test_workers_units_differ_by_at_most_one_batch(n, workers, batch):
    counts = [
        len(shard_positions(n, worker=w, num_workers=workers, batch_size=batch))
        for w in range(workers)
    ]
    assert sum(counts) == n and max(counts) - min(counts) <= batch


def test_three_ranks_of_sixteen_batches_get_six_each():
    counts = [len(shard(16, rank, 3)) for rank in range(3)]
    assert counts == [6, 6, 6]  # not 6/5/5: ranks that run out early hang DDP


def test_shuffle_is_a_seeded_permutation_per_epoch():
    a, b = epoch_order(31, epoch=0, seed=1, shuffle=True), epoch_order(31, 1, 1, shuffle=True)
    assert sorted(a) == list(range(31)) and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, epoch_order(31, 0, 1, shuffle=True))
    together = np.concatenate([shard(31, r, 2, epoch=3, seed=1, shuffle=True) for r in (0, 1)])
    assert set(together) == set(range(31)) and len(together) == 32


@pytest.mark.parametrize(
    "args", [dict(rank=2, world_size=2), dict(worker=1, num_workers=1), dict(batch_size=0)]
)
def test_impossible_shards_are_named(args):
    with pytest.raises(ShardingError):
        shard_positions(10, **args)


def test_rank_from_torchrun_variables(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert rank_and_world_size() == (1, 3)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ShardingError, match="RANK"):
        rank_and_world_size()
    monkeypatch.delenv("RANK")
    assert rank_and_world_size() == (0, 1)


@pytest.mark.parametrize(
    "n_items, batch_size, world", [(29, 7, 2), (31, 3, 2), (30, 5, 2), (31, 3, 3), (23, 5, 4)]
)  # 5, 11, 6, 11, 5 batches
def test_grouped_batch_sampler_gives_ranks_equal_batches_without_a_repeat(
    monkeypatch, n_items, batch_size, world
):
    groups = np.array(["a"] * (n_items // 2) + ["b"] * (n_items - n_items // 2))
    rng = np.random.default_rng(0)
    groups = groups[rng.permutation(n_items)]  # a shuffled table
    all_batches = list(
        GroupedBatchSampler(range(n_items), batch_size, groups=groups, shuffle=True, seed=3)
    )
    per_rank = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        sampler = GroupedBatchSampler(
            range(n_items), batch_size, groups=groups, shuffle=True, seed=3
        )
        per_rank.append(list(sampler))
        assert len(sampler) == math.ceil(len(all_batches) / world) == len(per_rank[-1])
    for batch in (b for batches in per_rank for b in batches):
        assert len(set(groups[batch])) == 1 and 1 <= len(batch) <= batch_size
    record = [{"train": batches} for batches in per_rank]
    check_exactly_once(record, "train", list(range(n_items)), padding=0)


def test_grouped_batches_too_few_to_split_pad_as_before(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    served = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        served.append(list(GroupedBatchSampler(range(1), 4, groups=np.zeros(1))))
    assert served == [[[0]], [[0]]]  # one trial for two ranks: the only way to equal counts


def test_stream_with_a_batch_size_gives_workers_whole_batches(tiny_laion_root):
    stream = BetasStream(
        tiny_laion_root, voxels={"roi": "face"}, trials={"sessions": "ses-01"}, batch_size=7
    )
    n = len(stream.trials)
    for world, workers in itertools.product((1, 2), (2, 3)):
        pieces = [stream.shard(0, world, worker=w, num_workers=workers) for w in range(workers)]
        assert sum(math.ceil(len(p) / 7) for p in pieces) == math.ceil(math.ceil(n / world) / 7)


@pytest.mark.slow
def test_workers_of_a_spawned_rank_read_that_ranks_shard(tmp_path):
    """Under ``ddp_spawn`` no RANK variable is set and workers cannot see the process group: the
    loader pins the rank before its workers start."""
    n = 23
    torch.multiprocessing.spawn(
        numbers_seen_by_rank, args=(free_port(), n, str(tmp_path)), nprocs=2
    )
    records = read_records(tmp_path, 2)
    check_exactly_once(records, "train", list(range(n)), padding=1)
    assert [r["len"] for r in records] == [len(r["train"]) for r in records] == [4, 4]
    assert json.dumps(records[0]["train"]) != json.dumps(records[1]["train"])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(read={"shuffle_buffer": -1}),
        dict(batch_size=0),
        dict(batch_size=2.5),
        dict(seed=1.5),
        dict(drop_last="yes"),
    ],
)
def test_impossible_stream_arguments_are_named(tiny_laion_root, kwargs):
    with pytest.raises(ParameterError):
        BetasStream(
            tiny_laion_root, voxels={"roi": "face"}, trials={"sessions": "ses-01"}, **kwargs
        )


@pytest.mark.parametrize("rank, world_size", [(2, 2), (0, 0), (-1, 2)])
def test_an_impossible_shard_is_named_at_the_first_pass(tiny_laion_root, rank, world_size):
    stream = BetasStream(tiny_laion_root, voxels={"roi": "face"}, trials={"sessions": "ses-01"})
    stream.rank, stream.world_size = rank, world_size
    with pytest.raises(ShardingError, match="rank"):
        next(iter(stream))


def _fresh_batches(cls_name: str):
    from neurotorch.data.meeg.calibration import CalibrationBatches
    from neurotorch.data.meeg.simulation import SimulatedSensorBatches

    cls = {"sensors": SimulatedSensorBatches, "calibration": CalibrationBatches}[cls_name]
    leadfield = {"retrieve_mode": "random", "n_sensors": 6, "n_sources": 10}
    return cls(leadfield, batch_size=3, n_batches=4, nnz=(1, 2), alpha=(0.5,), seed=0)


def _batch_sums(loader) -> list[float]:
    return sorted(round(float(batch["y"].double().sum()), 6) for batch in loader)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cls_name", "workers", "persistent", "context"),
    [
        (cls_name, *loader)
        for cls_name in ("sensors", "calibration")
        for loader in [(0, False, None), (2, False, "fork"), (2, True, "fork")]
    ]
    + [("sensors", 2, False, "spawn")],  # spawn costs 7 s: one dataset
)
def test_fresh_data_every_pass_in_a_plain_dataloader(cls_name, workers, persistent, context):
    """A dataset that draws fresh trials every pass, in a plain ``DataLoader`` without
    `set_epoch`: pass e holds the trials of epoch e set by hand, whether the workers persist or
    are started anew for every pass (which used to repeat epoch 0 for ever)."""
    by_hand = []
    for epoch in range(3):
        dataset = _fresh_batches(cls_name)
        dataset.set_epoch(epoch)
        by_hand.append(_batch_sums(torch.utils.data.DataLoader(dataset, batch_size=None)))
    assert by_hand[0] != by_hand[1] != by_hand[2]
    loader = torch.utils.data.DataLoader(
        _fresh_batches(cls_name),
        batch_size=None,
        num_workers=workers,
        persistent_workers=persistent,
        multiprocessing_context=context,
    )
    assert [_batch_sums(loader) for _ in range(3)] == by_hand


@pytest.mark.parametrize("name", ["meeg-sim", "meeg-calibration"])
def test_load_dataset_streams_fresh_trials_for_training_only(name):
    """Streamed through ``load_dataset``: the val and test parts serve the same trials every pass
    (as the DataModules' do), the train part (and no split) fresh ones."""
    from neurotorch.data.registry import load_dataset

    leadfield = {"retrieve_mode": "random", "n_sensors": 6, "n_sources": 10}
    options = dict(leadfield=leadfield, batch_size=2, n_batches=2, nnz=(1,), alpha=(0.5,))
    for split in ("val", "test", "train", None):
        stream = load_dataset(name, split=split, streaming=True, **options)
        first, second = _batch_sums(stream), _batch_sums(stream)
        assert (first == second) == (split in ("val", "test")), split


@pytest.mark.parametrize("cls_name", ["sensors", "calibration"])
@pytest.mark.parametrize(("n_batches", "world_size"), [(3, 2), (5, 4), (4, 3), (2, 2)])
def test_batched_simulations_halve_batches_for_ranks_and_serve_each_trial_once(
    cls_name, n_batches, world_size
):
    """Every rank yields as many batches (its ``len``), every trial of the epoch is served once
    over the ranks, and a trial served in a half equals that trial of the whole batch."""

    def make():
        from neurotorch.data.meeg.calibration import CalibrationBatches
        from neurotorch.data.meeg.simulation import SimulatedSensorBatches

        cls = {"sensors": SimulatedSensorBatches, "calibration": CalibrationBatches}[cls_name]
        leadfield = {"retrieve_mode": "random", "n_sensors": 6, "n_sources": 10}
        return cls(leadfield, batch_size=3, n_batches=n_batches, nnz=(1, 2), alpha=(0.5,))

    whole = {
        int(index): {key: value[j] for key, value in batch.items()}
        for batch in make()
        for j, index in enumerate(batch["index"])
    }
    assert sorted(whole) == list(range(3 * n_batches))
    served, counts = [], []
    for rank in range(world_size):
        dataset = make()
        dataset.rank, dataset.world_size = rank, world_size
        batches = list(dataset)
        counts.append((len(batches), len(dataset)))
        for batch in batches:
            for j, index in enumerate(batch["index"].tolist()):
                served.append(index)
                for key, value in batch.items():
                    assert torch.equal(value[j], whole[index][key]), key
    assert len({c for c in counts}) == 1 and counts[0][0] == counts[0][1]
    assert sorted(served) == list(range(3 * n_batches))
