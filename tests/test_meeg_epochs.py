"""Epochs of the M/EEG DataModules as a user drives them: a second training epoch reshuffles
(map-style) or draws new trials (streaming), with 0 and 2 workers that persist across epochs,
by hand and through a real Lightning Trainer; validation and test data stay the same; a run
resumed from a checkpoint taken in epoch 1 finishes that epoch's order."""

from __future__ import annotations

import os

import pytest
import torch
from exactly_once import read_records
from lightning.pytorch.callbacks import ModelCheckpoint
from record_ids import RecordIds, trainer

from neurotorch.data.meeg.simulation import SimulatedSensorBatches
from neurotorch.data.sampling import GroupedBatchSampler
from neurotorch.lightning.meeg import CalibrationDataModule, SensorSimDataModule

pytestmark = pytest.mark.slow

BATCH = 4
TRAIN = 12  # three batches per epoch


def module(cls, *, streaming: bool, num_workers: int):
    return cls(
        leadfield={"retrieve_mode": "random", "n_sensors": 6, "n_sources": 10},
        nnz=(1, 2),
        alpha=(0.4, 0.8),
        train_length=TRAIN,
        val_length=8,
        test_length=8,
        batch_size=BATCH,
        num_workers=num_workers,
        seed=3,
        streaming=streaming,
    )


def trials(batch) -> list:
    """Each trial of a batch as ``[index, sum of its sensor data]``: what it is, not only where."""
    sums = batch["y"].double().flatten(1).sum(1)
    return [[int(i), round(float(s), 6)] for i, s in zip(batch["index"], sums, strict=True)]


def epoch_of(loader) -> list:
    return [trials(batch) for batch in loader]


def _flat(epoch: list) -> list:
    return [trial for batch in epoch for trial in batch]


def check_second_epoch(first: list, second: list, *, streaming: bool) -> None:
    """Map-style: the same trials (item ``i`` is fixed by ``(seed, i)``) in another order;
    streaming: other trials."""
    assert len(first) == len(second) == TRAIN // BATCH
    if streaming:
        assert not {tuple(t) for t in _flat(first)} & {tuple(t) for t in _flat(second)}
    else:
        assert first != second
        assert sorted(_flat(first)) == sorted(_flat(second))
        assert sorted(i for i, _ in _flat(first)) == list(range(TRAIN))


CASES = [
    (cls, streaming, workers)
    for cls in (SensorSimDataModule, CalibrationDataModule)
    for streaming in (False, True)
    for workers in (0, 2)
]


@pytest.mark.parametrize(("cls", "streaming", "num_workers"), CASES)
def test_second_epoch_by_hand(cls, streaming, num_workers):
    dm = module(cls, streaming=streaming, num_workers=num_workers)
    train = dm.train_dataloader()
    assert train.persistent_workers == (num_workers > 0)
    first, second = epoch_of(train), epoch_of(train)
    check_second_epoch(first, second, streaming=streaming)
    for part in ("val", "test"):
        loader = dm.dataloader(part)
        assert epoch_of(loader) == epoch_of(loader)


@pytest.mark.parametrize(
    ("cls", "streaming", "num_workers"),
    [
        (CalibrationDataModule, False, 0),
        (CalibrationDataModule, False, 2),
        (CalibrationDataModule, True, 0),
        (CalibrationDataModule, True, 2),
        (SensorSimDataModule, False, 2),
        (SensorSimDataModule, True, 2),
    ],
)
def test_second_epoch_through_a_trainer(cls, streaming, num_workers, tmp_path):
    dm = module(cls, streaming=streaming, num_workers=num_workers)
    run = trainer(tmp_path, max_epochs=2)
    run.fit(RecordIds(str(tmp_path), trials), dm)
    (record,) = read_records(tmp_path, 1)
    check_second_epoch(record["train/0"], record["train/1"], streaming=streaming)
    assert record["val/0"] == record["val/1"]
    # the trainer saw what a plain pass over the validation loader gives
    assert record["val/0"] == epoch_of(dm.val_dataloader())


# Lightning sets the epoch on ``loader.sampler`` and ``loader.batch_sampler.sampler`` only, and
# a grouped batch sampler without a state of its own restarts from epoch 0 after a restore: the
# shared sampler's known bug (fixed by a stateful GroupedBatchSampler); strict, so that the mark
# goes once the fix is in.
_MAP_RESUME = pytest.mark.xfail(
    not hasattr(GroupedBatchSampler, "state_dict"),
    strict=True,
    reason="map-style resume in epoch >= 1 returns to epoch 0's order (GroupedBatchSampler)",
)


@pytest.mark.parametrize(
    ("cls", "streaming", "num_workers"),
    [
        pytest.param(CalibrationDataModule, False, 2, marks=_MAP_RESUME),
        (CalibrationDataModule, True, 2),
        (SensorSimDataModule, True, 0),
    ],
)
def test_resume_in_the_second_epoch_continues_its_order(cls, streaming, num_workers, tmp_path):
    """Stopped after the first batch of epoch 1 and resumed from that checkpoint, a run sees the
    rest of epoch 1 exactly as an uninterrupted run does."""
    whole = tmp_path / "whole"
    whole.mkdir()
    trainer(whole, max_epochs=2, limit_val_batches=0).fit(
        RecordIds(str(whole), trials), module(cls, streaming=streaming, num_workers=num_workers)
    )
    steps = TRAIN // BATCH + 1  # one step into epoch 1
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=steps, save_top_k=-1
    )
    trainer(
        stopped,
        max_epochs=2,
        max_steps=steps,
        limit_val_batches=0,
        callbacks=[checkpoint],
        enable_checkpointing=True,
    ).fit(
        RecordIds(str(stopped), trials), module(cls, streaming=streaming, num_workers=num_workers)
    )
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    trainer(resumed, max_epochs=2, limit_val_batches=0).fit(
        RecordIds(str(resumed), trials),
        module(cls, streaming=streaming, num_workers=num_workers),
        ckpt_path=tmp_path / "ckpt" / f"epoch=1-step={steps}.ckpt",
    )
    (expected,) = read_records(whole, 1)
    (before,) = read_records(stopped, 1)
    (after,) = read_records(resumed, 1)
    assert before["train/0"] == expected["train/0"]
    assert before["train/1"] + after["train/1"] == expected["train/1"]
    assert len(after["train/1"]) == TRAIN // BATCH - 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_restored_stream_draws_only_the_batches_it_still_yields(
    num_workers, tmp_path, monkeypatch
):
    """Restored one batch into epoch 1, the stream draws the rest of the epoch and not the batch
    before the resume point again (a restore that replays it costs a simulation, and for
    calibration data a posterior solve, per skipped batch)."""
    draw = SimulatedSensorBatches._batch

    def counted(self, batch_size, generator):
        with open(os.environ["DRAWN"], "a") as log:  # workers forked later see a later file
            log.write("x")
        return draw(self, batch_size, generator)

    monkeypatch.setattr(SimulatedSensorBatches, "_batch", counted)
    monkeypatch.setenv("DRAWN", str(tmp_path / "before"))

    def loader():
        return module(SensorSimDataModule, streaming=True, num_workers=num_workers).dataloader(
            "train"
        )

    whole = loader()
    epochs = [epoch_of(whole) for _ in range(2)]
    stopped = loader()
    epoch_of(stopped)
    iterator = iter(stopped)
    head = [trials(next(iterator))]
    state = stopped.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    monkeypatch.setenv("DRAWN", str(tmp_path / "resumed"))
    rest = epoch_of(resumed)
    assert head + rest == epochs[1]
    assert len((tmp_path / "resumed").read_text()) == len(rest) == TRAIN // BATCH - 1
    del iterator, whole, stopped, resumed  # persistent workers end with their loaders


def test_validation_items_are_the_same_in_every_worker_and_epoch():
    """The map-style validation part: item ``i`` is a function of ``(seed, i)`` alone, in the
    main process and in workers (up to float32 rounding of multi-threaded products)."""
    dm = module(CalibrationDataModule, streaming=False, num_workers=2)
    dataset = dm.dataset("val")
    direct = torch.stack([dataset[i]["y"] for i in range(len(dataset))])
    for _ in range(2):
        loaded = torch.cat([batch["y"] for batch in dm.val_dataloader()])
        torch.testing.assert_close(loaded, direct, rtol=0, atol=1e-6 * direct.abs().max().item())
