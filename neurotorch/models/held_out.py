"""Statistics of an encoder's test trials: per-voxel scores, the noise ceiling of those very
trials, and the split of the explained variance between feature spaces.

Each is a set of running sums with one column per voxel. `CorrelationStatistics` and
`PartitionStatistics` take a ``columns`` slice, so a model can add a batch one voxel chunk at a
time (its float64 temporaries then scale with the chunk, not with the brain); `CeilingStatistics`
converts a batch chunk by chunk itself.

The ceiling
-----------
A perfect model predicts each image's true response ``s``; its correlation with the test rows
``y = s + e`` is ``sqrt(var(s) / var(y))``. Both variances come from the test rows themselves:
``var(y)`` is their variance (ddof 1) and the noise variance is the pooled within-image variance
of the images shown more than once, ``σ̂² = Σ_i Σ_r (y_ir - ȳ_i)² / (N - I)`` (``N`` rows, ``I``
images), an unbiased estimate. The explainable fraction of variance is
``ĉ² = max(0, 1 - σ̂² / var(y))`` and the ceiling ``ĉ``. Its numerator is unbiased; the ratio is
biased by ``O(1 / N)``. To first order (delta method) its standard error is
``sd(ĉ²) ≈ (1 - ĉ²) · sqrt(2 / (N - I))``, so ``sd(ĉ) ≈ sd(ĉ²) / (2 ĉ)``. The rows must be
single trials: test rows that average repeats carry no within-image variance, and then no ceiling
is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from neurotorch.models.cross_products import voxel_chunks
from neurotorch.models.ridge import score_from_sums

F64 = torch.float64
#: Voxels per chunk when a batch is converted to float64 (a few MB of temporaries per chunk).
CONVERSION_CHUNK = 4096
WHOLE = slice(None)


class CorrelationStatistics:
    """Running sums of predictions ``p`` and targets ``y`` per target, for ``r``, ``R²`` and MSE."""

    def __init__(self, n_targets: int, device: torch.device | str = "cpu"):
        kw: dict[str, Any] = {"dtype": F64, "device": device}
        self.count = torch.zeros(n_targets, **kw)
        self.sum_p = torch.zeros(n_targets, **kw)
        self.sum_y = torch.zeros(n_targets, **kw)
        self.sum_pp = torch.zeros(n_targets, **kw)
        self.sum_yy = torch.zeros(n_targets, **kw)
        self.sum_py = torch.zeros(n_targets, **kw)

    def tensors(self) -> list[torch.Tensor]:
        return [self.count, self.sum_p, self.sum_y, self.sum_pp, self.sum_yy, self.sum_py]

    def update(self, pred: torch.Tensor, y: torch.Tensor, columns: slice = WHOLE) -> None:
        """Add predictions ``pred (n, C)`` of targets ``y (n, C)``, the targets ``columns``."""
        pred, y = pred.to(F64), y.to(F64)
        self.count[columns] += y.shape[0]
        self.sum_p[columns] += pred.sum(0)
        self.sum_y[columns] += y.sum(0)
        self.sum_pp[columns] += (pred**2).sum(0)
        self.sum_yy[columns] += (y**2).sum(0)
        self.sum_py[columns] += (pred * y).sum(0)

    def score(self, kind: str = "r") -> torch.Tensor:
        """Per-target ``"r"``, ``"r2"`` (coefficient of determination) or ``"mse"`` (negated)."""
        sums = self.sum_p, self.sum_y, self.sum_pp, self.sum_yy, self.sum_py
        return score_from_sums(kind, self.count, sums)

    def correlation(self) -> torch.Tensor:
        return self.score("r")


class CeilingStatistics:
    """Per-image sums of the test rows (count, ``Σ y``) and ``Σ y²`` per target."""

    def __init__(self, n_targets: int, device: torch.device | str = "cpu"):
        kw: dict[str, Any] = {"dtype": F64, "device": device}
        self.images: dict[str, int] = {}
        self.count = torch.zeros(0, **kw)
        self.sums = torch.zeros(0, n_targets, **kw)
        self.sum_yy = torch.zeros(n_targets, **kw)

    def update(self, y: torch.Tensor, images: Sequence[str]) -> None:
        """Add test rows ``y (n, V)`` showing ``images``."""
        rows = [self.images.setdefault(str(name), len(self.images)) for name in images]
        new = len(self.images) - len(self.count)
        if new:
            self.count = torch.cat([self.count, self.count.new_zeros(new)])
            self.sums = torch.cat([self.sums, self.sums.new_zeros(new, self.sums.shape[1])])
        index = torch.tensor(rows, device=y.device)
        self.count.index_add_(0, index, torch.ones_like(index, dtype=F64))
        for columns in voxel_chunks(y.shape[1], CONVERSION_CHUNK):
            part = y[:, columns].to(F64)
            self.sums[:, columns].index_add_(0, index, part)
            self.sum_yy[columns] += (part**2).sum(0)

    def sum_over_ranks(self) -> None:
        """Add up the statistics of every rank of the default process group (all ranks call it)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        names: list[list[str]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(names, list(self.images))
        union = {name: i for i, name in enumerate(sorted({n for part in names for n in part}))}
        own = torch.tensor([union[name] for name in self.images], device=self.count.device)
        count = self.count.new_zeros(len(union)).index_add_(0, own, self.count)
        sums = self.sums.new_zeros(len(union), self.sums.shape[1]).index_add_(0, own, self.sums)
        for tensor in (count, sums, self.sum_yy):
            dist.all_reduce(tensor)
        self.images, self.count, self.sums = union, count, sums

    def ceiling(self) -> dict[str, np.ndarray | int] | None:
        """Per target ``ceiling_r``, ``explainable`` (``ĉ²``) and ``ceiling_sd``; ``n_rows``,
        ``n_images``. None without repeated images."""
        n_rows, n_images = int(self.count.sum()), len(self.count)
        if n_rows - n_images < 1:
            return None
        total = self.sums.sum(0)
        within = self.sum_yy - (self.sums**2 / self.count[:, None]).sum(0)
        var_y = (self.sum_yy - total**2 / n_rows) / (n_rows - 1)
        noise = within / (n_rows - n_images)
        explainable = (1 - noise / var_y).clamp(min=0)
        ceiling = explainable.sqrt()
        sd_explainable = (1 - explainable) * math.sqrt(2 / (n_rows - n_images))
        return {
            "ceiling_r": ceiling.cpu().numpy(),
            "explainable": explainable.cpu().numpy(),
            "ceiling_sd": (sd_explainable / (2 * ceiling)).cpu().numpy(),
            "n_rows": n_rows,
            "n_images": n_images,
        }


def median_fraction_margin(fraction: np.ndarray, ceiling: np.ndarray, ceiling_sd: np.ndarray):
    """Sampling margin of the median fraction of ceiling ``r / ĉ`` over voxels.

    Three standard errors of a median (``1.2533 σ / sqrt(n)``, voxels independent) with ``σ`` the
    typical spread ``fraction · sd(ĉ) / ĉ``, plus the ``O(1/N)`` bias of ``1 / ĉ``
    (``fraction · (sd(ĉ) / ĉ)²``).
    """
    relative = ceiling_sd / ceiling
    spread = np.nanmedian(np.abs(fraction) * relative)
    bias = np.nanmedian(np.abs(fraction) * relative**2)
    return float(3 * 1.2533 * spread / math.sqrt(max(1, np.isfinite(fraction).sum())) + bias)


class PartitionStatistics:
    """Sums for splitting the explained variance between feature spaces (the product measure).

    With ``ŷ = Σ_s ŷ_s`` and every quantity centred over the test rows, space ``s`` explains
    ``r²_s = Σ ŷ_s (2 y - ŷ) / Σ y²``; the ``r²_s`` add up to ``1 - Σ (y - ŷ)² / Σ y²``.
    """

    def __init__(self, n_spaces: int, n_targets: int, device: torch.device | str = "cpu"):
        kw: dict[str, Any] = {"dtype": F64, "device": device}
        self.count = torch.zeros(n_targets, **kw)
        self.sum_y = torch.zeros(n_targets, **kw)
        self.sum_yy = torch.zeros(n_targets, **kw)
        self.sum_p = torch.zeros(n_targets, **kw)
        self.sum_ps = torch.zeros(n_spaces, n_targets, **kw)
        self.sum_ps_y = torch.zeros(n_spaces, n_targets, **kw)
        self.sum_ps_p = torch.zeros(n_spaces, n_targets, **kw)

    def tensors(self) -> list[torch.Tensor]:
        return [
            self.count,
            self.sum_y,
            self.sum_yy,
            self.sum_p,
            self.sum_ps,
            self.sum_ps_y,
            self.sum_ps_p,
        ]

    def update(self, parts: torch.Tensor, y: torch.Tensor, columns: slice = WHOLE) -> None:
        """``parts (S, n, C)``: each space's share of the predictions (without the intercept) of
        targets ``y (n, C)``, the targets ``columns``."""
        parts, y = parts.to(F64), y.to(F64)
        pred = parts.sum(0)
        self.count[columns] += y.shape[0]
        self.sum_y[columns] += y.sum(0)
        self.sum_yy[columns] += (y**2).sum(0)
        self.sum_p[columns] += pred.sum(0)
        self.sum_ps[:, columns] += parts.sum(1)
        self.sum_ps_y[:, columns] += (parts * y).sum(1)
        self.sum_ps_p[:, columns] += (parts * pred).sum(1)

    def r2(self) -> torch.Tensor:
        """``(S, V)`` share of each space in the (centred) explained variance."""
        n = self.count
        cov_y = self.sum_ps_y - self.sum_ps * self.sum_y / n
        cov_p = self.sum_ps_p - self.sum_ps * self.sum_p / n
        return (2 * cov_y - cov_p) / (self.sum_yy - self.sum_y**2 / n)
