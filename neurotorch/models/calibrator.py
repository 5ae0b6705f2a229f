"""Calibrators of source-imaging credible intervals, as LightningModules.

Both read batches with ``x_true``, ``mean`` and ``var`` (marginal variances; free orientation is
calibrated component-wise) and count coverage as CaliBrain's calibrator does, on time-averaged
sources (``coverage_mode="time_averaged"``; ``"pointwise"`` counts every time sample), and report, on validation and test, the empirical coverage of the
central credible intervals before and after calibration: a PNG of the curves and a JSON of
CaliBrain's deviation metrics in the run directory (``output_dir`` or the trainer's log dir).

* `IsotonicCalibrator` -- CaliBrain's method: one training pass collects the coverage curve,
  isotonic regression maps nominal to empirical coverage, intervals for a target level ``t``
  are built at nominal ``g^-1(t)``.
* `NeuralCalibrator` -- a small MLP that predicts, from per-source features, the half-width of
  each source's interval at every nominal level (in posterior stds), trained by quantile
  (pinball) loss, so that the level-``c`` interval covers the truth with probability ``c``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from scipy.stats import norm
from torch import nn

from neurotorch.errors import ParameterError
from neurotorch.io.atomic import write_json
from neurotorch.meeg.calibration import (
    COVERAGE_MODES,
    FIT_LEVELS,
    NOMINAL_LEVELS,
    IsotonicRecalibration,
    calibration_metrics,
)
from neurotorch.plotting.meeg import plot_coverage_curves

log = logging.getLogger(__name__)


def _z(levels: np.ndarray) -> np.ndarray:
    return norm.ppf((1.0 + np.asarray(levels, np.float64)) / 2.0)


def _standardized(batch: dict, mode: str) -> torch.Tensor:
    """``|x_true - mean| / sqrt(var)`` per time sample (``(..., T)``), or for ``"time_averaged"``
    of the time averages with variance ``var / T`` (``(..., 1)``)."""
    x_true, mean, var = batch["x_true"], batch["mean"], batch["var"]
    if mode == "time_averaged":
        n_times = x_true.shape[-1]
        x_true, mean = x_true.mean(-1, keepdim=True), mean.mean(-1, keepdim=True)
        var = var / n_times
    std = var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()
    return (x_true - mean).abs() / std[..., None]


class CoverageCounter:
    """Counts of standardized errors at or below a sorted set of thresholds (DDP-summable)."""

    def __init__(self, thresholds: np.ndarray, device: torch.device):
        self.thresholds = torch.as_tensor(thresholds, dtype=torch.float64, device=device)
        self.counts = torch.zeros(len(thresholds) + 1, dtype=torch.float64, device=device)

    def update(self, scores: torch.Tensor) -> None:
        buckets = torch.bucketize(
            scores.detach().reshape(-1).double(), self.thresholds, right=False
        )
        self.counts += torch.bincount(buckets, minlength=len(self.thresholds) + 1).double()

    def update_covered(self, covered: torch.Tensor, total: int) -> None:
        """Add per-threshold counts of covered elements out of ``total`` elements."""
        cumulative = torch.cat([covered.double(), covered.new_tensor([total]).double()])
        self.counts += torch.diff(cumulative, prepend=cumulative.new_zeros(1))

    def coverage(self) -> np.ndarray:
        total = self.counts.sum().clamp_min(1.0)
        return (self.counts.cumsum(0)[:-1] / total).cpu().numpy()


class _CoverageCalibrator(L.LightningModule):
    """Before/after coverage bookkeeping and the PNG/JSON report shared by the calibrators."""

    def __init__(self, levels: Sequence[float], output_dir: str | None, coverage_mode: str):
        super().__init__()
        if coverage_mode not in COVERAGE_MODES:
            raise ParameterError(
                f"coverage_mode must be one of {COVERAGE_MODES}, got {coverage_mode!r}."
            )
        self.coverage_mode = coverage_mode
        self.levels = np.asarray(levels, dtype=np.float64)
        self.output_dir = output_dir
        self._counters: dict[str, CoverageCounter] = {}
        self._last_paths: tuple[Path, Path] | None = None
        self.reports: dict[str, dict] = {}

    def calibrated_counts(self, batch: dict, counter: CoverageCounter) -> None:
        """Add the batch's coverage after calibration to ``counter`` (one count per level)."""
        raise NotImplementedError

    def calibrated_thresholds(self) -> np.ndarray:
        """Thresholds on |z| of the calibrated intervals (ignored when counts are per element)."""
        return _z(self.levels)

    def _start(self, stage: str) -> None:
        self._counters = {
            "raw": CoverageCounter(_z(self.levels), self.device),
            "calibrated": CoverageCounter(self.calibrated_thresholds(), self.device),
        }

    def _step(self, batch: dict) -> None:
        self._counters["raw"].update(_standardized(batch, self.coverage_mode))
        self.calibrated_counts(batch, self._counters["calibrated"])

    def _end(self, stage: str) -> None:
        if not self._counters:
            return
        if self.trainer is not None and self.trainer.world_size > 1:
            for counter in self._counters.values():
                counter.counts.copy_(self.trainer.strategy.reduce(counter.counts, reduce_op="sum"))
        raw, calibrated = self._counters["raw"].coverage(), self._counters["calibrated"].coverage()
        before, after = (
            calibration_metrics(self.levels, raw),
            calibration_metrics(self.levels, calibrated),
        )
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
        write_json(json_path, self.reports[stage])
        png_path = plot_coverage_curves(
            self.levels,
            {"before calibration": raw, "after calibration": calibrated},
            out / f"coverage_{stage}.png",
            title=f"{type(self).__name__} ({stage})",
        )
        self._last_paths = (json_path, png_path)
        if stage == "test":
            self._print_report(stage)

    def _print_report(self, stage: str) -> None:
        before, after = self.reports[stage]["metrics_before"], self.reports[stage]["metrics_after"]
        json_path, png_path = self._last_paths
        log.info(
            f"{stage}: mean absolute coverage deviation {before['mean_absolute_deviation']:.3f} -> "
            f"{after['mean_absolute_deviation']:.3f}; largest shortfall below nominal "
            f"{before['max_underconfidence_deviation']:.3f} -> "
            f"{after['max_underconfidence_deviation']:.3f}"
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
        if "val" in self.reports and self._last_paths is not None and self.trainer.is_global_zero:
            self._print_report("val")


class IsotonicCalibrator(_CoverageCalibrator):
    """CaliBrain's isotonic recalibration of nominal coverage.

    Parameters
    ----------
    levels
        Nominal coverage levels that are reported (and targeted after calibration).
    output_dir
        Folder for ``calibration_{val,test}.json`` and ``coverage_{val,test}.png``.
    coverage_mode
        ``"time_averaged"`` (CaliBrain's calibrator) or ``"pointwise"``.
    """

    def __init__(
        self,
        levels: Sequence[float] = NOMINAL_LEVELS,
        output_dir: str | None = None,
        coverage_mode: str = "time_averaged",
    ):
        super().__init__(levels, output_dir, coverage_mode)
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
        self._train_counter.update(_standardized(batch, self.coverage_mode))

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

    def calibrated_counts(self, batch: dict, counter: CoverageCounter) -> None:
        counter.update(_standardized(batch, self.coverage_mode))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.fitted = torch.empty_like(checkpoint["state_dict"]["fitted"])


class NeuralCalibrator(_CoverageCalibrator):
    """A small MLP that predicts per-source interval half-widths for every nominal level.

    For each source (and component) the features are ``log var``, ``log mean(mu**2)`` over time,
    ``log gamma`` and ``log assumed_noise_var`` (zeros when the batch lacks the last two). The
    MLP outputs increasing half-widths ``k_c`` (in posterior stds, one per level ``c``; initialised
    at the uncalibrated ``Phi^-1((1 + c) / 2)``), and is trained with the pinball loss of level
    ``c`` on ``|x_true - mean| / std``: the level-``c`` quantile, so the interval
    ``mean +- k_c std`` covers the truth with probability ``c`` given the features.

    Parameters
    ----------
    hidden
        Width of the two hidden layers.
    lr
        Adam learning rate.
    time_stride
        The training loss uses every ``time_stride``-th time sample (neighbouring samples of a
        band-limited trial carry little new information).
    levels, output_dir, coverage_mode
        As in `IsotonicCalibrator`.
    """

    def __init__(
        self,
        hidden: int = 32,
        lr: float = 1e-2,
        time_stride: int = 5,
        levels: Sequence[float] = NOMINAL_LEVELS,
        output_dir: str | None = None,
        coverage_mode: str = "time_averaged",
    ):
        super().__init__(levels, output_dir, coverage_mode)
        self.save_hyperparameters()
        n_levels = len(self.levels)
        self.net = nn.Sequential(
            nn.Linear(4, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, n_levels),
        )
        steps = np.diff(np.concatenate([[0.0], _z(self.levels)]))
        nn.init.zeros_(self.net[-1].weight)
        with torch.no_grad():  # softplus^-1 of the uncalibrated increments
            self.net[-1].bias.copy_(torch.as_tensor(np.log(np.expm1(steps)), dtype=torch.float32))
        self.register_buffer("level_tensor", torch.as_tensor(self.levels, dtype=torch.float32))

    @staticmethod
    def features(batch: dict) -> torch.Tensor:
        """``(..., 4)`` per-source features (see the class docstring)."""
        tiny = 1e-12
        var = batch["var"].float()
        shape = var.shape
        columns = [
            var.clamp_min(tiny).log(),
            batch["mean"].float().pow(2).mean(-1).clamp_min(tiny).log(),
        ]
        for key in ("gamma", "assumed_noise_var"):
            value = batch.get(key)
            if value is None:
                columns.append(torch.zeros(shape, device=var.device))
            else:
                value = value.float().clamp_min(tiny).log()
                columns.append(
                    value.reshape(value.shape + (1,) * (len(shape) - value.ndim)).expand(shape)
                )
        return torch.stack(columns, dim=-1)

    def forward(self, batch: dict) -> torch.Tensor:
        """Half-widths ``(..., n_levels)`` in posterior stds, increasing with the level."""
        return nn.functional.softplus(self.net(self.features(batch))).cumsum(-1)

    def calibrated_counts(self, batch: dict, counter: CoverageCounter) -> None:
        scores, widths = _standardized(batch, self.coverage_mode), self(batch)
        covered = torch.stack(
            [(scores <= widths[..., j, None]).sum() for j in range(widths.shape[-1])]
        )
        counter.update_covered(covered, scores.numel())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        scores = _standardized(batch, self.coverage_mode)[..., :: self.hparams.time_stride]
        widths = self(batch)
        loss = scores.new_zeros(())
        for j, level in enumerate(self.level_tensor):
            residual = scores - widths[..., j, None]
            loss = loss + torch.maximum(level * residual, (level - 1) * residual).mean()
        loss = loss / len(self.level_tensor)
        self.log("train_pinball", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
