"""Shared by the encoder tests: a one-epoch ridge fit plus test, and the generator's ground truth."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np

from neurotorch.models import LinearEncoder


def fit_and_test_encoder(datamodule: L.LightningDataModule, output_dir: Path) -> LinearEncoder:
    """Fit `LinearEncoder` for one epoch on ``datamodule`` and run its test split."""
    model = LinearEncoder(output_dir=str(output_dir))
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, datamodule)
    trainer.test(model, datamodule)
    return model


def ground_truth_rows(root: Path, subject: str, voxels: np.ndarray) -> dict[str, np.ndarray]:
    """Attainable r and signal/noise flags of ``voxels`` (flat grid indices) from ``_groundtruth``."""
    truth = np.load(root / "_groundtruth" / f"{subject}_encoding.npz")
    rows = np.searchsorted(truth["brain_index"], voxels)
    assert np.array_equal(truth["brain_index"][rows], voxels), "voxels outside the brain mask"
    return {"attainable_r": truth["attainable_r"][rows], "signal": truth["amplitude"][rows] > 0}
