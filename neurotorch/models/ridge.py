"""Exact ridge regression with k-fold penalty selection, from per-fold sufficient statistics.

Training accumulates, per fold, ``n, Σx, Σy, Σy², XᵀX, XᵀY`` (float64) batch by batch: one pass
over the data, exact, and reducible across DDP ranks by summation. Trials are put in folds by
their image, so repetitions of an image never straddle folds. Fold ``k`` is validated against a
model fitted on the other folds, entirely from the sums (the validation predictions' sums of
squares are quadratic forms in the fold's ``XᵀX``), and the chosen penalties are refitted on all
folds. When there are fewer trials than features and the trials themselves are at hand, the same
fits are solved in the dual (an ``n × n`` kernel instead of the ``D × D`` covariance).

Penalties are relative: feature space ``s`` is divided by the mean eigenvalue of its centred
covariance (over all trials), so one grid suits features of any scale and an absolute penalty is
``relative × trace(XᵀX_centred) / D`` (scikit-learn's ``alpha``). With several feature spaces
(banded ridge) space ``s`` is also weighted by ``γ_s`` from a grid of ratios; its penalty is then
``relative / γ_s``, chosen per target together with the overall level.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from neurotorch._options import check_option
from neurotorch.errors import EncoderConfigError

DEFAULT_PENALTIES = tuple(10.0 ** (k / 2) for k in range(-6, 7))  # 1e-3 … 1e3, half decades
DEFAULT_BAND_RATIOS = (0.01, 0.1, 1.0, 10.0, 100.0)
Score = Literal["r", "r2", "mse"]
Solver = Literal["auto", "primal", "dual"]
SCORES: tuple[str, ...] = get_args(Score)
SOLVERS: tuple[str, ...] = get_args(Solver)
F64 = torch.float64


def folds_of(names: Sequence[str], n_folds: int) -> torch.Tensor:
    """Fold of each trial from its image name: stable across processes, runs and batch order."""
    return torch.tensor([zlib.crc32(str(n).encode()) % n_folds for n in names], dtype=torch.long)


class RidgeStatistics:
    """Per-fold running sums for a ridge fit of ``y (n, V)`` on ``x (n, D)``.

    Parameters
    ----------
    n_features, n_targets
        ``D`` and ``V``.
    n_folds
        Number of cross-validation folds (trials carry their fold to `update`).
    keep_rows
        Also keep the trials themselves while there are no more of them than features, so that
        `fit_ridge` can solve in the dual.
    device
        Where the sums live.
    """

    def __init__(
        self,
        n_features: int,
        n_targets: int,
        n_folds: int = 5,
        *,
        keep_rows: bool = True,
        device: torch.device | str = "cpu",
    ):
        kw = {"dtype": F64, "device": device}
        self.count = torch.zeros(n_folds, **kw)
        self.sum_x = torch.zeros(n_folds, n_features, **kw)
        self.sum_y = torch.zeros(n_folds, n_targets, **kw)
        self.sum_yy = torch.zeros(n_folds, n_targets, **kw)
        self.xtx = torch.zeros(n_folds, n_features, n_features, **kw)
        self.xty = torch.zeros(n_folds, n_features, n_targets, **kw)
        self._rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = (
            [] if keep_rows else None
        )

    @property
    def n_folds(self) -> int:
        return self.count.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        """The sums, in a fixed order (for summing over DDP ranks in place)."""
        return [self.count, self.sum_x, self.sum_y, self.sum_yy, self.xtx, self.xty]

    def update(self, x: torch.Tensor, y: torch.Tensor, folds: torch.Tensor) -> None:
        """Add trials ``x (n, D)``, ``y (n, V)`` whose folds are ``folds (n,)``."""
        x, y = x.to(F64), y.to(F64)
        folds = folds.to(x.device)
        for k in torch.unique(folds).tolist():
            rows = folds == k
            xk, yk = x[rows], y[rows]
            self.count[k] += xk.shape[0]
            self.sum_x[k] += xk.sum(0)
            self.sum_y[k] += yk.sum(0)
            self.sum_yy[k] += (yk**2).sum(0)
            self.xtx[k] += xk.T @ xk
            self.xty[k] += xk.T @ yk
        if self._rows is not None:
            self._rows.append((x, y, folds))
            if self.count.sum() > self.xtx.shape[1]:
                self._rows = None  # more trials than features: the primal form is cheaper

    def rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """All trials ``(x, y, folds)`` if they were kept (fewer trials than features)."""
        if not self._rows:
            return None
        return tuple(torch.cat(parts) for parts in zip(*self._rows, strict=True))  # type: ignore[return-value]


@dataclass
class RidgeFit:
    """A fitted (banded) ridge model and how its penalties were chosen.

    Attributes
    ----------
    weight, intercept
        ``(D, V)`` and ``(V,)``: predictions are ``x @ weight + intercept``.
    penalty
        ``(S, V)`` relative penalty of each feature space for each target.
    cv_score
        ``(V,)`` mean validation score over folds of the chosen penalties.
    solver
        ``"primal"`` or ``"dual"``.
    """

    weight: torch.Tensor
    intercept: torch.Tensor
    penalty: torch.Tensor
    cv_score: torch.Tensor
    solver: str


def fit_ridge(
    stats: RidgeStatistics,
    penalties: Sequence[float] = DEFAULT_PENALTIES,
    bands: Sequence[int] | None = None,
    band_ratios: Sequence[float] = DEFAULT_BAND_RATIOS,
    score: Score = "r",
    per_target: bool = True,
    solver: Solver = "auto",
) -> RidgeFit:
    """Choose penalties by k-fold cross-validation and refit on all folds.

    Parameters
    ----------
    stats
        Accumulated statistics (summed over ranks already).
    penalties
        Grid of relative penalties.
    bands
        Sizes of consecutive feature spaces (banded ridge); default one space.
    band_ratios
        Grid of each further space's weight relative to the first one (banded ridge).
    score
        Validation score to maximise: ``"r"`` (Pearson r), ``"r2"`` (coefficient of
        determination) or ``"mse"`` (minimised).
    per_target
        One penalty per target (else one for all, by the mean score).
    solver
        ``"primal"``, ``"dual"`` (needs the trials, see `RidgeStatistics`) or ``"auto"`` (dual
        when the trials were kept).
    """
    check_option("score", score, SCORES)
    check_option("solver", solver, SOLVERS)
    n_features = stats.xtx.shape[1]
    bands = [n_features] if bands is None else [int(b) for b in bands]
    if sum(bands) != n_features or min(bands) < 1:
        raise EncoderConfigError(f"Feature spaces of sizes {bands} do not add up to {n_features}.")
    if not penalties or min(penalties) <= 0:
        raise EncoderConfigError(f"penalties must be positive numbers, got {list(penalties)}.")
    folds = [k for k in range(stats.n_folds) if stats.count[k] > 0]
    if len(folds) < 2:
        raise EncoderConfigError(
            f"Cross-validation needs trials in at least two folds, got {len(folds)}: train on more "
            f"images or use fewer folds."
        )
    rows = stats.rows()
    if solver == "dual" and rows is None:
        raise EncoderConfigError(
            "The dual solve needs the trials, which are kept only while there are no more of them "
            "than features (and not under DDP); use solver='primal'."
        )
    if rows is not None and solver != "primal":
        problem: _PrimalProblem | _DualProblem = _DualProblem(rows, bands)
    else:
        problem = _PrimalProblem(stats, bands)
    alphas = torch.tensor(list(penalties), dtype=F64, device=stats.xtx.device)
    gammas = _band_weights(len(bands), band_ratios).to(alphas.device)
    per_fold = [
        torch.stack([problem.fold_scores(k, g, alphas=alphas, kind=score) for k in folds])
        for g in gammas
    ]
    scores = torch.stack([fold_scores.mean(0) for fold_scores in per_fold]).flatten(0, 1)
    # (n_gammas * n_penalties, V)
    scores = torch.nan_to_num(scores, nan=-torch.inf)
    best = scores.argmax(0) if per_target else scores.mean(1).argmax().expand(scores.shape[1])
    gamma_index, alpha_index = best // len(alphas), best % len(alphas)
    weight = torch.empty(n_features, scores.shape[1], dtype=F64, device=alphas.device)
    intercept = torch.empty(scores.shape[1], dtype=F64, device=alphas.device)
    for g in torch.unique(gamma_index).tolist():
        targets = torch.nonzero(gamma_index == g).squeeze(1)
        weight[:, targets], intercept[targets] = problem.solve(
            gammas[g], alphas[alpha_index[targets]], targets
        )
    columns = torch.arange(scores.shape[1], device=best.device)
    return RidgeFit(
        weight=weight,
        intercept=intercept,
        penalty=alphas[alpha_index][None, :] / gammas[gamma_index].T,
        cv_score=scores[best, columns],
        solver=problem.name,
    )


def _band_weights(n_bands: int, ratios: Sequence[float]) -> torch.Tensor:
    """``(C, S)`` weights of the feature spaces: the first is 1, the others each ratio."""
    if n_bands == 1:
        return torch.ones(1, 1, dtype=F64)
    if not ratios or min(ratios) <= 0:
        raise EncoderConfigError(f"band_ratios must be positive numbers, got {list(ratios)}.")
    grid = itertools.product(*[[1.0]] + [list(ratios)] * (n_bands - 1))
    return torch.tensor(list(grid), dtype=F64)


def _score(kind: str, n, sums: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Validation score of predictions ``p`` against ``y`` from their sums
    ``(Σp, Σy, Σp², Σy², Σpy)`` (higher is better)."""
    sum_p, sum_y, sum_pp, sum_yy, sum_py = sums
    sse = sum_yy - 2 * sum_py + sum_pp
    if kind == "mse":
        return -sse / n
    var_y = sum_yy - sum_y**2 / n
    if kind == "r2":
        return 1 - sse / var_y
    cov = sum_py - sum_p * sum_y / n
    var_p = sum_pp - sum_p**2 / n
    return cov / torch.sqrt(var_p * var_y)


def _feature_scale(centred_diagonal: torch.Tensor, bands: list[int]) -> torch.Tensor:
    """Per feature ``1 / sqrt(mean eigenvalue of its space)``, from the centred covariance's
    diagonal over all trials."""
    means = torch.stack([part.mean() for part in torch.split(centred_diagonal, bands)])
    if not bool((means > 0).all()):
        raise EncoderConfigError(
            "A feature space is constant over the training trials; its features cannot be fitted."
        )
    return means.rsqrt()[_band_of(bands, means.device)]


def _band_of(bands: list[int], device: torch.device) -> torch.Tensor:
    """Feature space of each feature."""
    return torch.repeat_interleave(torch.arange(len(bands)), torch.tensor(bands)).to(device)


class _PrimalProblem:
    """Ridge in feature space from per-fold sums: one ``D × D`` eigendecomposition per fit."""

    name = "primal"

    def __init__(self, stats: RidgeStatistics, bands: list[int]):
        self.stats, self.bands = stats, bands
        n, sx = stats.count.sum(), stats.sum_x.sum(0)
        self.scale = _feature_scale(torch.diagonal(stats.xtx.sum(0)) - sx**2 / n, bands)
        self.band_of = _band_of(bands, self.scale.device)

    def _sums(self, folds: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = self.stats
        return tuple(t[folds].sum(0) for t in (s.count, s.sum_x, s.sum_y, s.xtx, s.xty))

    def _eigen(self, folds: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Scaled statistics of ``folds`` and the eigendecomposition of their centred covariance."""
        n, sx, sy, xtx, xty = self._sums(folds)
        f = self.scale * gamma.sqrt()[self.band_of]
        mean_x, mean_y = f * sx / n, sy / n
        cxx = f[:, None] * xtx * f[None, :] - n * torch.outer(mean_x, mean_x)
        cxy = f[:, None] * xty - n * torch.outer(mean_x, mean_y)
        eigvals, eigvecs = torch.linalg.eigh(cxx)
        return f, mean_x, mean_y, eigvals.clamp(min=0), eigvecs, eigvecs.T @ cxy

    def fold_scores(self, k: int, gamma: torch.Tensor, *, alphas: torch.Tensor, kind: str):
        """``(P, V)`` score on fold ``k`` of the fits on the other folds."""
        s = self.stats
        others = torch.tensor([j for j in range(s.n_folds) if j != k])
        f, mean_x, mean_y, eigvals, eigvecs, projected = self._eigen(others, gamma)
        n = s.count[k]
        sx = eigvecs.T @ (f * s.sum_x[k])  # validation sums in the training eigenbasis
        xtx = eigvecs.T @ (f[:, None] * s.xtx[k] * f[None, :]) @ eigvecs
        xty = eigvecs.T @ (f[:, None] * s.xty[k])
        m = eigvecs.T @ mean_x
        out = []
        for alpha in alphas:
            w = projected / (eigvals + alpha)[:, None]  # weights in the eigenbasis
            b = mean_y - m @ w
            sum_p = sx @ w + n * b
            sum_pp = (w * (xtx @ w)).sum(0) + 2 * b * (sx @ w) + n * b**2
            sum_py = (w * xty).sum(0) + b * s.sum_y[k]
            out.append(_score(kind, n, (sum_p, s.sum_y[k], sum_pp, s.sum_yy[k], sum_py)))
        return torch.stack(out)

    def solve(self, gamma: torch.Tensor, alphas: torch.Tensor, targets: torch.Tensor):
        """Weights ``(D, T)`` and intercepts ``(T,)`` on all folds, one penalty per target."""
        every = torch.arange(self.stats.n_folds)
        f, mean_x, mean_y, eigvals, eigvecs, projected = self._eigen(every, gamma)
        w = eigvecs @ (projected[:, targets] / (eigvals[:, None] + alphas[None, :]))
        return f[:, None] * w, mean_y[targets] - mean_x @ w


class _DualProblem:
    """Ridge in trial space from the trials: one ``n × n`` eigendecomposition per fit."""

    name = "dual"

    def __init__(self, rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor], bands: list[int]):
        self.x, self.y, self.folds = rows
        self.bands = bands
        self.scale = _feature_scale(self.x.var(0, correction=0) * self.x.shape[0], bands)
        self.band_of = _band_of(bands, self.scale.device)

    def _fit(self, rows: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.scale * gamma.sqrt()[self.band_of]
        x = self.x[rows] * f
        mean_x, mean_y = x.mean(0), self.y[rows].mean(0)
        centred = x - mean_x
        eigvals, eigvecs = torch.linalg.eigh(centred @ centred.T)
        return (
            f,
            mean_x,
            mean_y,
            centred,
            eigvals.clamp(min=0),
            eigvecs,
            eigvecs.T @ (self.y[rows] - mean_y),
        )

    def fold_scores(self, k: int, gamma: torch.Tensor, *, alphas: torch.Tensor, kind: str):
        """``(P, V)`` score on fold ``k`` of the fits on the other folds."""
        held = self.folds == k
        f, mean_x, mean_y, centred, eigvals, eigvecs, projected = self._fit(~held, gamma)
        kernel = ((self.x[held] * f - mean_x) @ centred.T) @ eigvecs
        y = self.y[held]
        n, sum_y, sum_yy = y.shape[0], y.sum(0), (y**2).sum(0)
        out = []
        for alpha in alphas:
            pred = kernel @ (projected / (eigvals + alpha)[:, None]) + mean_y
            sums = pred.sum(0), sum_y, (pred**2).sum(0), sum_yy, (pred * y).sum(0)
            out.append(_score(kind, n, sums))
        return torch.stack(out)

    def solve(self, gamma: torch.Tensor, alphas: torch.Tensor, targets: torch.Tensor):
        """Weights ``(D, T)`` and intercepts ``(T,)`` on all trials, one penalty per target."""
        every = torch.ones_like(self.folds, dtype=torch.bool)
        f, mean_x, mean_y, centred, eigvals, eigvecs, projected = self._fit(every, gamma)
        dual = eigvecs @ (projected[:, targets] / (eigvals[:, None] + alphas[None, :]))
        w = centred.T @ dual
        return f[:, None] * w, mean_y[targets] - mean_x @ w


class CorrelationStatistics:
    """Running sums for per-target Pearson correlations between predictions and targets.

    Works on any leading shape: predictions ``(..., n, V)`` against targets ``(n, V)``.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device | str = "cpu"):
        kw = {"dtype": F64, "device": device}
        self.count = torch.zeros((), **kw)
        self.sum_p = torch.zeros(shape, **kw)
        self.sum_y = torch.zeros(shape[-1], **kw)
        self.sum_pp = torch.zeros(shape, **kw)
        self.sum_yy = torch.zeros(shape[-1], **kw)
        self.sum_py = torch.zeros(shape, **kw)

    def tensors(self) -> list[torch.Tensor]:
        return [self.count, self.sum_p, self.sum_y, self.sum_pp, self.sum_yy, self.sum_py]

    def update(self, pred: torch.Tensor, y: torch.Tensor) -> None:
        pred, y = pred.to(F64), y.to(F64)
        self.count += y.shape[0]
        self.sum_p += pred.sum(-2)
        self.sum_y += y.sum(0)
        self.sum_pp += (pred**2).sum(-2)
        self.sum_yy += (y**2).sum(0)
        self.sum_py += (pred * y).sum(-2)

    def score(self, kind: str = "r") -> torch.Tensor:
        """Per-target ``"r"``, ``"r2"`` (coefficient of determination) or ``"mse"`` (negated)."""
        sums = self.sum_p, self.sum_y, self.sum_pp, self.sum_yy, self.sum_py
        return _score(kind, self.count, sums)

    def correlation(self) -> torch.Tensor:
        return self.score("r")
