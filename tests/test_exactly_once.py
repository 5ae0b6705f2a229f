"""Every item exactly once (padding aside) through a real Trainer: every DataModule, 0 and 2
workers, and 2-rank DDP (CPU, gloo).

Split and batch sizes are chosen so that nothing divides evenly. Expected ids come from the
DataModule's split tables; the allowed extras are the padding of the sharding contract
(`neurotorch.data.sharding`): ``ceil(n / world) * world - n`` units, here 0 or 1 unit.

Cost: starting two ranks is the expensive part, so one launch runs every DDP case (and a
`BetasStream` iterated directly in each rank); the sFlex solver runs a few iterations only (the
property is about which items are seen, not about the solver's convergence).
"""

from __future__ import annotations

import faulthandler
import json
from pathlib import Path

import pytest
import torch
from exactly_once import (
    become_rank,
    check_exactly_once,
    fmri_ids,
    free_port,
    index_ids,
    read_records,
    subject_ids,
)
from lightning.pytorch.callbacks import ModelCheckpoint
from record_ids import RecordIds, trainer

from neurotorch.data.fmri.stream import BetasStream
from neurotorch.lightning import (
    CalibrationDataModule,
    ConnectomeDataModule,
    LaionFMRIDataModule,
    SensorSimDataModule,
)

BATCH = 5  # prime; 2 workers then split every split unevenly into batches (76 = 15 * 5 + 1)
EPOCHS = 2
RANK_HANG_S = 200  # under the launching test's budget (tests/budgets.json)


def fmri_module(root, mode: str, num_workers: int, subject="sub-01") -> LaionFMRIDataModule:
    return LaionFMRIDataModule(
        data_dir=str(root),
        subject=subject,
        voxels={"roi": "face"},
        trials={"split": "random_0", "val_fraction": 0.13},
        read={"shuffle_buffer": 16} if mode == "stream" else None,
        streaming=mode == "stream",
        batch_size=BATCH,
        num_workers=num_workers,
    )


def meeg_module(cls, num_workers: int, **options):
    return cls(
        leadfield={"n_sources": 97},
        train_length=45,
        val_length=17,
        test_length=11,
        batch_size=BATCH,
        num_workers=num_workers,
        streaming=True,
        nnz=(1, 3),
        alpha=(0.5, 0.9),
        **options,
    )


def connectome_module(num_workers: int) -> ConnectomeDataModule:
    # 6 subjects: 4 train (batches of 3 and 1), 1 val, 1 test
    return ConnectomeDataModule(batch_size=3, num_workers=num_workers, streaming=True)


def fmri_expected(dm, split: str) -> list:
    dataset = dm.datasets[split]
    table = dataset.trials if dm.hparams.streaming else dataset.items
    return [
        [s, ses, int(t)]
        for s, ses, t in zip(table["subject"], table["session"], table["trial"], strict=True)
    ]


def meeg_expected(dm, split: str) -> list:
    dataset = dm.datasets[split]
    return list(range(dataset.n_batches * dataset.batch_size))


def connectome_expected(dm, split: str) -> list:
    return dm.subject_splits()[split]


CASES = {
    "fmri-map": (lambda root, w: fmri_module(root, "map", w), fmri_ids, fmri_expected),
    "fmri-stream": (lambda root, w: fmri_module(root, "stream", w), fmri_ids, fmri_expected),
    "meeg-sim": (lambda root, w: meeg_module(SensorSimDataModule, w), index_ids, meeg_expected),
    "meeg-calibration": (
        lambda root, w: meeg_module(CalibrationDataModule, w),
        index_ids,
        meeg_expected,
    ),
    # sFlex: a per-leadfield basis prepared in every worker and rank, per-trial iterations
    "meeg-calibration-sflex": (
        lambda root, w: meeg_module(
            CalibrationDataModule,
            w,
            posterior={
                "solver": "gamma_map_sflex",
                "noise_type": "baseline",
                "options": {"max_iter": 3},
            },
        ),
        index_ids,
        meeg_expected,
    ),
    "connectome": (lambda root, w: connectome_module(w), subject_ids, connectome_expected),
}


ONE_PROCESS = [(case, workers) for case in CASES for workers in (0, 2)]
ONE_PROCESS += [("fmri-stream", 1), ("fmri-stream", 3), ("connectome", 3)]


@pytest.mark.slow
@pytest.mark.parametrize("case, num_workers", ONE_PROCESS)
def test_one_process_sees_every_item_once(case, num_workers, tiny_laion_root, tmp_path):
    make, ids, expected = CASES[case]
    dm = make(tiny_laion_root, num_workers)
    model = RecordIds(str(tmp_path), ids)
    run = trainer(tmp_path, max_epochs=EPOCHS)
    run.fit(model, dm)
    run.test(model, dm)
    (record,) = read_records(tmp_path, 1)
    check_exactly_once([record], "test", expected(dm, "test"), padding=0)
    for epoch in range(EPOCHS):
        for split in ("train", "val"):
            check_exactly_once([record], f"{split}/{epoch}", expected(dm, split), padding=0)
    assert len(record["train/0"]) == len(dm.train_dataloader())


def _padding(n_units: int, world_size: int, unit_size: int = 1) -> int:
    return (-n_units % world_size) * unit_size


DDP_CASES = [*CASES, "fmri-map-two-subjects"]


def _ddp_module(case: str, root: Path):
    """A case's DataModule in the 2-rank run: the fMRI stream and the sFlex calibration data
    with 2 workers; the map-style set with one subject and with two (batches of one subject
    each, sharded whole)."""
    if case == "fmri-map-two-subjects":
        return fmri_module(root, "map", 0, subject=["sub-01", "sub-02"])
    return CASES[case][0](root, 2 if case in ("fmri-stream", "meeg-calibration-sflex") else 0)


def _ids_and_expected(case: str):
    return CASES.get(case, CASES["fmri-map"])[1:]


def _ddp_rank(rank: int, port: int, out: str, root: str) -> None:
    """One rank of a 2-rank run launched as ``torchrun`` launches (`become_rank`): every case,
    fit then test."""
    become_rank(rank, port)
    # a rank that hangs prints where it is and exits, so the launch fails with both stacks
    faulthandler.dump_traceback_later(RANK_HANG_S, exit=True)
    for case in DDP_CASES:
        dm = _ddp_module(case, Path(root))
        Path(out, case).mkdir(exist_ok=True)
        model = RecordIds(str(Path(out, case)), _ids_and_expected(case)[0])
        run = trainer(out, max_epochs=EPOCHS, devices=2, strategy="ddp")
        run.fit(model, dm)
        run.test(model, dm)
    _stop_and_resume_in_epoch_one(Path(out, "resume"), root)
    # a stream iterated by hand in each rank shards itself by the rank of the process
    stream = BetasStream(root, ["sub-01", "sub-02"], voxels={"roi": "face"}, features=None)
    seen = [[i["subject"], i["session"], int(i["trial"])] for i in stream]
    Path(out, f"stream-rank{rank}.json").write_text(json.dumps(seen))


def _stop_and_resume_in_epoch_one(out: Path, root: str) -> None:
    """In a rank: the stream (2 persistent workers a rank) fitted to one step into epoch 1 with a
    checkpoint every step, then a fresh run resumed from that step's checkpoint to the end of
    epoch 1 (records in ``out/stopped`` and ``out/resumed``)."""
    stopped, resumed = out / "stopped", out / "resumed"
    for folder in (stopped, resumed):
        folder.mkdir(parents=True, exist_ok=True)
    first = RecordIds(str(stopped), fmri_ids)
    every_step = ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=1, save_top_k=-1)
    probe = fmri_module(root, "stream", 2)
    probe.setup("fit")
    steps = len(probe.train_dataloader())  # this rank's batches an epoch (equal on both)
    trainer(out, max_epochs=2, max_steps=steps + 1, devices=2, strategy="ddp", callbacks=[every_step],
            enable_checkpointing=True, limit_val_batches=0).fit(
        first, fmri_module(root, "stream", 2)
    )  # fmt: skip
    trainer(out, max_epochs=2, devices=2, strategy="ddp", limit_val_batches=0).fit(
        RecordIds(str(resumed), fmri_ids),
        fmri_module(root, "stream", 2),
        ckpt_path=out / "checkpoints" / f"epoch=1-step={steps + 1}.ckpt",
    )


@pytest.fixture(scope="module")
def two_rank_records(tiny_laion_root, tmp_path_factory) -> Path:
    """All cases run once in one 2-rank DDP launch (starting the ranks is the expensive part)."""
    out = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(
        _ddp_rank, args=(free_port(), str(out), str(tiny_laion_root)), nprocs=2
    )
    return out


def _expected_padding(case: str, n_items: int) -> int:
    if case.startswith(("meeg", "fmri-map")):  # batches are halved, never repeated
        return 0
    return _padding(n_items, 2)


@pytest.mark.slow
@pytest.mark.parametrize("case", DDP_CASES)
def test_two_ranks_see_every_item_once_with_equal_batch_counts(
    case, two_rank_records, tiny_laion_root
):
    expected = _ids_and_expected(case)[1]
    dm = _ddp_module(case, tiny_laion_root)
    dm.prepare_data()
    dm.setup("fit")
    records = read_records(two_rank_records / case, 2)
    for split in ("train/0", "train/1", "val/0", "val/1", "test"):
        wanted = expected(dm, split.split("/")[0])
        check_exactly_once(records, split, wanted, _expected_padding(case, len(wanted)))


@pytest.mark.slow
def test_a_stream_iterated_in_each_rank_reads_that_ranks_shard(two_rank_records, tiny_laion_root):
    stream = BetasStream(
        tiny_laion_root, ["sub-01", "sub-02"], voxels={"roi": "face"}, features=None
    )
    wanted = [
        [s, ses, int(t)]
        for s, ses, t in zip(
            *(stream.trials[c] for c in ("subject", "session", "trial")), strict=True
        )
    ]
    ranks = [json.loads((two_rank_records / f"stream-rank{r}.json").read_text()) for r in (0, 1)]
    records = [{"stream": [rank]} for rank in ranks]  # one "batch" per rank: equal counts
    check_exactly_once(records, "stream", wanted, _padding(len(wanted), 2))
    assert len(ranks[0]) == len(ranks[1]) == -(-len(wanted) // 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, subject", [("stream", "sub-01"), ("map", "sub-01"), ("map", ["sub-01", "sub-02"])]
)
def test_resume_mid_epoch_from_a_checkpoint_with_workers(mode, subject, tiny_laion_root, tmp_path):
    """A run stopped after 3 steps and resumed from its checkpoint sees the rest of the epoch:
    before and after together are the training split, each trial once."""
    stop = tmp_path / "stopped"
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    first = RecordIds(str(stop.mkdir() or stop), fmri_ids)
    trainer(tmp_path, max_steps=3, callbacks=[checkpoint], enable_checkpointing=True).fit(
        first, fmri_module(tiny_laion_root, mode, 2, subject)
    )
    resumed_out = tmp_path / "resumed"
    resumed = RecordIds(str(resumed_out.mkdir() or resumed_out), fmri_ids)
    dm = fmri_module(tiny_laion_root, mode, 2, subject)
    trainer(tmp_path, max_epochs=1, limit_val_batches=0).fit(
        resumed, dm, ckpt_path=tmp_path / "epoch=0-step=3.ckpt"
    )
    (before,) = read_records(stop, 1)
    (after,) = read_records(resumed_out, 1)
    assert len(before["train/0"]) == 3
    record = {"train/0": before["train/0"] + after["train/0"]}
    check_exactly_once([record], "train/0", fmri_expected(dm, "train"), padding=0)


@pytest.mark.slow
def test_two_ranks_resumed_one_step_into_epoch_one_see_the_rest_of_it(
    two_rank_records, tiny_laion_root
):
    """2-rank DDP, 2 persistent workers a rank: a run stopped one step into epoch 1 and resumed
    from that step's checkpoint (which rank 0 wrote for both) sees the rest of epoch 1 in every
    rank; before and after together are the training split once, padding aside, in an order
    that is not epoch 0's."""
    dm = fmri_module(tiny_laion_root, "stream", 2)
    dm.setup("fit")
    wanted = fmri_expected(dm, "train")
    before = read_records(two_rank_records / "resume" / "stopped", 2)
    after = read_records(two_rank_records / "resume" / "resumed", 2)
    assert [len(b["train/1"]) for b in before] == [1, 1]
    assert all("train/0" not in a for a in after)  # epoch 0 is not run again
    epoch_one = [
        {"train/1": b["train/1"] + a["train/1"]} for b, a in zip(before, after, strict=True)
    ]
    check_exactly_once(epoch_one, "train/1", wanted, _padding(len(wanted), 2))
    assert [len(r["train/1"]) for r in epoch_one] == [len(b["train/0"]) for b in before]
    assert [r["train/1"] for r in epoch_one] != [b["train/0"] for b in before]  # reshuffled
