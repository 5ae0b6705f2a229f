"""A 2-rank DDP run (``ddp_spawn``, CPU, gloo): ranks see disjoint trials that cover the split.

One run checks both modes (starting DDP is the expensive part): Lightning shards the map-style
training set, and at the end of the epoch each rank also iterates the stream of the same split,
which shards itself by the process group's rank. A Lightning checkpoint taken mid-epoch resumes
the stream where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from neurotorch.data.fmri.stream import BetasStream
from neurotorch.data.sampling import GroupedBatchSampler
from neurotorch.lightning import LaionFMRIDataModule


class RecordTrials(L.LightningModule):
    """Writes the (subject, session, trial) of every training item it sees, one file per rank."""

    def __init__(self, out: str):
        super().__init__()
        self.out = out
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list] = []

    def training_step(self, batch, batch_idx):
        self.seen += [
            [s, ses, int(t)]
            for s, ses, t in zip(batch["subject"], batch["session"], batch["trial"], strict=True)
        ]
        return (self.weight * batch["betas"].mean()).sum()

    def on_train_epoch_end(self):
        dm = self.trainer.datamodule
        names = dm.datasets["train"].trials["image_name"]
        stream = BetasStream(
            dm.root, dm.subjects, voxels={"roi": "face"}, trials={"image_names": names}
        )
        streamed = [[i["subject"], i["session"], int(i["trial"])] for i in stream]
        record = {"map": self.seen, "stream": streamed}
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(record))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.slow
def test_two_ranks_see_disjoint_trials_covering_the_split(tiny_laion_root, tmp_path):
    dm = LaionFMRIDataModule(
        data_dir=str(tiny_laion_root),
        subject=["sub-01", "sub-02"],
        voxels={"roi": "face"},
        trials={"split": "random_0"},
        batch_size=16,
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(RecordTrials(str(tmp_path)), dm)
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    dm.setup("fit")
    trials = dm.datasets["train"].trials
    expected = set(
        zip(trials["subject"], trials["session"], trials["trial"].astype(int), strict=True)
    )
    # both pad to equal counts per rank: the stream with one repeated trial when the count is
    # odd, the subject-grouped batch sampler with one repeated batch when the batch count is odd
    stream = [[tuple(k) for k in record["stream"]] for record in records]
    assert len(stream[0]) == len(stream[1]) == -(-len(expected) // 2)
    assert set(stream[0]) | set(stream[1]) == expected
    assert len(set(stream[0]) & set(stream[1])) == -len(expected) % 2
    mapped = [[tuple(k) for k in record["map"]] for record in records]
    assert set(mapped[0]) | set(mapped[1]) == expected
    batches = list(GroupedBatchSampler.for_dataset(dm.datasets["train"], 16, shuffle=True, seed=0))
    repeated = len(batches[0]) if len(batches) % 2 else 0  # the wrap-around batch
    assert len(set(mapped[0]) & set(mapped[1])) == repeated
    assert len(mapped[0]) + len(mapped[1]) == len(expected) + repeated
    assert len(mapped[0]) == len(set(mapped[0])) and len(mapped[1]) == len(set(mapped[1]))


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
        accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    every_step = ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}"
    )
    uninterrupted = RecordTrials(str(tmp_path))
    L.Trainer(callbacks=[every_step], **settings).fit(uninterrupted, datamodule())
    resumed = RecordTrials(str(tmp_path))
    L.Trainer(**settings).fit(resumed, datamodule(), ckpt_path=tmp_path / "step=3.ckpt")
    assert len(uninterrupted.seen) == len(datamodule_trials(tiny_laion_root))
    assert resumed.seen == uninterrupted.seen[3 * 16 :]


def datamodule_trials(root):
    dm = LaionFMRIDataModule(
        data_dir=str(root), voxels={"roi": "face"}, trials={"split": "random_0"}, streaming=True
    )
    dm.setup("fit")
    return dm.datasets["train"].trials
