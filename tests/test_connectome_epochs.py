"""The training order of connectome subjects changes every epoch and resumes where it stopped.

Walked as a user would: a plain ``DataLoader`` over `ConnectomeChunks` with ``set_epoch`` (two
persistent workers), neurotorch's ``StreamLoader``, and `ConnectomeDataModule` map-style and
streaming, with 0 and 2 (persistent) workers, through a real Lightning ``Trainer``; then a
checkpoint taken in the middle of epoch 1 resumes that epoch's order, by hand and through
Lightning. The expected orders are what an uninterrupted run served.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from neurotorch.data.connectome.subjects import ConnectomeChunks
from neurotorch.data.loader import StreamLoader
from neurotorch.lightning.connectome import ConnectomeDataModule
from neurotorch.synthetic.connectome import BATCH_DIR, make_connectome

N_SUBJECTS = 12
EPOCHS = 3


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory) -> Path:
    root = make_connectome(
        tmp_path_factory.mktemp("epochs") / "c",
        n_subjects=N_SUBJECTS,
        n_timepoints=8,
        voxel_mm=8,
        subjects_per_chunk=5,
        seed=2,
    )
    return root / BATCH_DIR


def _indices(batches) -> list[int]:
    return [int(i) for batch in batches for i in torch.as_tensor(batch["index"]).reshape(-1)]


def _shut_down(*loaders) -> None:
    """Stop persistent workers now: left to the garbage collector, each worker's shutdown waits
    out torch's 5 s join timeout under pytest-timeout."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)
        if hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


def _assert_new_order_every_epoch(orders: list[list[int]], subjects: list[int]) -> None:
    for order in orders:
        assert sorted(order) == sorted(subjects), "every subject once per epoch"
    assert all(a != b for a, b in zip(orders, orders[1:], strict=False)), orders


@pytest.mark.slow
def test_plain_dataloader_with_set_epoch_and_persistent_workers(batch_dir):
    chunks = ConnectomeChunks(batch_dir, shuffle=True, seed=5)
    loader = DataLoader(chunks, batch_size=None, num_workers=2, persistent_workers=True)
    orders = []
    for epoch in range(EPOCHS):
        chunks.set_epoch(epoch)
        orders.append(_indices(loader))
    _assert_new_order_every_epoch(orders, list(range(N_SUBJECTS)))
    chunks.set_epoch(1)
    assert _indices(loader) == orders[1]  # an epoch's order is its own
    _shut_down(loader)


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_loader_reshuffles_and_resumes_mid_epoch(batch_dir, num_workers):
    def loader():
        chunks = ConnectomeChunks(batch_dir, shuffle=True, seed=5)
        return StreamLoader(
            chunks, batch_size=2, num_workers=num_workers, persistent_workers=num_workers > 0
        )

    first = loader()
    orders = [_indices(first) for _ in range(EPOCHS)]
    _assert_new_order_every_epoch(orders, list(range(N_SUBJECTS)))
    interrupted = loader()
    _indices(interrupted)  # epoch 0
    iterator = iter(interrupted)
    seen = _indices([next(iterator), next(iterator)])  # two batches into epoch 1
    state = interrupted.state_dict()
    del iterator
    resumed = loader()
    resumed.load_state_dict(state)
    assert seen + _indices(resumed) == orders[1]
    assert _indices(resumed) == orders[2]
    _shut_down(first, interrupted, resumed)


class RecordingModel(L.LightningModule):
    """Records the subject indices of every training batch, per epoch."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).extend(_indices([batch]))
        return (self.weight * batch["timeseries"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _trainer(tmp_path: Path, **options) -> L.Trainer:
    return L.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        **options,
    )


def _module(batch_dir: Path, streaming: bool, num_workers: int) -> ConnectomeDataModule:
    return ConnectomeDataModule(
        data_dir=str(batch_dir),
        batch_size=2,
        num_workers=num_workers,
        val_fraction=0.0,
        test_fraction=0.25,
        streaming=streaming,
        seed=3,
    )


VARIANTS = [
    pytest.param(False, 0, id="map-0-workers"),
    pytest.param(False, 2, id="map-2-workers"),
    pytest.param(True, 0, id="stream-0-workers"),
    pytest.param(True, 2, id="stream-2-workers"),
]
CHECKPOINT_STEP = 6  # inside epoch 1: 9 training subjects make 5 batches of 2 per epoch


def _fit(batch_dir: Path, tmp_path: Path, streaming: bool, num_workers: int) -> RecordingModel:
    model = RecordingModel()
    steps = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=CHECKPOINT_STEP, save_top_k=-1
    )
    data = _module(batch_dir, streaming, num_workers)
    _trainer(tmp_path, callbacks=[steps], enable_checkpointing=True).fit(model, datamodule=data)
    return model


@pytest.mark.slow
@pytest.mark.parametrize(("streaming", "num_workers"), VARIANTS)
def test_lightning_reshuffles_every_epoch(batch_dir, tmp_path, streaming, num_workers):
    model = _fit(batch_dir, tmp_path, streaming, num_workers)
    train = _module(batch_dir, streaming, num_workers).subject_splits()["train"]
    _assert_new_order_every_epoch([model.seen[epoch] for epoch in range(EPOCHS)], train)


@pytest.mark.slow
@pytest.mark.parametrize(("streaming", "num_workers"), VARIANTS)
def test_lightning_resumes_mid_epoch_in_that_epochs_order(
    batch_dir, tmp_path, streaming, num_workers
):
    orders = _fit(batch_dir, tmp_path, streaming, num_workers).seen
    per_epoch = -(-len(orders[0]) // 2)  # batches of 2 subjects, the last one may be short
    assert per_epoch < CHECKPOINT_STEP < 2 * per_epoch
    middle = next(p for p in (tmp_path / "ckpt").iterdir() if f"step={CHECKPOINT_STEP}" in p.name)
    resumed = RecordingModel()
    _trainer(tmp_path).fit(
        resumed, datamodule=_module(batch_dir, streaming, num_workers), ckpt_path=middle
    )
    done = 2 * (CHECKPOINT_STEP - per_epoch)  # subjects of epoch 1 served before the checkpoint
    assert resumed.seen[1] == orders[1][done:]
    assert resumed.seen[2] == orders[2]


@pytest.mark.slow
@pytest.mark.parametrize("head", [1, 2])
@pytest.mark.parametrize(("streaming", "num_workers"), VARIANTS)
def test_datamodule_loader_resumes_by_hand(batch_dir, streaming, num_workers, head):
    """The DataModule's loader, stopped after ``head`` batches of epoch 1 (after one, the second
    worker has handed out none of its batches of the epoch) and restored in a fresh one."""
    loader = _module(batch_dir, streaming, num_workers).train_dataloader()
    orders = [_indices(loader) for _ in range(EPOCHS)]
    interrupted = _module(batch_dir, streaming, num_workers).train_dataloader()
    _indices(interrupted)
    iterator = iter(interrupted)
    seen = _indices([next(iterator) for _ in range(head)])
    state = interrupted.state_dict()
    del iterator
    resumed = _module(batch_dir, streaming, num_workers).train_dataloader()
    resumed.load_state_dict(state)
    assert seen + _indices(resumed) == orders[1]
    assert _indices(resumed) == orders[2]
    _shut_down(loader, interrupted, resumed)
