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
from typing import cast

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.stats import chi2, norm

from neurotorch._docs import fill_doc
from neurotorch._options import check_option
from neurotorch.errors import (
    ImplausibleDataError,
    NonFiniteError,
    ParameterError,
    ShapeMismatchError,
)

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
#: How far below zero a variance (or a block eigenvalue) may lie, relative to the largest one,
#: and still count as a rounded zero (float64; 100 float eps for coarser dtypes); anything lower
#: is refused.
ROUNDING = 1e-9


def _rounding(array: np.ndarray) -> float:
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float64
    return max(ROUNDING, 100 * float(np.finfo(dtype).eps))


class CoverageCurve(np.ndarray):
    """Empirical coverage at nominal levels: the array of coverages (use it as one, or take
    ``np.asarray(curve)``), with the nominal ``levels`` it was counted at.

    ``dict(zip(curve.levels, curve))`` pairs them; `to_frame` makes a two-column table.
    """

    levels: np.ndarray

    def __new__(cls, levels: np.ndarray, coverage: np.ndarray) -> CoverageCurve:
        curve = np.asarray(coverage, dtype=np.float64).view(cls)
        curve.levels = np.asarray(levels, dtype=np.float64).copy()
        return curve

    def __array_finalize__(self, obj: object) -> None:
        # a curve made by __new__ gets its levels right after this view; others inherit them
        self.levels = cast(np.ndarray, getattr(obj, "levels", None))

    def __array_wrap__(self, array, context=None, return_scalar=False):  # noqa: ANN001
        """Arithmetic on a curve gives plain arrays (their levels would be meaningless)."""
        result = np.asarray(array)
        return result[()] if return_scalar else result

    def __reduce__(self):  # noqa: ANN204 - pickles with its levels
        return CoverageCurve, (self.levels, np.asarray(self))

    @property
    def coverage(self) -> np.ndarray:
        """The empirical coverages as a plain array."""
        return np.asarray(self)

    def to_frame(self):  # noqa: ANN201 - pandas is imported on use
        """A ``pandas.DataFrame`` with columns ``nominal`` and ``empirical``."""
        import pandas as pd

        return pd.DataFrame({"nominal": self.levels, "empirical": self.coverage})

    def __repr__(self) -> str:
        pairs = ", ".join(
            f"{level:g}: {value:.3f}"
            for level, value in zip(self.levels, self.coverage, strict=True)
        )
        return f"CoverageCurve({{{pairs}}})"

    __str__ = __repr__


def check_variances(var: np.ndarray, name: str = "var") -> np.ndarray:
    """``var`` as float64 with rounded zeros (down to `ROUNDING` times the largest variance below
    zero; 100 eps of a float32 ``var``) set to 0.

    Raises
    ------
    NonFiniteError
        NaN or Inf anywhere.
    ImplausibleDataError
        A variance further below zero: no posterior has one, so its intervals cannot be formed.
    """
    tolerance = _rounding(np.asarray(var))
    var = np.asarray(var, dtype=np.float64)
    if not np.isfinite(var).all():
        raise NonFiniteError(
            f"{name} holds {int(var.size - np.isfinite(var).sum())} NaN/Inf value(s); a "
            "posterior variance must be finite."
        )
    scale = float(np.abs(var).max()) if var.size else 0.0
    negative = var < -tolerance * scale
    if negative.any():
        raise ImplausibleDataError(
            f"{name} holds {int(negative.sum())} negative variance(s) (down to "
            f"{float(var.min()):.3g}); a posterior variance is >= 0: the posterior (or the file "
            "it came from) is broken, re-create it."
        )
    return np.maximum(var, 0.0)


def check_covariance_blocks(blocks: np.ndarray, name: str = "cov_blocks") -> np.ndarray:
    """``(..., K, K)`` covariance blocks as float64, refused unless finite, symmetric and
    positive semi-definite (eigenvalues down to ``-ROUNDING`` times the largest count as 0)."""
    tolerance = _rounding(np.asarray(blocks))
    blocks = np.asarray(blocks, dtype=np.float64)
    if not np.isfinite(blocks).all():
        raise NonFiniteError(f"{name} hold NaN or Inf; a posterior covariance must be finite.")
    scale = float(np.abs(blocks).max()) if blocks.size else 0.0
    asymmetry = np.abs(blocks - np.swapaxes(blocks, -1, -2)).max() if blocks.size else 0.0
    eigvals = np.linalg.eigvalsh(0.5 * (blocks + np.swapaxes(blocks, -1, -2)))
    bad = (eigvals < -tolerance * scale).any(axis=-1)
    if asymmetry > 1e3 * tolerance * scale or bad.any():
        raise ImplausibleDataError(
            f"{name} are not symmetric positive semi-definite ({int(bad.sum())} block(s) with a "
            f"negative eigenvalue, down to {float(eigvals.min()):.3g}; asymmetry "
            f"{float(asymmetry):.3g}); a posterior covariance is: re-create it."
        )
    return blocks


def _check_mode(mode: str) -> str:
    return check_option("mode", mode, COVERAGE_MODES)


def _check_levels(levels: np.ndarray) -> np.ndarray:
    """Nominal levels as a 1-D float array (one number is one level); text is refused, never
    parsed."""
    if isinstance(levels, str) or np.asarray(levels).dtype.kind not in "iuf":
        raise ParameterError(f"Nominal levels must be numbers in [0, 1], got {levels!r}.")
    levels = np.atleast_1d(np.asarray(levels, np.float64))
    if levels.ndim != 1 or not np.all((levels >= 0) & (levels <= 1)):  # also refuses NaN
        raise ParameterError(f"Nominal levels must be numbers in [0, 1] in one list, got {levels}.")
    return levels


def _check_finite(**arrays: np.ndarray) -> None:
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise NonFiniteError(f"{name} holds NaN or Inf; coverage needs finite values.")


def standardized_errors(x_true: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``|x - mu| / sqrt(var)``, with ``var`` broadcast over a trailing time axis.

    ``var`` has the shape of ``x_true`` without its last axis: ``(..., N)`` for ``(..., N, T)``
    or ``(..., N, K)`` for ``(..., N, K, T)``. Variances are checked by `check_variances`:
    rounded zeros count as 0 (as in CaliBrain), a negative or non-finite variance is refused.
    """
    x_true, mean, var = (np.asarray(a, dtype=np.float64) for a in (x_true, mean, var))
    _check_shapes(x_true, mean, var)
    _check_finite(x_true=x_true, mean=mean)
    var = check_variances(var)
    std = np.sqrt(np.maximum(var, np.finfo(np.float64).tiny))[..., None]
    return np.abs(x_true - mean) / std


def _check_shapes(x_true: np.ndarray, mean: np.ndarray, var: np.ndarray) -> None:
    if np.shape(x_true) != np.shape(mean) or np.shape(var) != np.shape(x_true)[:-1]:
        raise ShapeMismatchError(
            f"x_true {np.shape(x_true)} and mean {np.shape(mean)} must match and var "
            f"{np.shape(var)} must be {np.shape(x_true)[:-1]}."
        )


def coverage_from_scores(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of ``scores`` at or below each threshold."""
    ordered = np.sort(np.ravel(scores))
    return np.searchsorted(ordered, np.asarray(thresholds), side="right") / ordered.size


@fill_doc
def coverage_curve(
    x_true: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    levels: np.ndarray = DEFAULT_LEVELS,
    mode: str = "time_averaged",
) -> CoverageCurve:
    """Empirical coverage of the marginal central intervals at each nominal level.

    Parameters
    ----------
    x_true, mean
        True sources and posterior means, ``(..., T)``.
    var
        Posterior variances: the shape of ``x_true`` without the time axis (negative or
        non-finite ones are refused, see `check_variances`).
    %(meeg_levels)s
    %(meeg_coverage_mode)s

    Returns
    -------
    CoverageCurve
        The coverage at each level (an array) with its ``levels``.
    """
    levels = _check_levels(levels)
    z = norm.ppf((1.0 + levels) / 2.0)
    if _check_mode(mode) == "time_averaged":
        _check_shapes(x_true, mean, var)  # named as given, not as averaged
        x_true, mean, var = _time_average(x_true, mean, check_variances(var))
    return CoverageCurve(levels, coverage_from_scores(standardized_errors(x_true, mean, var), z))


def _time_average(
    x_true: np.ndarray, mean: np.ndarray, cov: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time-averaged sources as one-sample ``(..., 1)`` series, with (co)variance ``cov / T``."""
    n_times = np.shape(x_true)[-1]
    x_bar = np.mean(np.asarray(x_true, np.float64), axis=-1, keepdims=True)
    mu_bar = np.mean(np.asarray(mean, np.float64), axis=-1, keepdims=True)
    return x_bar, mu_bar, np.asarray(cov, np.float64) / n_times


@fill_doc
def ellipsoid_coverage_curve(
    x_true: np.ndarray,
    mean: np.ndarray,
    cov_blocks: np.ndarray,
    levels: np.ndarray = DEFAULT_LEVELS,
    mode: str = "time_averaged",
) -> CoverageCurve:
    """Coverage of per-source credible ellipsoids (free orientation).

    A sample (or, with ``mode="time_averaged"``, the time average with covariance ``cov / T``)
    is covered when its Mahalanobis distance² is at most the chi² quantile with K degrees of
    freedom. Block eigenvalues below `BLOCK_EPSILON` (nAm²) count as that value, as in
    CaliBrain.

    Parameters
    ----------
    x_true, mean
        ``(..., N, K, T)``.
    cov_blocks
        ``(..., N, K, K)`` posterior covariance blocks, symmetric positive semi-definite
        (`check_covariance_blocks`).
    %(meeg_levels)s
    %(meeg_coverage_mode)s
    """
    cov_blocks = check_covariance_blocks(cov_blocks)
    if _check_mode(mode) == "time_averaged":
        x_true, mean, cov_blocks = _time_average(x_true, mean, cov_blocks)
    diff = np.asarray(x_true, np.float64) - np.asarray(mean, np.float64)
    cov = np.asarray(cov_blocks, np.float64)
    if diff.shape[:-1] != cov.shape[:-1] or cov.shape[-1] != cov.shape[-2]:
        raise ShapeMismatchError(
            f"x_true/mean {diff.shape} need (..., N, K, T) and cov_blocks {cov.shape} (..., N, K, K)."
        )
    _check_finite(x_true_minus_mean=diff)
    k = cov.shape[-1]
    # CaliBrain's inverse: eigenvalues of the symmetrised block raised to BLOCK_EPSILON, so a
    # degenerate block (a source gamma-MAP pruned) covers only an exact estimate
    eigvals, eigvecs = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
    rotated = np.einsum("...ij,...it->...jt", eigvecs, diff)
    scaled = rotated**2 / np.maximum(eigvals, BLOCK_EPSILON)[..., None]
    levels = _check_levels(levels)
    return CoverageCurve(levels, coverage_from_scores(scaled.sum(-2), chi2.ppf(levels, k)))


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

    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitted curve's knots ``(levels, fitted)``; `ParameterError` before `fit`."""
        if self.levels is None or self.fitted is None:
            raise ParameterError("IsotonicRecalibration is not fitted; call fit() first.")
        return self.levels, self.fitted

    def predict(self, levels: np.ndarray) -> np.ndarray:
        """Expected empirical coverage at nominal ``levels``."""
        knots, fitted = self._knots()
        return np.interp(levels, knots, fitted)

    def recalibrate(self, targets: np.ndarray) -> np.ndarray:
        """Nominal levels whose expected empirical coverage is ``targets``.

        The exact inverse of the piecewise-linear `predict`: a target on a flat stretch gets the
        stretch's last level (as CaliBrain's grid inversion), a target above it a level beyond.
        """
        knots, fitted = self._knots()
        targets = np.clip(np.asarray(targets, np.float64), 0.0, 1.0)
        # the last knot at or below each target; the next knot is then strictly above it
        j = np.clip(np.searchsorted(fitted, targets, side="right") - 1, 0, len(fitted) - 2)
        low, high = fitted[j], fitted[j + 1]
        step = np.where(high > low, (targets - low) / np.where(high > low, high - low, 1.0), 1.0)
        return np.clip(knots[j] + step * (knots[j + 1] - knots[j]), 0.0, 1.0)

    def to_dict(self) -> dict[str, list[float]]:
        knots, fitted = self._knots()
        return {"levels": knots.tolist(), "fitted": fitted.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, list[float]]) -> IsotonicRecalibration:
        return cls(np.asarray(state["levels"]), np.asarray(state["fitted"]))
