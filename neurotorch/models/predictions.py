"""Predictions of the reference models, written with their item ids to one ``predictions.npz``.

Every model's ``predict_step`` returns a dict per batch: row arrays (one row per prediction:
``prediction`` of the encoder, ``half_width`` of a calibrator, ``predicted`` maps of the lesion
network model, ...) and the ids of those rows (``subject``, ``session``, ``trial``,
``image_name``, ``index``, ...). `PredictionWriter`, a Lightning callback (``neurotorch
predict`` adds it), concatenates the batches in order and writes them, with what the model says
its columns are (`prediction_axes`: voxel indices, coverage levels), to ``predictions.npz`` in the
run folder.

Why one ``.npz``: a single file is complete or absent (one atomic rename); ``np.load`` reads it
with ``allow_pickle=False`` and no other package; values keep their dtype (float32) and ids are
plain string or integer arrays, so ``pandas.DataFrame({key: f[key] for key in ids})`` is the id
table. No pickle anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from neurotorch.io.atomic import atomic_path
from neurotorch.log import results

FILE_NAME = "predictions.npz"


def as_column(values: Any) -> np.ndarray:
    """One batch's values of a key as a numpy array (tensors moved to the CPU, names as strings)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    array = np.asarray(values)
    return array.astype(str) if array.dtype == object else array


def stack_batches(batches: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The batches' dicts concatenated key by key along the first axis."""
    keys = list(batches[0]) if batches else []
    return {key: np.concatenate([as_column(batch[key]) for batch in batches]) for key in keys}


def prediction_axes(module: L.LightningModule) -> dict[str, np.ndarray]:
    """What the columns of the model's predictions are (``module.prediction_axes()``), if it says."""
    describe = getattr(module, "prediction_axes", None)
    return {key: as_column(value) for key, value in (describe() if describe else {}).items()}


def write_predictions(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to the ``.npz`` file ``path`` atomically; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy stubs match ** to allow_pickle
    return path


class PredictionWriter(L.Callback):
    """Collect every predict batch's dict and write them to ``predictions.npz`` at the end.

    Parameters
    ----------
    output_dir
        Folder of the file; default the trainer's log folder. Under DDP each rank writes
        ``predictions-rank<r>.npz`` with the rows it predicted.
    """

    def __init__(self, output_dir: str | None = None):
        self.output_dir = output_dir
        self.batches: list[dict[str, Any]] = []
        self.path: Path | None = None

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.batches = []

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.batches.append(outputs)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = stack_batches(self.batches)
        folder = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        name = (
            FILE_NAME if trainer.world_size == 1 else f"predictions-rank{trainer.global_rank}.npz"
        )
        self.path = write_predictions(folder / name, {**prediction_axes(pl_module), **rows})
        n_rows = len(next(iter(rows.values()))) if rows else 0
        results.info("predictions: %s (%d rows)", self.path, n_rows)
        self.batches = []
