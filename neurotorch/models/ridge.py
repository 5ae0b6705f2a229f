"""Closed-form ridge regression from sufficient statistics, with per-target penalty selection.

Training accumulates ``n, Σx, Σy, XᵀX, XᵀY`` (float64) batch by batch, so the fit is one pass over
the data, exact, and reducible across DDP ranks by summation. Penalties are multiples of the mean
eigenvalue of the centred ``XᵀX``, so one grid suits features of any scale.
"""

from __future__ import annotations

import torch

DEFAULT_PENALTIES = tuple(10.0**k for k in range(-3, 4))


class RidgeStatistics:
    """Running sums for a ridge fit of ``y (n, V)`` on ``x (n, D)``."""

    def __init__(self, n_features: int, n_targets: int, device: torch.device | str = "cpu"):
        kw = {"dtype": torch.float64, "device": device}
        self.count = torch.zeros((), **kw)
        self.sum_x = torch.zeros(n_features, **kw)
        self.sum_y = torch.zeros(n_targets, **kw)
        self.xtx = torch.zeros(n_features, n_features, **kw)
        self.xty = torch.zeros(n_features, n_targets, **kw)

    def tensors(self) -> list[torch.Tensor]:
        return [self.count, self.sum_x, self.sum_y, self.xtx, self.xty]

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(torch.float64), y.to(torch.float64)
        self.count += x.shape[0]
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.xtx += x.T @ x
        self.xty += x.T @ y

    def solve(self, penalties: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``(P, D, V)`` and intercepts ``(P, V)``, one per relative penalty."""
        n = self.count
        mean_x, mean_y = self.sum_x / n, self.sum_y / n
        cxx = self.xtx - n * torch.outer(mean_x, mean_x)
        cxy = self.xty - n * torch.outer(mean_x, mean_y)
        eigvals, eigvecs = torch.linalg.eigh(cxx)
        eigvals = eigvals.clamp(min=0)
        projected = eigvecs.T @ cxy  # (D, V)
        scale = eigvals.mean().clamp(min=torch.finfo(torch.float64).tiny)
        weights = torch.stack(
            [eigvecs @ (projected / (eigvals + p * scale)[:, None]) for p in penalties]
        )
        intercepts = mean_y[None, :] - torch.einsum("d,pdv->pv", mean_x, weights)
        return weights, intercepts


class CorrelationStatistics:
    """Running sums for per-target Pearson correlations between predictions and targets.

    Works on any leading shape: predictions ``(..., n, V)`` against targets ``(n, V)``.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device | str = "cpu"):
        kw = {"dtype": torch.float64, "device": device}
        self.count = torch.zeros((), **kw)
        self.sum_p = torch.zeros(shape, **kw)
        self.sum_y = torch.zeros(shape[-1], **kw)
        self.sum_pp = torch.zeros(shape, **kw)
        self.sum_yy = torch.zeros(shape[-1], **kw)
        self.sum_py = torch.zeros(shape, **kw)

    def tensors(self) -> list[torch.Tensor]:
        return [self.count, self.sum_p, self.sum_y, self.sum_pp, self.sum_yy, self.sum_py]

    def update(self, pred: torch.Tensor, y: torch.Tensor) -> None:
        pred, y = pred.to(torch.float64), y.to(torch.float64)
        self.count += y.shape[0]
        self.sum_p += pred.sum(-2)
        self.sum_y += y.sum(0)
        self.sum_pp += (pred**2).sum(-2)
        self.sum_yy += (y**2).sum(0)
        self.sum_py += (pred * y).sum(-2)

    def correlation(self) -> torch.Tensor:
        n = self.count
        cov = self.sum_py - self.sum_p * self.sum_y / n
        var_p = self.sum_pp - self.sum_p**2 / n
        var_y = self.sum_yy - self.sum_y**2 / n
        return cov / torch.sqrt(var_p * var_y).clamp(min=1e-300)
