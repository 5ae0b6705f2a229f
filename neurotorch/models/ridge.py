"""Exact ridge regression with k-fold penalty selection, from per-fold sufficient statistics.

Training accumulates, per fold, ``n, Σx, Σy, Σy², XᵀX, XᵀY`` batch by batch
(`neurotorch.models.ridge_statistics`): one pass over the data, exact, and reducible across DDP
ranks by summation. The large part, ``XᵀY``, is held in voxel chunks (in memory or in a scratch
file); the fit works chunk by chunk too, with the eigendecompositions shared by every chunk, so its
workspace is bounded by the chunk. Trials are put in folds by
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
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

import torch

from neurotorch._options import check_option
from neurotorch.errors import EncoderConfigError
from neurotorch.models.ridge_statistics import RidgeStatistics

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
    """Choose penalties by k-fold cross-validation and refit on all folds, voxel chunk by chunk.

    The eigendecompositions (one per fold and band weighting) are shared by every chunk of
    ``stats``; the validation scores of each chunk's targets fill their columns of one
    ``(candidates, V)`` table, the penalties are chosen from it (per target, or one for all by
    the mean score), and each chunk is refitted with its targets' penalties.

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
        One penalty per target (else one for all, by the mean score over the targets that
        have a score for every candidate: a constant target, such as a voxel that is NaN in
        every trial read with ``nan_policy="zero"``, has none and is left out of the choice).
    solver
        ``"primal"``, ``"dual"`` (needs the trials, see `RidgeStatistics`) or ``"auto"`` (dual
        when the trials were kept).
    """
    check_option("score", score, SCORES)
    check_option("solver", solver, SOLVERS)
    n_features, n_targets = stats.n_features, stats.n_targets
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
    if solver == "dual" and not stats.has_rows():
        raise EncoderConfigError(
            "The dual solve needs the trials, which are kept only while there are no more of them "
            "than features (and not under DDP); use solver='primal'."
        )
    if stats.has_rows() and solver != "primal":
        problem: _Problem[Any] = _DualProblem(stats, bands)
    else:
        problem = _PrimalProblem(stats, bands)
    device = stats.count.device
    alphas = torch.tensor(list(penalties), dtype=F64, device=device)
    gammas = _band_weights(len(bands), band_ratios).to(device)
    scores = torch.empty(len(gammas) * len(alphas), n_targets, dtype=F64, device=device)
    for g, gamma in enumerate(gammas):
        fits = [problem.prepare(k, gamma) for k in folds]
        candidates = slice(g * len(alphas), (g + 1) * len(alphas))
        for j, columns in enumerate(stats.chunks):
            block = problem.block(j)
            total = sum(problem.scores(fit, block, alphas=alphas, kind=score) for fit in fits)
            scores[candidates, columns] = total / len(fits)
    scores = torch.nan_to_num(scores, nan=-torch.inf)
    if per_target:
        best = scores.argmax(0)
    else:  # by the mean over the targets scored for every candidate (a constant one never is)
        scored = torch.isfinite(scores).all(0)
        shared = scores[:, scored].mean(1) if bool(scored.any()) else scores.mean(1)
        best = shared.argmax().expand(n_targets)
    gamma_index, alpha_index = best // len(alphas), best % len(alphas)
    weight = torch.empty(n_features, n_targets, dtype=stats.dtype, device=device)
    intercept = torch.empty(n_targets, dtype=F64, device=device)
    for g in torch.unique(gamma_index).tolist():
        fit = problem.prepare(None, gammas[g])
        for j, columns in enumerate(stats.chunks):
            chosen = torch.nonzero(gamma_index[columns] == g).squeeze(1)
            if len(chosen):
                targets = chosen + columns.start
                w, b = problem.solve(
                    fit, problem.block(j), chosen=chosen, alphas=alphas[alpha_index[targets]]
                )
                weight[:, targets], intercept[targets] = w.to(weight.dtype), b
    return RidgeFit(
        weight=weight,
        intercept=intercept,
        penalty=alphas[alpha_index][None, :] / gammas[gamma_index].T,
        cv_score=scores[best, torch.arange(n_targets, device=device)],
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


def score_from_sums(kind: str, n, sums: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Score of predictions ``p`` against targets ``y`` over ``n`` trials from their sums
    ``(Σp, Σy, Σp², Σy², Σpy)``: ``"r"``, ``"r2"`` or ``"mse"`` (negated: higher is better)."""
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


@dataclass
class _PrimalFit:
    """A fit on the folds other than ``held_out`` (all folds: None), shared by every chunk: the
    scaled training sums' centred covariance in its eigenbasis and, for a held-out fold, that
    fold's ``Σx`` in the same basis and its ``XᵀX`` there, as a factor ``G`` with ``GᵀG = XᵀX``
    when its rank (at most the fold's trials) is well below ``D``, else as the matrix itself."""

    held_out: int | None
    n: torch.Tensor
    f: torch.Tensor
    mean_x: torch.Tensor
    eigvals: torch.Tensor
    eigvecs: torch.Tensor
    held_sum_x: torch.Tensor | None = None
    held_xtx: torch.Tensor | None = None
    held_factor: torch.Tensor | None = None

    def held_quadratic(self, w: torch.Tensor) -> torch.Tensor:
        """``wᵀ XᵀX w`` of the held-out fold for every column of ``w`` ``(D, C)``."""
        if self.held_factor is not None:
            return ((self.held_factor @ w) ** 2).sum(0)
        assert self.held_xtx is not None, "a held-out fit has a factor or a matrix"
        return (w * (self.held_xtx @ w)).sum(0)


FitT = TypeVar("FitT")


class _Problem(Protocol, Generic[FitT]):
    """What `fit_ridge` asks of a solver, whose fits are of type ``FitT``."""

    name: str

    def prepare(self, held_out: int | None, gamma: torch.Tensor) -> FitT: ...

    def block(self, j: int) -> tuple[Any, ...]: ...

    def scores(self, fit: FitT, block, *, alphas: torch.Tensor, kind: str) -> torch.Tensor: ...

    def solve(
        self, fit: FitT, block, chosen: torch.Tensor, alphas: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class _PrimalProblem:
    """Ridge in feature space from per-fold sums: one ``D × D`` eigendecomposition per fit."""

    name = "primal"

    def __init__(self, stats: RidgeStatistics, bands: list[int]):
        stats.flush()
        self.stats, self.bands = stats, bands
        n, sx = stats.count.sum(), stats.sum_x.sum(0)
        self.scale = _feature_scale(torch.diagonal(stats.xtx.sum(0)) - sx**2 / n, bands)
        self.band_of = _band_of(bands, self.scale.device)

    def prepare(self, held_out: int | None, gamma: torch.Tensor) -> _PrimalFit:
        """Eigendecomposition of the scaled, centred covariance of the folds but ``held_out``."""
        s = self.stats
        train = [j for j in range(s.n_folds) if j != held_out]
        n, sx, xtx = s.count[train].sum(), s.sum_x[train].sum(0), s.xtx[train].sum(0)
        f = self.scale * gamma.sqrt()[self.band_of]
        mean_x = f * sx / n
        cxx = f[:, None] * xtx * f[None, :] - n * torch.outer(mean_x, mean_x)
        eigvals, eigvecs = torch.linalg.eigh(cxx)
        fit = _PrimalFit(
            held_out, n, f, mean_x=mean_x, eigvals=eigvals.clamp(min=0), eigvecs=eigvecs
        )
        if held_out is not None:  # the held-out fold's sums in the training eigenbasis
            fit.held_sum_x = eigvecs.T @ (f * s.sum_x[held_out])
            held_xtx = eigvecs.T @ (f[:, None] * s.xtx[held_out] * f[None, :]) @ eigvecs
            values, vectors = torch.linalg.eigh(held_xtx)
            kept = values > len(values) * torch.finfo(F64).eps * values.max()
            if int(kept.sum()) < 0.95 * len(values):  # fewer held-out trials than features
                fit.held_factor = (vectors[:, kept] * values[kept].sqrt()).T
            else:
                fit.held_xtx = held_xtx
        return fit

    def block(self, j: int) -> tuple[torch.Tensor, torch.Tensor, slice]:
        """Chunk ``j``'s cross-products ``(K, D, C)`` float64, their sum over the folds and the
        chunk's columns."""
        xty = self.stats.xty.read(j).to(F64)
        return xty, xty.sum(0), self.stats.chunks[j]

    def _projected(self, fit: _PrimalFit, xty: torch.Tensor, sum_y: torch.Tensor):
        """Training means of the targets and their centred cross-products in the eigenbasis, from
        the training folds' ``Xᵀy`` (changed in place) and ``Σy``."""
        mean_y = sum_y / fit.n
        cxy = xty.mul_(fit.f[:, None]).addr_(fit.mean_x, mean_y, alpha=-float(fit.n))
        return mean_y, fit.eigvecs.T @ cxy

    def scores(self, fit: _PrimalFit, block, *, alphas: torch.Tensor, kind: str) -> torch.Tensor:
        """``(P, C)`` score on the held-out fold of the chunk's fits on the other folds."""
        xty, total, columns = block
        s, k = self.stats, fit.held_out
        n, sum_y, sum_yy = s.count[k], s.sum_y[k, columns], s.sum_yy[k, columns]
        train_sum_y = s.sum_y[:, columns].sum(0) - sum_y
        mean_y, projected = self._projected(fit, total - xty[k], train_sum_y)
        held_xty = fit.eigvecs.T @ (fit.f[:, None] * xty[k])
        m = fit.eigvecs.T @ fit.mean_x
        out = []
        for alpha in alphas:
            w = projected / (fit.eigvals + alpha)[:, None]  # weights in the eigenbasis
            b = mean_y - m @ w
            sx_w = fit.held_sum_x @ w
            sum_p = sx_w + n * b
            sum_pp = fit.held_quadratic(w) + 2 * b * sx_w + n * b**2
            sum_py = torch.linalg.vecdot(w, held_xty, dim=0) + b * sum_y
            out.append(score_from_sums(kind, n, (sum_p, sum_y, sum_pp, sum_yy, sum_py)))
        return torch.stack(out)

    def solve(self, fit: _PrimalFit, block, chosen: torch.Tensor, alphas: torch.Tensor):
        """Weights ``(D, T)`` and intercepts ``(T,)`` of the chunk's ``chosen`` targets on all
        folds, one penalty each; the intercepts in the data's units (the shift undone)."""
        _, total, columns = block
        s = self.stats
        sum_y = s.sum_y[:, columns][:, chosen].sum(0)
        mean_y, projected = self._projected(fit, total[:, chosen], sum_y)
        w = fit.eigvecs @ (projected / (fit.eigvals[:, None] + alphas[None, :]))
        weight = fit.f[:, None] * w
        shift_x, shift_y = s.shifts()
        shift = shift_y[columns][chosen] - shift_x @ weight
        return weight, mean_y - fit.mean_x @ w + shift


@dataclass
class _DualFit:
    """A fit on the trials outside fold ``held_out`` (all trials: None), shared by every chunk:
    the scaled, centred training features, their kernel's eigendecomposition and, for a held-out
    fold, the kernel between its trials and the training trials in that eigenbasis."""

    held_out: int | None
    train: torch.Tensor
    f: torch.Tensor
    mean_x: torch.Tensor
    centred: torch.Tensor
    eigvals: torch.Tensor
    eigvecs: torch.Tensor
    held_kernel: torch.Tensor | None = None


class _DualProblem:
    """Ridge in trial space from the kept trials: one ``n × n`` eigendecomposition per fit."""

    name = "dual"

    def __init__(self, stats: RidgeStatistics, bands: list[int]):
        self.stats, self.bands = stats, bands
        self.x, self.folds = stats.row_features()
        self.scale = _feature_scale(self.x.var(0, correction=0) * self.x.shape[0], bands)
        self.band_of = _band_of(bands, self.scale.device)

    def prepare(self, held_out: int | None, gamma: torch.Tensor) -> _DualFit:
        """Eigendecomposition of the kernel of the trials outside fold ``held_out``."""
        train = self.folds != held_out if held_out is not None else torch.ones_like(self.folds) > 0
        f = self.scale * gamma.sqrt()[self.band_of]
        x = self.x[train] * f
        mean_x = x.mean(0)
        centred = x - mean_x
        eigvals, eigvecs = torch.linalg.eigh(centred @ centred.T)
        fit = _DualFit(
            held_out,
            train,
            f,
            mean_x=mean_x,
            centred=centred,
            eigvals=eigvals.clamp(min=0),
            eigvecs=eigvecs,
        )
        if held_out is not None:
            fit.held_kernel = ((self.x[~train] * f - mean_x) @ centred.T) @ eigvecs
        return fit

    def block(self, j: int) -> tuple[torch.Tensor, slice]:
        """Chunk ``j``'s targets of every kept trial ``(n, C)`` float64 and its columns."""
        columns = self.stats.chunks[j]
        return self.stats.row_targets(columns), columns

    @staticmethod
    def _projected(fit: _DualFit, y: torch.Tensor):
        """Training means of the targets and their centred values in the kernel's eigenbasis."""
        mean_y = y[fit.train].mean(0)
        return mean_y, fit.eigvecs.T @ (y[fit.train] - mean_y)

    def scores(self, fit: _DualFit, block, *, alphas: torch.Tensor, kind: str) -> torch.Tensor:
        """``(P, C)`` score on the held-out fold of the chunk's fits on the other folds."""
        y, _ = block
        mean_y, projected = self._projected(fit, y)
        held = y[~fit.train]
        n, sum_y, sum_yy = held.shape[0], held.sum(0), (held**2).sum(0)
        out = []
        for alpha in alphas:
            pred = fit.held_kernel @ (projected / (fit.eigvals + alpha)[:, None]) + mean_y
            sums = pred.sum(0), sum_y, (pred**2).sum(0), sum_yy, (pred * held).sum(0)
            out.append(score_from_sums(kind, n, sums))
        return torch.stack(out)

    def solve(self, fit: _DualFit, block, chosen: torch.Tensor, alphas: torch.Tensor):
        """Weights ``(D, T)`` and intercepts ``(T,)`` of the chunk's ``chosen`` targets on all
        trials, one penalty each."""
        y, _ = block
        mean_y, projected = self._projected(fit, y[:, chosen])
        dual = fit.eigvecs @ (projected / (fit.eigvals[:, None] + alphas[None, :]))
        w = fit.centred.T @ dual
        return fit.f[:, None] * w, mean_y - fit.mean_x @ w
