"""Coverage of credible intervals, isotonic recalibration of nominal levels, deviation metrics.

A Gaussian posterior with mean ``mu`` and std ``s`` gives, at nominal level ``c``, the interval
``mu +- z s`` with ``z = Phi^-1((1 + c) / 2)``. Its empirical coverage is the fraction of true
values inside. Two ways of counting (``mode``):

* ``"time_averaged"`` (CaliBrain's calibrator): one interval per source (component), for the
  time-averaged source ``mean_t x`` with mean ``mean_t mu`` and variance ``var / T``;
* ``"pointwise"``: one interval per source (component) and time sample.

CaliBrain's recalibration fits the monotone map ``g: nominal -> empirical`` by isotonic
regression on training runs and, to reach a target coverage ``t`` on new runs, builds intervals
at the nominal level ``g^-1(t)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.stats import chi2, norm

from neurotorch.errors import NonFiniteError, ParameterError, ShapeMismatchError

#: Nominal coverage levels 0.05, 0.10, ..., 0.95 (plain floats, so configs can show them).
NOMINAL_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))
DEFAULT_LEVELS = np.asarray(NOMINAL_LEVELS)
#: Levels an isotonic map is fitted on: 0.01 ... 0.99 and 1 - 1e-3 ... 1 - 1e-12, so that
#: strongly over-confident posteriors (which need nominal levels very close to 1) can be corrected.
FIT_LEVELS = np.concatenate(
    [np.round(np.arange(0.01, 1.0, 0.01), 2), 1.0 - np.logspace(-3, -12, 10)]
)
#: Ways of counting coverage (see the module docstring); the first is CaliBrain's default.
COVERAGE_MODES = ("time_averaged", "pointwise")
#: Floor of a free-orientation covariance block's eigenvalues (nAm²), CaliBrain's.
BLOCK_EPSILON = 1e-12


def _check_mode(mode: str) -> str:
    if mode not in COVERAGE_MODES:
        raise ParameterError(f"mode must be one of {COVERAGE_MODES}, got {mode!r}.")
    return mode


def _check_levels(levels: np.ndarray) -> np.ndarray:
    levels = np.asarray(levels, np.float64)
    if not np.all((levels >= 0) & (levels <= 1)):  # also refuses NaN
        raise ParameterError(f"Nominal levels must lie in [0, 1], got {levels}.")
    return levels


def _check_finite(**arrays: np.ndarray) -> None:
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise NonFiniteError(f"{name} holds NaN or Inf; coverage needs finite values.")


def standardized_errors(x_true: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``|x - mu| / sqrt(var)``, with ``var`` broadcast over a trailing time axis.

    ``var`` has the shape of ``x_true`` without its last axis: ``(..., N)`` for ``(..., N, T)``
    or ``(..., N, K)`` for ``(..., N, K, T)``. Negative variances (rounding of a vanishing
    posterior variance) count as 0, as in CaliBrain.
    """
    x_true, mean, var = (np.asarray(a, dtype=np.float64) for a in (x_true, mean, var))
    if x_true.shape != mean.shape or var.shape != x_true.shape[:-1]:
        raise ShapeMismatchError(
            f"x_true {x_true.shape} and mean {mean.shape} must match and var {var.shape} must be "
            f"{x_true.shape[:-1]}."
        )
    _check_finite(x_true=x_true, mean=mean, var=var)
    std = np.sqrt(np.maximum(var, np.finfo(np.float64).tiny))[..., None]
    return np.abs(x_true - mean) / std


def coverage_from_scores(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of ``scores`` at or below each threshold."""
    ordered = np.sort(np.ravel(scores))
    return np.searchsorted(ordered, np.asarray(thresholds), side="right") / ordered.size


def coverage_curve(
    x_true: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    levels: np.ndarray = DEFAULT_LEVELS,
    mode: str = "time_averaged",
) -> np.ndarray:
    """Empirical coverage of the marginal central intervals at each nominal level.

    ``x_true``/``mean`` are ``(..., T)`` and ``var`` is their shape without the time axis;
    ``mode`` is ``"time_averaged"`` (CaliBrain's calibrator) or ``"pointwise"``.
    """
    z = norm.ppf((1.0 + _check_levels(levels)) / 2.0)
    if _check_mode(mode) == "time_averaged":
        x_true, mean, var = _time_average(x_true, mean, var)
    return coverage_from_scores(standardized_errors(x_true, mean, var), z)


def _time_average(
    x_true: np.ndarray, mean: np.ndarray, cov: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time-averaged sources as one-sample ``(..., 1)`` series, with (co)variance ``cov / T``."""
    n_times = np.shape(x_true)[-1]
    x_bar = np.mean(np.asarray(x_true, np.float64), axis=-1, keepdims=True)
    mu_bar = np.mean(np.asarray(mean, np.float64), axis=-1, keepdims=True)
    return x_bar, mu_bar, np.asarray(cov, np.float64) / n_times


def ellipsoid_coverage_curve(
    x_true: np.ndarray,
    mean: np.ndarray,
    cov_blocks: np.ndarray,
    levels: np.ndarray = DEFAULT_LEVELS,
    mode: str = "time_averaged",
) -> np.ndarray:
    """Coverage of per-source credible ellipsoids (free orientation).

    ``x_true``/``mean`` are ``(..., N, K, T)``, ``cov_blocks`` ``(..., N, K, K)``; a sample (or,
    with ``mode="time_averaged"``, the time average with covariance ``cov / T``) is covered when
    its Mahalanobis distance² is at most the chi² quantile with K degrees of freedom. Block
    eigenvalues below `BLOCK_EPSILON` (nAm²) count as that value, as in CaliBrain.
    """
    if _check_mode(mode) == "time_averaged":
        x_true, mean, cov_blocks = _time_average(x_true, mean, cov_blocks)
    diff = np.asarray(x_true, np.float64) - np.asarray(mean, np.float64)
    cov = np.asarray(cov_blocks, np.float64)
    if diff.shape[:-1] != cov.shape[:-1] or cov.shape[-1] != cov.shape[-2]:
        raise ShapeMismatchError(
            f"x_true/mean {diff.shape} need (..., N, K, T) and cov_blocks {cov.shape} (..., N, K, K)."
        )
    _check_finite(x_true_minus_mean=diff, cov_blocks=cov)
    k = cov.shape[-1]
    # CaliBrain's inverse: eigenvalues of the symmetrised block raised to BLOCK_EPSILON, so a
    # degenerate block (a source gamma-MAP pruned) covers only an exact estimate
    eigvals, eigvecs = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
    rotated = np.einsum("...ij,...it->...jt", eigvecs, diff)
    scaled = rotated**2 / np.maximum(eigvals, BLOCK_EPSILON)[..., None]
    return coverage_from_scores(scaled.sum(-2), chi2.ppf(_check_levels(levels), k))


def calibration_metrics(levels: np.ndarray, empirical: np.ndarray) -> dict[str, float]:
    """CaliBrain's deviation metrics of an empirical coverage curve, under CaliBrain's names.

    As in CaliBrain's ``calibration_metrics_4``, ``max_underconfidence_deviation`` is the largest
    shortfall ``nominal - empirical`` (intervals that cover too little) and
    ``max_overconfidence_deviation`` the largest excess ``empirical - nominal``; the signed
    deviation is ``mean(empirical - nominal)``.
    """
    diff = np.asarray(empirical, np.float64) - np.asarray(levels, np.float64)
    return {
        "max_underconfidence_deviation": float(np.max(np.maximum(-diff, 0.0))),
        "max_overconfidence_deviation": float(np.max(np.maximum(diff, 0.0))),
        "mean_absolute_deviation": float(np.mean(np.abs(diff))),
        "mean_signed_deviation": float(np.mean(diff)),
    }


@dataclass
class IsotonicRecalibration:
    """Monotone map nominal -> empirical coverage, and its inverse.

    The fitted curve is piecewise linear through ``(0, 0)``, the isotonic fit at the training
    levels (see `FIT_LEVELS`), and ``(1, 1)``.
    """

    levels: np.ndarray | None = None
    fitted: np.ndarray | None = None

    def fit(
        self, levels: np.ndarray, empirical: np.ndarray, weights: np.ndarray | None = None
    ) -> IsotonicRecalibration:
        """Fit the isotonic regression of ``empirical`` on ``levels``."""
        order = np.argsort(levels)
        levels = np.asarray(levels, np.float64)[order]
        empirical = np.asarray(empirical, np.float64)[order]
        w = None if weights is None else np.asarray(weights, np.float64)[order]
        result = isotonic_regression(empirical, weights=w, increasing=True)
        self.levels = np.concatenate([[0.0], levels, [1.0]])
        self.fitted = np.clip(np.concatenate([[0.0], result.x, [1.0]]), 0.0, 1.0)
        return self

    def _check(self) -> None:
        if self.levels is None or self.fitted is None:
            raise RuntimeError("IsotonicRecalibration is not fitted; call fit() first.")

    def predict(self, levels: np.ndarray) -> np.ndarray:
        """Expected empirical coverage at nominal ``levels``."""
        self._check()
        return np.interp(levels, self.levels, self.fitted)

    def recalibrate(self, targets: np.ndarray) -> np.ndarray:
        """Nominal levels whose expected empirical coverage is ``targets``.

        The exact inverse of the piecewise-linear `predict`: a target on a flat stretch gets the
        stretch's last level (as CaliBrain's grid inversion), a target above it a level beyond.
        """
        self._check()
        targets = np.clip(np.asarray(targets, np.float64), 0.0, 1.0)
        # the last knot at or below each target; the next knot is then strictly above it
        j = np.clip(
            np.searchsorted(self.fitted, targets, side="right") - 1, 0, len(self.fitted) - 2
        )
        low, high = self.fitted[j], self.fitted[j + 1]
        step = np.where(high > low, (targets - low) / np.where(high > low, high - low, 1.0), 1.0)
        return np.clip(self.levels[j] + step * (self.levels[j + 1] - self.levels[j]), 0.0, 1.0)

    def to_dict(self) -> dict[str, list[float]]:
        self._check()
        return {"levels": self.levels.tolist(), "fitted": self.fitted.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, list[float]]) -> IsotonicRecalibration:
        return cls(np.asarray(state["levels"]), np.asarray(state["fitted"]))
