"""The read-ahead paths of real-size betas files under a real Trainer.

Betas files above `neurotorch.io.nifti._READ_AHEAD_MIN_BYTES` are inflated and masked on helper
threads (`decode_ahead`): with no workers, one thread inflates and another masks; each of two
workers has one core and one helper thread; a reader that starts inside a file (a second worker,
a second rank) seeks through the file's index. The tiny test tree takes the inline path, so this
module writes a tree whose session files are above the threshold (168 trials of 32×38×32).

Each item is identified by its trial and a digest of its values, so the exactly-once check also
compares every delivered value with nibabel's full load of the file. One process runs with 0 and
2 workers (two epochs, persistent workers, then test), and a run resumed mid-epoch from a
checkpoint; one 2-rank DDP launch runs with 2 workers per rank.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from exactly_once import (
    become_rank,
    check_exactly_once,
    free_port,
    read_records,
)
from lightning.pytorch.callbacks import ModelCheckpoint
from record_ids import RecordIds, trainer

from neurotorch.fmri import layout
from neurotorch.io import nifti
from neurotorch.lightning import LaionFMRIDataModule
from neurotorch.synthetic.laion_fmri import SizePreset, make_laion_fmri

PRESET = SizePreset(1, 2, (32, 38, 32), 10, 30, 1, 60, 4, 32, 3.0, 300)
BATCH = 5
EPOCHS = 2
SPLITS = ("train/0", "train/1", "val/0", "val/1", "test")


@pytest.fixture(scope="module")
def large_root(tmp_path_factory) -> Path:
    root = make_laion_fmri(tmp_path_factory.mktemp("laion") / "large", size=PRESET, seed=0)
    for session in ("ses-01", "ses-02"):
        header = nib.load(root / layout.session_betas("sub-01", session)).header
        raw_bytes = np.prod(header.get_data_shape()) * header.get_data_dtype().itemsize
        assert raw_bytes > nifti._READ_AHEAD_MIN_BYTES  # else the inline path would be tested
    return root


def module(root, num_workers: int) -> LaionFMRIDataModule:
    return LaionFMRIDataModule(
        data_dir=str(root),
        subject="sub-01",
        # the subject's own pool: 205 / 33 / 62 trials, so two ranks pad train and val
        trials={"split": "random_0", "pool": "sub-01", "val_fraction": 0.13},
        read={"shuffle_buffer": 16},
        streaming=True,
        batch_size=BATCH,
        num_workers=num_workers,
    )


def digest(values) -> str:
    return hashlib.sha1(np.ascontiguousarray(values, dtype=np.float32).tobytes()).hexdigest()


def ids_with_values(batch) -> list:
    return [
        [s, ses, int(t), digest(b.numpy())]
        for s, ses, t, b in zip(
            batch["subject"], batch["session"], batch["trial"].tolist(), batch["betas"], strict=True
        )
    ]


def expected(dm, split: str, root: Path) -> list:
    """The split's trials with the digest of their values in nibabel's full load."""
    dataset = dm.datasets[split.split("/")[0]]
    mask = dataset.voxel_masks()["sub-01"]
    volumes = {
        session: np.asarray(nib.load(root / layout.session_betas("sub-01", session)).dataobj)
        for session in set(dataset.trials["session"])
    }
    table = dataset.trials
    return [
        [s, ses, int(t), digest(volumes[ses][..., int(t)][mask])]
        for s, ses, t in zip(table["subject"], table["session"], table["trial"], strict=True)
    ]


def check_run(records: list, root: Path, world_size: int) -> None:
    dm = module(root, 0)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    paddings = []
    for split in SPLITS:
        wanted = expected(dm, split, root)
        paddings.append(-len(wanted) % world_size)
        check_exactly_once(records, split, wanted, padding=paddings[-1])
    assert world_size == 1 or any(paddings)  # remainders: ranks that pad are part of the check


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_one_process_serves_nibabel_values_once(num_workers, large_root, tmp_path):
    model = RecordIds(str(tmp_path), ids_with_values)
    run = trainer(tmp_path, max_epochs=EPOCHS)
    dm = module(large_root, num_workers)
    run.fit(model, dm)
    run.test(model, dm)
    check_run(read_records(tmp_path, 1), large_root, world_size=1)


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_serves_the_rest_of_it_once(large_root, tmp_path):
    stop, resumed_out = tmp_path / "stopped", tmp_path / "resumed"
    stop.mkdir(), resumed_out.mkdir()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    first = RecordIds(str(stop), ids_with_values)
    trainer(tmp_path, max_steps=3, callbacks=[checkpoint], enable_checkpointing=True).fit(
        first, module(large_root, 2)
    )
    resumed = RecordIds(str(resumed_out), ids_with_values)
    dm = module(large_root, 2)
    trainer(tmp_path, max_epochs=1, limit_val_batches=0).fit(
        resumed, dm, ckpt_path=tmp_path / "epoch=0-step=3.ckpt"
    )
    (before,), (after,) = read_records(stop, 1), read_records(resumed_out, 1)
    assert len(before["train/0"]) == 3
    record = {"train/0": before["train/0"] + after["train/0"]}
    check_exactly_once([record], "train/0", expected(dm, "train/0", large_root), padding=0)


def _ddp_rank(rank: int, port: int, out: str, root: str) -> None:
    """One rank, launched as ``torchrun`` launches it (its DataLoader workers fork)."""
    become_rank(rank, port)
    model = RecordIds(out, ids_with_values)
    run = trainer(out, max_epochs=EPOCHS, devices=2, strategy="ddp")
    dm = module(root, 2)
    run.fit(model, dm)
    run.test(model, dm)


@pytest.mark.slow
def test_two_ranks_with_two_workers_serve_nibabel_values_once(large_root, tmp_path):
    torch.multiprocessing.spawn(
        _ddp_rank, args=(free_port(), str(tmp_path), str(large_root)), nprocs=2
    )
    check_run(read_records(tmp_path, 2), large_root, world_size=2)
