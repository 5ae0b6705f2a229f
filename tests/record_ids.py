"""`RecordIds`, a LightningModule that records the ids of every item it sees, and `trainer`, a
quiet CPU ``Trainer`` (see `exactly_once` for the records and their check)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch


class RecordIds(L.LightningModule):
    """Records ``ids(batch)`` of every batch per stage and epoch; the loss is a zero that has a
    gradient, so DDP synchronises."""

    def __init__(self, out: str, ids: Callable):
        super().__init__()
        self.out, self.ids = out, ids
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[str, list] = {}

    def _record(self, stage: str, batch) -> torch.Tensor:
        if not self.trainer.sanity_checking:
            key = f"{stage}/{self.current_epoch}" if stage != "test" else stage
            self.seen.setdefault(key, []).append(self.ids(batch))
        return (self.weight * 0.0).sum()

    def training_step(self, batch, batch_idx):
        return self._record("train", batch)

    def validation_step(self, batch, batch_idx):
        self._record("val", batch)

    def test_step(self, batch, batch_idx):
        self._record("test", batch)

    def _save(self) -> None:
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def on_train_end(self):  # the test stage adds its batches and writes again
        self._save()

    def on_test_end(self):
        self._save()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def trainer(tmp_path, **overrides) -> L.Trainer:
    settings = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    settings.update(overrides)
    return L.Trainer(**settings)
