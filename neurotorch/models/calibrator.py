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

Predicting returns each trial's recalibrated intervals (`_CoverageCalibrator.predict_step`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from scipy.stats import norm
from torch import nn

from neurotorch._docs import fill_doc
from neurotorch._options import check_int, check_number, check_option
from neurotorch.errors import FormatError, NotFittedError, ParameterError
from neurotorch.io.atomic import write_json
from neurotorch.log import results
from neurotorch.meeg.calibration import (
    COVERAGE_MODES,
    FIT_LEVELS,
    NOMINAL_LEVELS,
    IsotonicRecalibration,
    calibration_metrics,
)
from neurotorch.models.batch_keys import require_keys
from neurotorch.models.module import ReferenceModule, StepTrainedModule
from neurotorch.plotting.meeg import plot_coverage_curves

CoverageMode = Literal["time_averaged", "pointwise"]
#: Batch keys that identify a trial: a simulated one (``index``, ``nnz``, ``alpha``) or a run read
#: from disk (``run_id``, ``seed``, with its ``nnz`` and ``alpha``); predictions carry those the
#: batches hold.
ID_KEYS = ("index", "run_id", "seed", "nnz", "alpha")
CALIBRATOR = "A calibrator"
SOURCE = "a CalibrationDataModule (trials with their posterior)"


def _z(levels: np.ndarray) -> np.ndarray:
    return norm.ppf((1.0 + np.asarray(levels, np.float64)) / 2.0)


def _tensor(batch: dict, key: str) -> torch.Tensor:
    """``batch[key]``, a tensor; a list (what collation leaves of trials of several shapes) is
    refused with `FormatError`."""
    value = batch[key]
    if not isinstance(value, torch.Tensor):
        shapes = sorted({tuple(getattr(v, "shape", ())) for v in value})
        raise FormatError(
            f"A batch holds trials of different shapes ({key}: {shapes}): the runs mix "
            "orientations or subjects (free and fixed sources, other source counts). Give the "
            "calibrator runs of one orientation_type and subject (a grid per orientation and "
            "subject, or a folder of such runs)."
        )
    return value


def _std(batch: dict, mode: str) -> torch.Tensor:
    """Posterior std of what an interval covers: each time sample (``sqrt(var)``), or for
    ``"time_averaged"`` the time average (``sqrt(var / T)``)."""
    require_keys(batch, ("mean", "var"), model=CALIBRATOR, source=SOURCE)
    var = _tensor(batch, "var")
    if mode == "time_averaged":
        var = var / _tensor(batch, "mean").shape[-1]
    return var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()


def _standardized(batch: dict, mode: str) -> torch.Tensor:
    """``|x_true - mean| / std`` per time sample (``(..., T)``), or for ``"time_averaged"`` of the
    time averages (``(..., 1)``)."""
    require_keys(batch, ("x_true",), model=CALIBRATOR, source=SOURCE)
    x_true, mean = _tensor(batch, "x_true"), _tensor(batch, "mean")
    if mode == "time_averaged":
        x_true, mean = x_true.mean(-1, keepdim=True), mean.mean(-1, keepdim=True)
    return (x_true - mean).abs() / _std(batch, mode)[..., None]


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


class _CoverageCalibrator(ReferenceModule):
    """Before/after coverage bookkeeping, the PNG/JSON report and the predicted intervals shared
    by the calibrators."""

    def __init__(
        self, *, levels: Sequence[float], output_dir: str | None, coverage_mode: CoverageMode
    ):
        super().__init__()
        self.coverage_mode = check_option("coverage_mode", coverage_mode, COVERAGE_MODES)
        for k, level in enumerate(levels):
            check_number(
                f"levels[{k}]", level, minimum=0, maximum=1, open_minimum=True, open_maximum=True
            )
        self.levels = np.asarray(levels, dtype=np.float64)
        if self.levels.size == 0 or np.any(np.diff(self.levels) <= 0):
            raise ParameterError(
                f"levels must be one or more nominal coverages in increasing order, each once; "
                f"got {list(levels)}."
            )
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
        if self.trainer.state.fn in (TrainerFn.TESTING, TrainerFn.VALIDATING):  # fit: at its end
            self._print_report(stage)

    def _print_report(self, stage: str) -> None:
        before, after = self.reports[stage]["metrics_before"], self.reports[stage]["metrics_after"]
        assert self._last_paths is not None, "the report is printed after it is written"
        json_path, png_path = self._last_paths
        results.info(
            f"{stage}: mean absolute coverage deviation {before['mean_absolute_deviation']:.3f} -> "
            f"{after['mean_absolute_deviation']:.3f}; largest shortfall below nominal "
            f"{before['max_underconfidence_deviation']:.3f} -> "
            f"{after['max_underconfidence_deviation']:.3f}"
        )
        results.info("metrics: %s\nplot:    %s", json_path, png_path)

    def forward(self, batch: dict) -> torch.Tensor:
        """Calibrated half-widths ``(..., n_levels)`` of each source's interval at every level,
        in posterior stds of what the intervals cover (see ``coverage_mode``)."""
        raise NotImplementedError

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Each trial's recalibrated intervals at ``levels``, in the sources' unit (nAm).

        ``half_width`` ``(n, n_sources[, n_components], n_levels)``: the interval at level ``c``
        is ``center ± half_width[..., c]``, where ``center`` (also returned) is the time average
        of the posterior mean for ``coverage_mode="time_averaged"``, and the posterior mean at
        each time sample for ``"pointwise"`` (not returned: it is the batch's ``mean``). Ids: the
        trial's ``index`` (simulated trials) or ``run_id`` and ``seed`` (runs read from disk),
        and its ``nnz`` and ``alpha``, those of `ID_KEYS` the batch holds.
        """
        rows = {"half_width": self(batch) * _std(batch, self.coverage_mode)[..., None]}
        if self.coverage_mode == "time_averaged":
            rows["center"] = batch["mean"].mean(-1)
        return {**rows, **{key: batch[key] for key in ID_KEYS if key in batch}}

    def prediction_axes(self) -> dict[str, np.ndarray]:
        """``level``: the coverage level of each last-axis column of ``half_width``."""
        return {"level": self.levels}

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


@fill_doc
class IsotonicCalibrator(_CoverageCalibrator):
    """CaliBrain's isotonic recalibration of nominal coverage.

    One training pass collects the empirical coverage of the raw intervals at `FIT_LEVELS`;
    isotonic regression maps nominal to empirical coverage, and the interval for a target level
    ``t`` is then built at the nominal level ``g^-1(t)``. Validation and test report the coverage
    before and after (``calibration_{val,test}.json`` and ``coverage_{val,test}.png``).

    Parameters
    ----------
    %(levels)s
    %(output_dir)s
    %(coverage_mode)s
    """

    def __init__(
        self,
        levels: Sequence[float] = NOMINAL_LEVELS,
        output_dir: str | None = None,
        coverage_mode: CoverageMode = "time_averaged",
    ):
        super().__init__(levels=levels, output_dir=output_dir, coverage_mode=coverage_mode)
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
        assert self._train_counter is not None, "each training epoch starts a counter"
        self._train_counter.update(_standardized(batch, self.coverage_mode))

    def _fit_if_trained(self) -> None:
        """Fit the isotonic map on this training epoch's counts so far.

        The counter is kept: a validation inside the epoch (``val_check_interval < 1``) fits on
        the batches trained so far, and the end of the epoch fits again on all of them."""
        if self._train_counter is None or self._train_counter.counts.sum() == 0:
            return
        counts = CoverageCounter(_z(FIT_LEVELS), self.device)
        counts.counts = self._train_counter.counts.clone()  # this rank's keep counting
        if self.trainer is not None and self.trainer.world_size > 1:
            counts.counts = self.trainer.strategy.reduce(counts.counts, reduce_op="sum")
        fit = IsotonicRecalibration().fit(FIT_LEVELS, counts.coverage())
        self.fitted = torch.as_tensor(fit.fitted, dtype=torch.float64, device=self.device)

    def on_train_epoch_end(self) -> None:
        self._fit_if_trained()
        self._train_counter = None

    def _start(self, stage: str) -> None:
        # validation runs inside the training epoch (at its end: before on_train_epoch_end;
        # with val_check_interval < 1 also in its middle): fit on the counts so far
        self._fit_if_trained()
        if not self.trainer.sanity_checking:  # the sanity check runs before any training
            self._check_fitted("validate" if stage == "val" else stage)
        super()._start(stage)

    def _check_fitted(self, what: str) -> None:
        if self.fitted.numel() == 0:
            raise NotFittedError("IsotonicCalibrator", what)

    def recalibrated_levels(self, targets: np.ndarray) -> np.ndarray:
        """Nominal levels to use so that the empirical coverage becomes ``targets`` (the targets
        themselves before the calibrator is fitted)."""
        recal = self.recalibration
        return np.asarray(targets) if recal is None else recal.recalibrate(targets)

    def calibrated_thresholds(self) -> np.ndarray:
        return _z(self.recalibrated_levels(self.levels))

    def forward(self, batch: dict) -> torch.Tensor:
        """Half-widths ``(..., n_levels)`` in posterior stds: ``Φ^-1((1 + g^-1(c)) / 2)`` for each
        level ``c``, the same for every source."""
        self._check_fitted("predict")
        widths = torch.as_tensor(self.calibrated_thresholds(), dtype=torch.float32)
        var = _tensor(batch, "var")
        return widths.to(var.device).expand(*var.shape, len(widths))

    def on_predict_epoch_start(self) -> None:
        self._check_fitted("predict")

    def calibrated_counts(self, batch: dict, counter: CoverageCounter) -> None:
        counter.update(_standardized(batch, self.coverage_mode))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.fitted = torch.empty_like(checkpoint["state_dict"]["fitted"])


@fill_doc
class NeuralCalibrator(StepTrainedModule, _CoverageCalibrator):
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
        Width of the two hidden layers (a positive integer).
    lr
        Adam learning rate.
    time_stride
        The training loss uses every ``time_stride``-th time sample (neighbouring samples of a
        band-limited trial carry little new information).
    %(levels)s
    %(output_dir)s
    %(coverage_mode)s
    """

    level_tensor: torch.Tensor  # a buffer

    def __init__(
        self,
        hidden: int = 32,
        lr: float = 1e-2,
        time_stride: int = 5,
        levels: Sequence[float] = NOMINAL_LEVELS,
        output_dir: str | None = None,
        coverage_mode: CoverageMode = "time_averaged",
    ):
        super().__init__(levels=levels, output_dir=output_dir, coverage_mode=coverage_mode)
        check_int("hidden", hidden, minimum=1)
        check_int("time_stride", time_stride, minimum=1)
        check_number("lr", lr, minimum=0, open_minimum=True)
        self.save_hyperparameters()
        head = nn.Linear(hidden, len(self.levels))
        self.net = nn.Sequential(
            nn.Linear(4, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            head,
        )
        steps = np.diff(np.concatenate([[0.0], _z(self.levels)]))
        nn.init.zeros_(head.weight)
        with torch.no_grad():  # softplus^-1 of the uncalibrated increments
            head.bias.copy_(torch.as_tensor(np.log(np.expm1(steps)), dtype=torch.float32))
        self.register_buffer("level_tensor", torch.as_tensor(self.levels, dtype=torch.float32))

    @staticmethod
    def features(batch: dict) -> torch.Tensor:
        """``(..., 4)`` per-source features (see the class docstring)."""
        require_keys(batch, ("mean", "var"), model="NeuralCalibrator", source=SOURCE)
        tiny = 1e-12
        var = _tensor(batch, "var").float()
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
