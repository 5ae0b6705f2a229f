"""`LinearEncoder`: a voxel-wise ridge encoding model (stimulus features → betas) as a LightningModule.

One training epoch accumulates sufficient statistics; the exact ridge solution is computed when
validation, test or prediction starts (after summing the statistics over DDP ranks). The penalty
is chosen per voxel on the validation split. Testing logs per-voxel Pearson r, the median r and
r relative to each voxel's single-trial noise ceiling, and writes ``metrics.json`` plus a PNG.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from neurotorch.models.ridge import DEFAULT_PENALTIES, CorrelationStatistics, RidgeStatistics

log = logging.getLogger(__name__)


class LinearEncoder(L.LightningModule):
    """Voxel-wise ridge regression from ``batch[feature_key]`` to ``batch[target_key]``.

    Parameters
    ----------
    penalties
        Ridge penalties relative to the mean eigenvalue of the centred feature covariance; the
        best one per voxel is picked on the validation split (the middle one without validation).
    feature_key, target_key
        Batch keys of the inputs (n, D) and targets (n, V).
    output_dir
        Where ``metrics.json`` and ``encoder_test.png`` go; default the trainer's log directory.
    """

    def __init__(
        self,
        penalties: Sequence[float] = DEFAULT_PENALTIES,
        feature_key: str = "embedding",
        target_key: str = "betas",
        output_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.penalties = tuple(float(p) for p in penalties)
        self.register_buffer("weight", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("penalty_index", torch.zeros(0, dtype=torch.long))
        self._train_stats: RidgeStatistics | None = None
        self._train_subjects: set[str] = set()
        self._candidates: tuple[torch.Tensor, torch.Tensor] | None = None
        self._val_stats: CorrelationStatistics | None = None
        self._test_stats: CorrelationStatistics | None = None
        self.test_metrics: dict | None = None
        self.test_r: np.ndarray | None = None

    # -- inference -------------------------------------------------------------------------
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.weight.numel() == 0:
            raise RuntimeError(
                "LinearEncoder is not fitted: run trainer.fit first or load a checkpoint."
            )
        return (features.to(torch.float64) @ self.weight + self.bias).to(torch.float32)

    def configure_optimizers(self):
        return None

    def _sum_over_ranks(self, tensors: list[torch.Tensor]) -> None:
        if self.trainer is not None and self.trainer.world_size > 1:
            for t in tensors:
                t.copy_(self.trainer.strategy.reduce(t, reduce_op="sum"))

    # -- training: one pass of sufficient statistics -----------------------------------------
    def on_train_epoch_start(self) -> None:
        self._train_stats = None

    def training_step(self, batch: dict, batch_idx: int) -> None:
        x, y = batch[self.hparams.feature_key], batch[self.hparams.target_key]
        subjects = set(batch.get("subject", ()))
        if self._train_stats is None:
            self._train_stats = RidgeStatistics(x.shape[1], y.shape[1], device=x.device)
            self._train_subjects = subjects
        if subjects | self._train_subjects != self._train_subjects or len(subjects) > 1:
            raise ValueError(
                f"LinearEncoder fits the voxels of one subject, but the training batches hold "
                f"{sorted(subjects | self._train_subjects)}; train one encoder per subject."
            )
        self._train_stats.update(x, y)

    def _solve_if_trained(self) -> None:
        if self._train_stats is None:
            return
        self._sum_over_ranks(self._train_stats.tensors())
        weights, intercepts = self._train_stats.solve(self.penalties)
        self._train_stats = None
        self._candidates = (weights, intercepts)
        self._choose(
            torch.full((weights.shape[2],), len(self.penalties) // 2, device=weights.device)
        )

    def _choose(self, index: torch.Tensor) -> None:
        weights, intercepts = self._candidates
        columns = torch.arange(weights.shape[2], device=weights.device)
        self.weight = weights[index, :, columns].T.contiguous()
        self.bias = intercepts[index, columns]
        self.penalty_index = index

    # -- validation: per-voxel penalty choice ----------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._solve_if_trained()
        self._val_stats = None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x, y = batch[self.hparams.feature_key].to(torch.float64), batch[self.hparams.target_key]
        if self._candidates is None:
            pred, shape = self(x)[None], (1, y.shape[1])
        else:
            weights, intercepts = self._candidates
            pred, shape = (
                torch.einsum("nd,pdv->pnv", x, weights) + intercepts[:, None, :],
                weights[:, 0].shape,
            )
        if self._val_stats is None:
            self._val_stats = CorrelationStatistics(tuple(shape), device=y.device)
        self._val_stats.update(pred, y)

    def on_validation_epoch_end(self) -> None:
        if self._val_stats is None:
            return
        self._sum_over_ranks(self._val_stats.tensors())
        r = torch.nan_to_num(self._val_stats.correlation(), nan=-1.0)
        if self._candidates is not None and r.shape[0] == len(self.penalties):
            self._choose(r.argmax(0))
        best = r.max(0).values if r.shape[0] > 1 else r[0]
        self.log("val_median_r", float(best.median()), prog_bar=True, sync_dist=False)

    # -- test: metrics, JSON and plot --------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._solve_if_trained()
        self._test_stats = None

    def test_step(self, batch: dict, batch_idx: int) -> None:
        y = batch[self.hparams.target_key]
        pred = self(batch[self.hparams.feature_key])
        if self._test_stats is None:
            self._test_stats = CorrelationStatistics((y.shape[1],), device=y.device)
        self._test_stats.update(pred, y)

    def on_test_epoch_end(self) -> None:
        self._sum_over_ranks(self._test_stats.tensors())
        r = self._test_stats.correlation().cpu().numpy()
        voxel_table = (
            getattr(self.trainer.datamodule, "voxel_table", None) if self.trainer else None
        )
        from neurotorch.models.encoder_report import summarise_encoder, write_encoder_report

        metrics = summarise_encoder(r, voxel_table)
        self.test_r = r
        self.test_metrics = metrics
        self.log("test_median_r", metrics["median_r"])
        if metrics.get("median_fraction_of_ceiling") is not None:
            self.log("test_median_fraction_of_ceiling", metrics["median_fraction_of_ceiling"])
        if self.trainer.is_global_zero:
            out = Path(
                self.hparams.output_dir or self.trainer.log_dir or self.trainer.default_root_dir
            )
            paths = write_encoder_report(r, voxel_table, metrics, out)
            log.info(
                f"test: median r = {metrics['median_r']:.3f} over {metrics['n_voxels']} voxels"
                + (
                    f"; median fraction of noise ceiling = {metrics['median_fraction_of_ceiling']:.3f}"
                    if metrics.get("median_fraction_of_ceiling") is not None
                    else ""
                )
                + f"\nmetrics: {paths['metrics']}\nplot:    {paths['plot']}"
            )

    # -- checkpoints: buffers are sized by the data, so resize before loading ------------------
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for name in ("weight", "bias", "penalty_index"):
            saved = checkpoint["state_dict"].get(name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved))

    def per_voxel_r(self) -> np.ndarray:
        """Per-voxel test correlation of the last test run."""
        return self.test_r
