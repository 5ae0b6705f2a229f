"""Shared by the encoder tests: a one-epoch ridge fit plus test, and the generator's ground truth."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np

from neurotorch.models import LinearEncoder


def fit_and_test_encoder(
    datamodule: L.LightningDataModule, output_dir: Path, **encoder_args
) -> LinearEncoder:
    """Fit `LinearEncoder` for one epoch on ``datamodule`` and run its test split."""
    model = LinearEncoder(output_dir=str(output_dir), **encoder_args)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule)
    trainer.test(model, datamodule)
    return model


def ground_truth_rows(root: Path, subject: str, voxels: np.ndarray) -> dict[str, np.ndarray]:
    """Attainable r and signal/noise flags of ``voxels`` (flat grid indices) from ``_groundtruth``."""
    truth = np.load(root / "_groundtruth" / f"{subject}_encoding.npz")
    rows = np.searchsorted(truth["brain_index"], voxels)
    assert np.array_equal(truth["brain_index"][rows], voxels), "voxels outside the brain mask"
    return {"attainable_r": truth["attainable_r"][rows], "signal": truth["amplitude"][rows] > 0}


def split_arrays(datamodule, part: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (float64), betas (float64) and image names of a data module's split, in order."""
    loader = datamodule.dataloader(part, shuffle=False)
    xs, ys, names = [], [], []
    for batch in loader:
        xs.append(batch["embedding"].double().numpy())
        ys.append(batch["betas"].double().numpy())
        names += batch["image_name"]
    return np.concatenate(xs), np.concatenate(ys), names


def true_test_ceiling(root: Path, datamodule, subject: str = "sub-01") -> dict[str, np.ndarray]:
    """Correlation of the generator's noise-free responses with the test trials, per voxel, and
    which voxels carry signal (the others have no defined ceiling)."""
    truth = np.load(root / "_groundtruth" / f"{subject}_encoding.npz")
    voxels = datamodule.voxel_table["voxel"].to_numpy()
    rows = np.searchsorted(truth["brain_index"], voxels)
    x, y, _ = split_arrays(datamodule, "test")
    signal_rows = np.searchsorted(truth["signal_rows"], rows).clip(
        max=len(truth["signal_rows"]) - 1
    )
    has_signal = truth["signal_rows"][signal_rows] == rows
    weights = truth["weights"][signal_rows].astype(np.float64)  # (V, D); rows without signal unused
    s = (x.astype(np.float32).astype(np.float64) @ weights.T) * truth["amplitude"][rows]
    s, yc = s - s.mean(0), y - y.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (s * yc).sum(0) / np.sqrt((s**2).sum(0) * (yc**2).sum(0))
    return {"ceiling_r": r, "signal": has_signal}
