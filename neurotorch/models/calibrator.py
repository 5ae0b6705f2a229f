"""Calibrators of source-imaging credible intervals, as LightningModules.

Both read batches with ``x_true``, ``mean`` and ``var`` (marginal variances; free orientation is
calibrated component-wise) and report, on validation and test, the empirical coverage of the
central credible intervals before and after calibration: a PNG of the curves and a JSON of
CaliBrain's deviation metrics in the run directory (``output_dir`` or the trainer's log dir).

* `IsotonicCalibrator` -- CaliBrain's method: one training pass collects the coverage curve,
  isotonic regression maps nominal to empirical coverage, intervals for a target level ``t``
  are built at nominal ``g^-1(t)``.
* `NeuralCalibrator` -- a small MLP that rescales each source's posterior std from per-source
  features, trained by Gaussian negative log-likelihood.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from scipy.stats import norm
from torch import nn

from neurotorch.meeg.calibration import (
    FIT_LEVELS,
    NOMINAL_LEVELS,
    IsotonicRecalibration,
    calibration_metrics,
    plot_coverage_curves,
)


def _z(levels: np.ndarray) -> np.ndarray:
    return norm.ppf((1.0 + np.asarray(levels, np.float64)) / 2.0)


def _standardized(batch: dict, std: torch.Tensor | None = None) -> torch.Tensor:
    """|x_true - mean| / std, with std (default sqrt(var)) broadcast over time."""
    if std is None:
        std = batch["var"].clamp_min(torch.finfo(batch["var"].dtype).tiny).sqrt()
    return (batch["x_true"] - batch["mean"]).abs() / std[..., None]


class CoverageCounter:
    """Counts of standardized errors at or below a sorted set of thresholds (DDP-summable)."""

    def __init__(self, thresholds: np.ndarray, device: torch.device):
        self.thresholds = torch.as_tensor(thresholds, dtype=torch.float64, device=device)
        self.counts = torch.zeros(len(thresholds) + 1, dtype=torch.float64, device=device)

    def update(self, scores: torch.Tensor) -> None:
        buckets = torch.bucketize(scores.detach().reshape(-1).double(), self.thresholds, right=False)
        self.counts += torch.bincount(buckets, minlength=len(self.thresholds) + 1).double()

    def coverage(self) -> np.ndarray:
        total = self.counts.sum().clamp_min(1.0)
        return (self.counts.cumsum(0)[:-1] / total).cpu().numpy()


class _CoverageCalibrator(L.LightningModule):
    """Before/after coverage bookkeeping and the PNG/JSON report shared by the calibrators."""

    def __init__(self, levels: Sequence[float], output_dir: str | None):
        super().__init__()
        self.levels = np.asarray(levels, dtype=np.float64)
        self.output_dir = output_dir
        self._counters: dict[str, CoverageCounter] = {}
        self.reports: dict[str, dict] = {}

    # subclasses: std after calibration, and the nominal levels to build intervals at
    def calibrated_scores(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def calibrated_thresholds(self) -> np.ndarray:
        return _z(self.levels)

    def _start(self, stage: str) -> None:
        self._counters = {
            "raw": CoverageCounter(_z(self.levels), self.device),
            "calibrated": CoverageCounter(self.calibrated_thresholds(), self.device),
        }

    def _step(self, batch: dict) -> None:
        self._counters["raw"].update(_standardized(batch))
        self._counters["calibrated"].update(self.calibrated_scores(batch))

    def _end(self, stage: str) -> None:
        if not self._counters:
            return
        if self.trainer is not None and self.trainer.world_size > 1:
            for counter in self._counters.values():
                counter.counts.copy_(self.trainer.strategy.reduce(counter.counts, reduce_op="sum"))
        raw, calibrated = self._counters["raw"].coverage(), self._counters["calibrated"].coverage()
        before, after = calibration_metrics(self.levels, raw), calibration_metrics(self.levels, calibrated)
        self.log(f"{stage}_mad_before", before["mean_absolute_deviation"])
        self.log(f"{stage}_mad_after", after["mean_absolute_deviation"], prog_bar=True)
        self.reports[stage] = {
            "levels": self.levels.tolist(),
            "coverage_before": raw.tolist(),
            "coverage_after": calibrated.tolist(),
            "metrics_before": before,
            "metrics_after": after,
        }
        if self.trainer is None or not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        out = Path(self.output_dir or self.trainer.log_dir or self.trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / f"calibration_{stage}.json"
        json_path.write_text(json.dumps(self.reports[stage], indent=2))
        png_path = plot_coverage_curves(
            self.levels,
            {"before calibration": raw, "after calibration": calibrated},
            str(out / f"coverage_{stage}.png"),
            title=f"{type(self).__name__} ({stage})",
        )
        self._last_paths = (json_path, png_path)
        if stage == "test":
            self._print_report(stage)

    def _print_report(self, stage: str) -> None:
        before, after = self.reports[stage]["metrics_before"], self.reports[stage]["metrics_after"]
        json_path, png_path = self._last_paths
        print(
            f"{stage}: mean absolute coverage deviation {before['mean_absolute_deviation']:.3f} -> "
            f"{after['mean_absolute_deviation']:.3f}; max over-confidence "
            f"{before['max_overconfidence_deviation']:.3f} -> {after['max_overconfidence_deviation']:.3f}"
            f"\nmetrics: {json_path}\nplot:    {png_path}"
        )

    def on_validation_epoch_start(self) -> None:
        self._start("val")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch)

    def on_validation_epoch_end(self) -> None:
        self._end("val")

    def on_test_epoch_start(self) -> None:
        self._start("test")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch)

    def on_test_epoch_end(self) -> None:
        self._end("test")

    def on_fit_end(self) -> None:
        if "val" in self.reports and getattr(self, "_last_paths", None) and self.trainer.is_global_zero:
            self._print_report("val")


class IsotonicCalibrator(_CoverageCalibrator):
    """CaliBrain's isotonic recalibration of nominal coverage.

    Parameters
    ----------
    levels
        Nominal coverage levels that are reported (and targeted after calibration).
    output_dir
        Folder for ``calibration_{val,test}.json`` and ``coverage_{val,test}.png``.
    """

    def __init__(self, levels: Sequence[float] = NOMINAL_LEVELS, output_dir: str | None = None):
        super().__init__(levels, output_dir)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.register_buffer("fitted", torch.zeros(0, dtype=torch.float64))
        self._train_counter: CoverageCounter | None = None

    def configure_optimizers(self):
        return None

    @property
    def recalibration(self) -> IsotonicRecalibration | None:
        if self.fitted.numel() == 0:
            return None
        levels = np.concatenate([[0.0], FIT_LEVELS, [1.0]])
        return IsotonicRecalibration(levels, self.fitted.cpu().numpy())

    def on_train_epoch_start(self) -> None:
        self._train_counter = CoverageCounter(_z(FIT_LEVELS), self.device)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        self._train_counter.update(_standardized(batch))

    def _fit_if_trained(self) -> None:
        """Fit the isotonic map on the training counts collected since the last fit."""
        if self._train_counter is None or self._train_counter.counts.sum() == 0:
            return
        counts = self._train_counter.counts
        if self.trainer is not None and self.trainer.world_size > 1:
            counts.copy_(self.trainer.strategy.reduce(counts, reduce_op="sum"))
        fit = IsotonicRecalibration().fit(FIT_LEVELS, self._train_counter.coverage())
        self.fitted = torch.as_tensor(fit.fitted, dtype=torch.float64, device=self.device)
        self._train_counter = None

    def on_train_epoch_end(self) -> None:
        self._fit_if_trained()

    def _start(self, stage: str) -> None:
        # validation runs inside the training epoch, before on_train_epoch_end
        self._fit_if_trained()
        super()._start(stage)

    def recalibrated_levels(self, targets: np.ndarray) -> np.ndarray:
        """Nominal levels to use so that the empirical coverage becomes ``targets``."""
        recal = self.recalibration
        return np.asarray(targets) if recal is None else recal.recalibrate(targets)

    def calibrated_thresholds(self) -> np.ndarray:
        return _z(self.recalibrated_levels(self.levels))

    def calibrated_scores(self, batch: dict) -> torch.Tensor:
        return _standardized(batch)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.fitted = torch.empty_like(checkpoint["state_dict"]["fitted"])


class NeuralCalibrator(_CoverageCalibrator):
    """A small MLP that rescales posterior standard deviations.

    For each source (and component) the features are ``log var``, ``log mean(mu**2)`` over time,
    ``log gamma`` and ``log assumed_noise_var`` (the last two when the batch has them); the MLP
    outputs ``log s`` and the calibrated std is ``s * sqrt(var)``. Training minimises the Gaussian
    negative log-likelihood of ``x_true`` under ``N(mean, (s sigma)^2)``.

    Parameters
    ----------
    hidden
        Width of the two hidden layers.
    lr
        Adam learning rate.
    levels, output_dir
        As in `IsotonicCalibrator`.
    """

    def __init__(
        self,
        hidden: int = 32,
        lr: float = 1e-2,
        levels: Sequence[float] = NOMINAL_LEVELS,
        output_dir: str | None = None,
    ):
        super().__init__(levels, output_dir)
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(4, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    @staticmethod
    def features(batch: dict) -> torch.Tensor:
        """``(..., 4)`` per-source features (see the class docstring)."""
        tiny = 1e-12
        var = batch["var"].float()
        power = batch["mean"].float().pow(2).mean(-1)
        extra = [batch.get(key) for key in ("gamma", "assumed_noise_var")]
        shape = var.shape
        columns = [var.clamp_min(tiny).log(), power.clamp_min(tiny).log()]
        for value in extra:
            if value is None:
                columns.append(torch.zeros(shape, device=var.device))
            else:
                value = value.float().clamp_min(tiny).log()
                columns.append(value.reshape(value.shape + (1,) * (len(shape) - value.ndim)).expand(shape))
        return torch.stack(columns, dim=-1)

    def forward(self, batch: dict) -> torch.Tensor:
        """Calibrated posterior std, shaped like ``batch["var"]``."""
        log_scale = self.net(self.features(batch)).squeeze(-1)
        return batch["var"].float().clamp_min(1e-12).sqrt() * log_scale.exp()

    def calibrated_scores(self, batch: dict) -> torch.Tensor:
        return _standardized(batch, self(batch))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        std = self(batch)
        z = (batch["x_true"] - batch["mean"]) / std[..., None]
        loss = (0.5 * z.pow(2) + std.log()[..., None]).mean()
        self.log("train_nll", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
