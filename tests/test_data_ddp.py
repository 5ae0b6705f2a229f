"""A Lightning checkpoint taken mid-epoch resumes the stream where it stopped.

(The 2-rank checks of both modes, and of a stream iterated by hand in each rank, run in the one
DDP launch of `tests/test_exactly_once.py`.)
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from neurotorch.lightning import LaionFMRIDataModule


class RecordTrials(L.LightningModule):
    """Records the (subject, session, trial) of every training item it sees."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list] = []

    def training_step(self, batch, batch_idx):
        self.seen += [
            [s, ses, int(t)]
            for s, ses, t in zip(batch["subject"], batch["session"], batch["trial"], strict=True)
        ]
        return (self.weight * batch["betas"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_checkpoint_resumes_the_stream_mid_epoch(tiny_laion_root, tmp_path):
    def datamodule():
        return LaionFMRIDataModule(
            data_dir=str(tiny_laion_root),
            voxels={"roi": "face"},
            trials={"split": "random_0"},
            read={"shuffle_buffer": 8},
            batch_size=16,
            streaming=True,
        )

    settings = dict(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    every_step = ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}"
    )
    uninterrupted = RecordTrials()
    L.Trainer(callbacks=[every_step], **settings).fit(uninterrupted, datamodule())
    resumed = RecordTrials()
    L.Trainer(**settings).fit(resumed, datamodule(), ckpt_path=tmp_path / "step=3.ckpt")
    assert len(uninterrupted.seen) == len(datamodule_trials(tiny_laion_root))
    assert resumed.seen == uninterrupted.seen[3 * 16 :]


def datamodule_trials(root):
    dm = LaionFMRIDataModule(
        data_dir=str(root), voxels={"roi": "face"}, trials={"split": "random_0"}, streaming=True
    )
    dm.setup("fit")
    return dm.datasets["train"].trials
