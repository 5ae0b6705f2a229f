"""`LinearEncoder`: a voxel-wise (banded) ridge encoding model, stimulus features → betas.

One training epoch accumulates per-fold sufficient statistics of the training and validation
trials (folds grouped by image); when validation ends (or testing starts, without validation) the
statistics are summed over DDP ranks, each voxel's penalties are chosen by k-fold cross-validation
and the model is refitted on all of them (`neurotorch.models.ridge`). Testing logs per-voxel r and
R², the noise ceiling of the test trials themselves and the fraction of it reached
(`neurotorch.models.held_out`), the variance explained by each feature space, and writes
``metrics.json`` plus a PNG.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from neurotorch.errors import EncoderConfigError
from neurotorch.models.held_out import CeilingStatistics, PartitionStatistics
from neurotorch.models.ridge import (
    DEFAULT_BAND_RATIOS,
    DEFAULT_PENALTIES,
    SCORES,
    SOLVERS,
    CorrelationStatistics,
    RidgeStatistics,
    check_choice,
    fit_ridge,
    folds_of,
)

log = logging.getLogger(__name__)


class LinearEncoder(L.LightningModule):
    """Voxel-wise ridge regression from ``batch[feature_key]`` to ``batch[target_key]``.

    Parameters
    ----------
    penalties
        Ridge penalties relative to the mean eigenvalue of each feature space's centred covariance.
    n_folds
        Cross-validation folds over the training and validation trials, grouped by image.
    score
        What the penalty choice maximises: ``"r"``, ``"r2"`` or ``"mse"`` (minimised).
    per_voxel
        One penalty per voxel (else one for all voxels).
    feature_key
        Batch key of the features ``(n, D)``, or a list of keys: one feature space each, with a
        penalty of its own per voxel (banded ridge).
    band_ratios
        Weights of each further feature space relative to the first tried per voxel (banded ridge).
    solver
        ``"auto"`` (dual when there are fewer trials than features, on one process), ``"primal"``
        or ``"dual"``.
    target_key, image_key
        Batch keys of the targets ``(n, V)`` and of the image names (they define the folds).
    output_dir
        Where ``metrics.json`` and ``encoder_test.png`` go; default the trainer's log directory.
    """

    def __init__(
        self,
        penalties: Sequence[float] = DEFAULT_PENALTIES,
        n_folds: int = 5,
        score: str = "r2",
        per_voxel: bool = True,
        feature_key: str | list[str] = "embedding",
        band_ratios: Sequence[float] = DEFAULT_BAND_RATIOS,
        solver: str = "auto",
        target_key: str = "betas",
        image_key: str = "image_name",
        output_dir: str | None = None,
    ):
        super().__init__()
        if n_folds < 2:
            raise EncoderConfigError(f"n_folds must be at least 2, got {n_folds}.")
        check_choice("score", score, SCORES)
        check_choice("solver", solver, SOLVERS)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.feature_keys = [feature_key] if isinstance(feature_key, str) else list(feature_key)
        self.register_buffer("weight", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("penalty", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("band_sizes", torch.zeros(0, dtype=torch.long))
        # DDP wraps only modules with a trainable parameter; the fit itself needs none
        self.ddp_anchor = torch.nn.Parameter(torch.zeros(0))
        self._stats: RidgeStatistics | None = None
        self._collecting = False
        self._subjects: set[str] = set()
        self._val_stats: CorrelationStatistics | None = None
        self._test: tuple[CorrelationStatistics, CeilingStatistics, PartitionStatistics] | None = (
            None
        )
        self.test_metrics: dict | None = None
        self.test_r: np.ndarray | None = None
        self.test_ceiling: dict | None = None

    # -- inference -------------------------------------------------------------------------
    def features(self, batch: dict) -> torch.Tensor:
        """The feature spaces of a batch side by side, ``(n, D)`` float64."""
        missing = [key for key in self.feature_keys if key not in batch]
        if missing:
            raise EncoderConfigError(
                f"The batches hold no {missing} (they hold {sorted(batch)}); set the encoder's "
                f"feature_key to the embedding key(s) the data module serves."
            )
        return torch.cat([batch[key].to(torch.float64) for key in self.feature_keys], dim=1)

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

    # -- training: one pass of per-fold statistics (validation trials join them) ------------
    def on_train_epoch_start(self) -> None:
        self._stats = None

    def _accumulate(self, batch: dict) -> None:
        x, y = self.features(batch), batch[self.hparams.target_key]
        subjects = set(batch.get("subject", ()))
        if self._stats is None:
            one_process = self.trainer is None or self.trainer.world_size == 1
            self._stats = RidgeStatistics(
                x.shape[1], y.shape[1], self.hparams.n_folds, keep_rows=one_process,
                device=x.device,
            )  # fmt: skip
            self._subjects = subjects
            self.band_sizes = torch.tensor([batch[k].shape[1] for k in self.feature_keys])
        if subjects | self._subjects != self._subjects or len(subjects) > 1:
            raise EncoderConfigError(
                f"LinearEncoder fits the voxels of one subject, but the training batches hold "
                f"{sorted(subjects | self._subjects)}; train one encoder per subject."
            )
        self._stats.update(x, y, folds_of(batch[self.hparams.image_key], self.hparams.n_folds))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        self._accumulate(batch)

    def _fit(self) -> None:
        """Sum the statistics over ranks, choose penalties by cross-validation, refit."""
        stats, self._stats = self._stats, None
        self._sum_over_ranks(stats.tensors())
        hp = self.hparams
        fit = fit_ridge(
            stats, penalties=hp.penalties, bands=self.band_sizes.tolist(),
            band_ratios=hp.band_ratios, score=hp.score, per_target=hp.per_voxel, solver=hp.solver,
        )  # fmt: skip
        self.weight, self.bias, self.penalty = fit.weight, fit.intercept, fit.penalty
        if not self.trainer.predicting:  # Lightning logs nothing while predicting
            self.log(f"cv_median_{hp.score}", float(fit.cv_score.median()), prog_bar=True)

    # -- validation: joins the cross-validation during fit, else scores the fitted model -----
    def on_validation_epoch_start(self) -> None:
        self._collecting = self._stats is not None
        self._val_stats = None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if self._collecting:
            self._accumulate(batch)
        elif self.weight.numel():
            y = batch[self.hparams.target_key]
            if self._val_stats is None:
                self._val_stats = CorrelationStatistics((y.shape[1],), device=y.device)
            self._val_stats.update(self(self.features(batch)), y)

    def on_validation_epoch_end(self) -> None:
        if self._collecting:
            self._collecting = False
            self._fit()
        elif self._val_stats is not None:
            self._sum_over_ranks(self._val_stats.tensors())
            self.log("val_median_r", float(self._val_stats.correlation().median()))

    # -- test: metrics, JSON and plot --------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        if self._stats is not None:
            self._fit()
        self._test = None

    def on_predict_epoch_start(self) -> None:
        if self._stats is not None:
            self._fit()

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self(self.features(batch))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        x, y = self.features(batch), batch[self.hparams.target_key]
        if self._test is None:
            self._test = (
                CorrelationStatistics((y.shape[1],), device=y.device),
                CeilingStatistics(y.shape[1], device=y.device),
                PartitionStatistics(len(self.band_sizes), y.shape[1], device=y.device),
            )
        scores, ceiling, partition = self._test
        scores.update(self(x), y)
        if not (torch.as_tensor(batch.get("n_repeats", 1)) > 1).any():  # single trials only
            ceiling.update(y, batch[self.hparams.image_key])
        spaces = torch.split(torch.arange(x.shape[1], device=x.device), self.band_sizes.tolist())
        partition.update(torch.stack([x[:, s] @ self.weight[s] for s in spaces]), y)

    def on_test_epoch_end(self) -> None:
        scores, ceiling, partition = self._test
        self._sum_over_ranks(scores.tensors() + partition.tensors())
        ceiling.sum_over_ranks()
        from neurotorch.models.encoder_report import summarise_encoder, write_encoder_report

        datamodule = getattr(self.trainer, "datamodule", None)
        voxel_table = getattr(datamodule, "voxel_table", None)
        self.test_r = scores.score("r").cpu().numpy()
        self.test_ceiling = ceiling.ceiling()
        metrics = summarise_encoder(
            self.test_r, scores.score("r2").cpu().numpy(), self.test_ceiling, voxel_table,
            penalty=self.penalty.cpu().numpy(), partition=partition.r2().cpu().numpy(),
            spaces=self.feature_keys,
        )  # fmt: skip
        self.test_metrics = metrics
        for key in ("median_r", "median_r2", "median_fraction_of_ceiling"):
            if metrics.get(key) is not None:
                self.log(f"test_{key}", metrics[key])
        if self.trainer.is_global_zero:
            out = Path(
                self.hparams.output_dir or self.trainer.log_dir or self.trainer.default_root_dir
            )
            paths = write_encoder_report(self.test_r, self.test_ceiling, voxel_table, metrics, out)
            log.info(
                _summary_line(metrics) + f"\nmetrics: {paths['metrics']}\nplot:    {paths['plot']}"
            )

    # -- checkpoints and DDP spawn results: buffers are sized by the data, resize before loading
    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        for name in ("weight", "bias", "penalty", "band_sizes"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def per_voxel_r(self) -> np.ndarray:
        """Per-voxel test correlation of the last test run."""
        return self.test_r


def _summary_line(metrics: dict) -> str:
    line = f"test: median r = {metrics['median_r']:.3f} over {metrics['n_voxels']} voxels"
    if metrics.get("median_fraction_of_ceiling") is not None:
        line += (
            f"; median fraction of noise ceiling = {metrics['median_fraction_of_ceiling']:.3f}"
            f" ± {metrics['fraction_of_ceiling_margin']:.3f}"
        )
    else:
        line += f"; no noise ceiling ({metrics['ceiling_note']})"
    return line
