"""Group statistics of per-subject Fisher z maps: one-sample t, two-sided p, FDR q.

The t statistic is computed from shifted sums of z (`ShiftedSums`): subtracting the first
subject's z before summing makes a voxel whose z is the same in every subject come out with a
sum of squared deviations of exactly 0, whatever the magnitude of z.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy import special

# p values are computed with the t distribution's finite series up to this many degrees of
# freedom, and with scipy below this p (see `two_sided_p`)
MAX_SERIES_DOF = 100
SERIES_P_FLOOR = 1e-6


class ShiftedSums:
    """Running sums of (z - z_first) and (z - z_first)^2 over subjects, in float64.

    Parameters
    ----------
    shape, device
        Shape and device of one z map.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device):
        self.shift = torch.empty(shape, dtype=torch.float32, device=device)
        self.total = torch.zeros(shape, dtype=torch.float64, device=device)
        self.total_sq = torch.zeros(shape, dtype=torch.float64, device=device)
        self._deviation = torch.empty(shape, dtype=torch.float64, device=device)
        self.count = 0

    def add(self, z: torch.Tensor) -> None:
        """Add one subject's float32 z map."""
        if self.count == 0:
            self.shift.copy_(z)
        # exact: the difference of two float32 values, taken in float64
        self._deviation.copy_(z).sub_(self.shift)
        self.total.add_(self._deviation)
        self.total_sq.addcmul_(self._deviation, self._deviation)
        self.count += 1

    def merge(self, other: ShiftedSums) -> None:
        """Add the sums of other subjects, taken around another shift (another batch file's
        first subject): with d = other.shift - shift, the sum gains other.total + n d and the
        sum of squares other.total_sq + 2 d other.total + n d^2. A voxel whose z is the same in
        every subject still comes out with a sum of squared deviations of exactly 0 (d = 0)."""
        if other.count == 0:
            return
        if self.count == 0:
            self.shift.copy_(other.shift)
        delta = other.shift.to(torch.float64) - self.shift.to(torch.float64)
        self.total_sq.add_(other.total_sq).add_(delta * other.total, alpha=2)
        self.total_sq.addcmul_(delta, delta, value=other.count)
        self.total.add_(other.total).add_(delta, alpha=other.count)
        self.count += other.count

    def state(self) -> dict[str, np.ndarray]:
        """The sums as numpy arrays (to save; `from_state` reads them back)."""
        return {
            "shift": self.shift.cpu().numpy(),
            "total": self.total.cpu().numpy(),
            "total_sq": self.total_sq.cpu().numpy(),
            "count": np.array(self.count),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> ShiftedSums:
        """Sums saved by `state`, on the CPU."""
        sums = cls(state["shift"].shape, torch.device("cpu"))
        sums.shift.copy_(torch.from_numpy(np.asarray(state["shift"])))
        sums.total.copy_(torch.from_numpy(np.asarray(state["total"])))
        sums.total_sq.copy_(torch.from_numpy(np.asarray(state["total_sq"])))
        sums.count = int(state["count"])
        return sums

    def mean_and_t(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean z, one-sample t) as float64 numpy arrays; see `t_statistic` for the rules."""
        n = self.count
        mean = self.total / n
        squared_deviations = (self.total_sq - self.total * mean).clamp_(min=0)
        mean = mean.add_(self.shift)
        standard_error = squared_deviations.div_((n - 1) * n).sqrt_()
        return mean.cpu().numpy(), t_statistic(mean, standard_error).cpu().numpy()


def t_statistic(mean: torch.Tensor, standard_error: torch.Tensor) -> torch.Tensor:
    """mean / standard error; where the standard error is 0: 0 if the mean is 0, else ±inf.

    A voxel whose z is 0 in every subject (a voxel without variance in any subject) has t = 0
    and p = 1; one whose z is the same non-zero value in every subject (the seed voxel of a
    one-voxel lesion) has t = ±inf and p = 0.
    """
    constant = torch.where(mean == 0, 0.0, mean.sign() * math.inf)
    return torch.where(standard_error > 0, mean / standard_error, constant)


def _tail_series_coefficients(dof: int) -> list[float]:
    """Coefficients c_k of the finite series of the t distribution with integer ``dof``.

    With x = dof / (dof + t^2) and s = |t| / sqrt(dof + t^2), P(|T| <= |t|) is
    s * sum_k c_k x^k for even ``dof`` and (2/pi) * (atan(|t| / sqrt(dof)) + s sqrt(x)
    sum_k c_k x^k) for odd ``dof`` (Abramowitz & Stegun 26.7.3-4).
    """
    even = dof % 2 == 0
    coefficients = [1.0]
    for k in range(1, (dof - 1) // 2 + (1 if even else 0)):
        ratio = (2 * k - 1) / (2 * k) if even else (2 * k) / (2 * k + 1)
        coefficients.append(coefficients[-1] * ratio)
    return coefficients


def two_sided_p(t: np.ndarray, dof: int) -> np.ndarray:
    """Two-sided p values of t statistics with integer ``dof``, float64.

    Up to `MAX_SERIES_DOF` degrees of freedom the t distribution's finite series is evaluated
    with a few vectorised passes in torch (Horner's rule); it agrees with
    ``scipy.special.stdtr`` to ~1e-9 relative while p >= `SERIES_P_FLOOR`. Smaller p values
    (where 1 - P(|T| <= |t|) would cancel) and larger ``dof`` use ``scipy.special.stdtr``.
    NaN stays NaN.
    """
    t = np.asarray(t, dtype=np.float64)
    if dof < 1 or dof > MAX_SERIES_DOF:
        return 2.0 * special.stdtr(dof, -np.abs(t))
    abs_t = torch.from_numpy(t).abs()
    x = abs_t.square().add_(dof)
    x = x.reciprocal_().mul_(dof)  # cos^2 of the angle atan(|t| / sqrt(dof))
    coefficients = _tail_series_coefficients(dof)
    series = torch.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        series.mul_(x).add_(c)
    series.mul_(torch.sub(1.0, x).sqrt_())  # times sin of the angle
    if dof % 2 == 0:
        inside = series
    else:
        inside = abs_t.div_(math.sqrt(dof)).atan_()
        if dof > 1:
            inside.add_(series.mul_(x.sqrt_()))
        inside.mul_(2.0 / math.pi)
    p = inside.neg_().add_(1.0).numpy()
    small = p < SERIES_P_FLOOR  # False for NaN
    p[small] = 2.0 * special.stdtr(dof, -np.abs(t[small]))
    return p


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p values along the last axis.

    NaN p values (voxels without variance) stay NaN and do not count as tests. Rows of a 2-D
    input are adjusted in parallel threads (numpy's sort releases the GIL).
    """
    p = np.asarray(p, dtype=np.float64)
    n_threads = min(torch.get_num_threads(), p.shape[0]) if p.ndim == 2 else 1
    if n_threads <= 1:
        return _benjamini_hochberg_rows(p)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        blocks = pool.map(_benjamini_hochberg_rows, np.array_split(p, n_threads))
        return np.concatenate(list(blocks))


def _benjamini_hochberg_rows(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p, axis=-1)  # NaN sorts last
    ranked = np.take_along_axis(p, order, axis=-1)
    n_tests = np.count_nonzero(~np.isnan(p), axis=-1, keepdims=True)
    ranked *= n_tests / np.arange(1, p.shape[-1] + 1)
    reversed_view = ranked[..., ::-1]
    np.fmin.accumulate(reversed_view, axis=-1, out=reversed_view)  # fmin: NaN never wins
    np.minimum(ranked, 1.0, out=ranked)
    adjusted = np.empty_like(ranked)
    np.put_along_axis(adjusted, order, ranked, axis=-1)
    return adjusted
