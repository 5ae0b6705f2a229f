"""Per-fold sufficient statistics of a ridge fit, accumulated batch by batch in bounded memory.

For ``y (n, V)`` on ``x (n, D)`` and every fold ``k`` the statistics are ``n_k``, ``Σx``, ``XᵀX``
(float64, small), ``Σy``, ``Σy²`` (float64, ``(K, V)``) and the cross-products ``Xᵀy``
``(K, D, V)``, the only large part: it lives in voxel chunks, in memory or in a scratch file
(`neurotorch.models.cross_products`), in float64 or float32.

**Shifted sums.** Every sum is taken of ``x − a`` and ``y − b``, with ``a`` and ``b`` the means of
the first batch: the centred cross-products the solver needs then come without the cancellation of
``Σxy − n x̄ ȳ`` when the data sit far from zero (betas with a large baseline), which is what makes
float32 cross-products usable. A ridge fit with an intercept does not depend on the shift; the
intercept is mapped back at the end (`neurotorch.models.ridge`). `rebase` re-expresses the sums
around another shift exactly, which is how ranks with different first batches are summed.

**Buffered trials.** Batches are kept as they come until ``buffer_trials`` trials have arrived,
then added to every chunk at once (``Xᵀy`` of hundreds of trials is one efficient matrix product
per fold and chunk, where a batch of 64 trials would rewrite the whole ``(K, D, V)`` array for
little arithmetic). While there are no more trials than features and nothing has been added yet,
the kept trials are the rows of the dual solve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import torch

from neurotorch._options import check_int, check_option
from neurotorch.models.cross_products import CrossProducts

Precision = Literal["float64", "float32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DTYPES = {"float64": torch.float64, "float32": torch.float32}
F64 = torch.float64
MIN_BUFFER_TRIALS = 512


def default_buffer_trials(n_features: int) -> int:
    """Trials kept before they are added to the cross-products: enough for the dual solve (more
    than the features) and for efficient matrix products."""
    return max(n_features + 1, MIN_BUFFER_TRIALS)


class RidgeStatistics:
    """Per-fold running sums for a ridge fit of ``y (n, V)`` on ``x (n, D)``.

    Parameters
    ----------
    n_features, n_targets
        ``D`` and ``V``.
    n_folds
        Number of cross-validation folds (trials carry their fold to `update`).
    keep_rows
        Keep the trials themselves while there are no more of them than features, so that
        `neurotorch.models.ridge.fit_ridge` can solve in the dual.
    device
        Where the sums live (and where the cross-products' chunks are computed).
    precision
        ``"float64"`` or ``"float32"``: the cross-products ``Xᵀy`` and the fitted weights (the
        other sums are always float64).
    voxel_chunk
        Targets per chunk of the cross-products and of the solve (default: all in one chunk).
    on_disk
        Keep the cross-products in an unnamed scratch file under ``NEUROTORCH_CACHE/scratch``,
        one chunk in memory at a time.
    buffer_trials
        Trials kept before they are added to the cross-products (`default_buffer_trials`).
    """

    def __init__(
        self,
        n_features: int,
        n_targets: int,
        n_folds: int = 5,
        *,
        keep_rows: bool = True,
        device: torch.device | str = "cpu",
        precision: Precision = "float64",
        voxel_chunk: int | None = None,
        on_disk: bool = False,
        buffer_trials: int | None = None,
    ):
        check_option("precision", precision, PRECISIONS)
        chunk = (
            n_targets if voxel_chunk is None else check_int("voxel_chunk", voxel_chunk, minimum=1)
        )
        kw: dict[str, Any] = {"dtype": F64, "device": device}
        self.precision, self.dtype = precision, DTYPES[precision]
        self.count = torch.zeros(n_folds, **kw)
        self.sum_x = torch.zeros(n_folds, n_features, **kw)
        self.xtx = torch.zeros(n_folds, n_features, n_features, **kw)
        self.sum_y = torch.zeros(n_folds, n_targets, **kw)
        self.sum_yy = torch.zeros(n_folds, n_targets, **kw)
        self.xty = CrossProducts(
            n_folds,
            n_features,
            n_targets,
            chunk=chunk,
            dtype=self.dtype,
            on_disk=on_disk,
            device=device,
        )
        self.shift_x: torch.Tensor | None = None
        self.shift_y: torch.Tensor | None = None
        self.keep_rows = keep_rows
        self.buffer_trials = (
            default_buffer_trials(n_features)
            if buffer_trials is None
            else check_int("buffer_trials", buffer_trials, minimum=1)
        )
        self._buffer: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._added = False  # whether trials were added to the cross-products already

    @property
    def n_folds(self) -> int:
        return self.count.shape[0]

    @property
    def n_features(self) -> int:
        return self.sum_x.shape[1]

    @property
    def n_targets(self) -> int:
        return self.sum_y.shape[1]

    @property
    def chunks(self) -> list[slice]:
        """The voxel chunks of the cross-products (and of the solve)."""
        return self.xty.chunks

    def update(self, x: torch.Tensor, y: torch.Tensor, folds: torch.Tensor) -> None:
        """Add trials ``x (n, D)``, ``y (n, V)`` whose folds are ``folds (n,)``."""
        x = x.to(F64)
        folds = folds.to(x.device)
        if self.shift_x is None:
            rounded = self.dtype  # a shift the stored precision represents exactly
            self.shift_x = x.mean(0).to(rounded).to(F64)
            self.shift_y = y.mean(0, dtype=F64).to(rounded).to(F64)
        shifted = x - self.shift_x
        for k in torch.unique(folds).tolist():
            xk = shifted[folds == k]
            self.count[k] += xk.shape[0]
            self.sum_x[k] += xk.sum(0)
            self.xtx[k] += xk.T @ xk
        self._buffer.append((x, y, folds))
        if sum(len(part[0]) for part in self._buffer) >= self.buffer_trials:
            self.flush()

    def flush(self) -> None:
        """Add the kept trials to ``Σy``, ``Σy²`` and the cross-products, chunk by chunk."""
        if not self._buffer:
            return
        x = torch.cat([part[0] for part in self._buffer])
        folds = torch.cat([part[2] for part in self._buffer])
        shift_x, shift_y = self.shifts()
        shifted = (x - shift_x).to(self.dtype)
        by_fold = [
            (k, rows, shifted[rows].T.contiguous())
            for k in range(self.n_folds)
            if len(rows := torch.nonzero(folds == k).squeeze(1))
        ]
        for j, columns in enumerate(self.chunks):
            y = self._buffered_targets(columns, self.dtype) - shift_y[columns].to(self.dtype)
            block = y.new_zeros(self.xty.shape[:2] + (y.shape[1],))
            for k, rows, xk_t in by_fold:
                yk = y[rows]
                wide = yk.to(F64)
                self.sum_y[k, columns] += wide.sum(0)
                self.sum_yy[k, columns] += (wide**2).sum(0)
                block[k] = xk_t @ yk
            self.xty.add(j, block)
        self._buffer = []
        self._added = True

    def shifts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The shift ``(shift_x, shift_y)`` the sums are taken around (set by the first `update`)."""
        assert self.shift_x is not None and self.shift_y is not None, "no trials were added"
        return self.shift_x, self.shift_y

    def _buffered_targets(self, columns: slice, dtype: torch.dtype) -> torch.Tensor:
        return torch.cat([part[1][:, columns].to(dtype) for part in self._buffer])

    def has_rows(self) -> bool:
        """Whether all trials are kept (``keep_rows``, no more trials than features)."""
        return (
            self.keep_rows
            and not self._added
            and bool(self._buffer)
            and float(self.count.sum()) <= self.n_features
        )

    def row_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept trials' features ``(n, D)`` float64 and folds ``(n,)`` (see `has_rows`)."""
        return (
            torch.cat([part[0] for part in self._buffer]),
            torch.cat([part[2] for part in self._buffer]),
        )

    def row_targets(self, columns: slice) -> torch.Tensor:
        """The kept trials' targets ``columns``, ``(n, C)`` float64 (see `has_rows`)."""
        return self._buffered_targets(columns, F64)

    def rebase(self, shift_x: torch.Tensor, shift_y: torch.Tensor) -> None:
        """Express every sum around the shift ``(shift_x, shift_y)`` instead of the current one.

        With ``δa = a − a'`` and ``δb = b − b'``: ``Σ(x−a')(y−b')ᵀ = Σ(x−a)(y−b)ᵀ + Σ(x−a) δbᵀ
        + δa Σ(y−b)ᵀ + n δa δbᵀ``, and likewise for the other sums.
        """
        self.flush()
        old_x, old_y = self.shifts()
        da, db = old_x - shift_x, old_y - shift_y
        n, sum_x = self.count, self.sum_x
        for j, columns in enumerate(self.chunks):
            sy, dbc = self.sum_y[:, columns], db[columns]
            delta = (
                sum_x[:, :, None] * dbc[None, None, :]
                + da[None, :, None] * sy[:, None, :]
                + n[:, None, None] * (da[:, None] * dbc[None, :])[None]
            )
            self.xty.write(j, self.xty.read(j).to(F64) + delta)
        self.sum_yy += 2 * db * self.sum_y + n[:, None] * db**2
        self.sum_y += n[:, None] * db
        cross = sum_x[:, :, None] * da[None, None, :]
        self.xtx += cross + cross.transpose(1, 2) + n[:, None, None] * torch.outer(da, da)
        self.sum_x += n[:, None] * da
        self.shift_x, self.shift_y = shift_x.clone(), shift_y.clone()

    def sum_over_ranks(self, reduce_sum: Callable[[torch.Tensor], object]) -> None:
        """Add up the statistics of every rank; ``reduce_sum(t)`` sums ``t`` over the ranks in
        place (every rank calls this). The ranks' sums are first rebased on their mean shift; the
        cross-products are summed chunk by chunk. Afterwards the trials are no longer kept."""
        self.flush()
        self.keep_rows = False
        world = torch.ones((), dtype=F64, device=self.count.device)
        reduce_sum(world)
        if int(world) == 1:
            return
        shift = torch.cat(self.shifts())
        reduce_sum(shift)
        shift /= world
        self.rebase(shift[: self.n_features], shift[self.n_features :])
        for tensor in (self.count, self.sum_x, self.xtx, self.sum_y, self.sum_yy):
            reduce_sum(tensor)
        for j in range(len(self.chunks)):
            block = self.xty.read(j).clone()
            reduce_sum(block)
            self.xty.write(j, block)

    def close(self) -> None:
        """Free the cross-products (and their scratch file) and the kept trials."""
        self.xty.close()
        self._buffer = []
