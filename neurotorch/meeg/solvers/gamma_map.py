"""CaliBrain's ``gamma_map`` (and ``gamma_lambda_map``): sparse Bayesian learning of one prior
variance per source, and per sensor noise when it is learned (`neurotorch.meeg.sparse_bayes`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neurotorch._options import check_int, check_number
from neurotorch.meeg.solvers.base import Solver, SolverFit, mean_prior_var
from neurotorch.meeg.sparse_bayes import gamma_map_posterior


@dataclass(frozen=True)
class SpatialPrior:
    """The sources' parametrisation ``x = B c``: sFlex's spatial ``basis`` ``B`` (``(N, N)``),
    or ``None`` for the sources themselves (gamma-MAP)."""

    basis: torch.Tensor | None = None


@dataclass(frozen=True)
class GammaMap(Solver[SpatialPrior]):
    """gamma-MAP.

    Parameters
    ----------
    max_iter, tol
        At most ``max_iter`` fixed-point steps; stop once the relative change of the gammas is
        below ``tol`` (CaliBrain's defaults).
    """

    name = "gamma_map"
    joint_name = "gamma_lambda_map"
    max_iter: int = 300
    tol: float = 1e-6

    def __post_init__(self) -> None:
        check_int("max_iter", self.max_iter, minimum=1)
        check_number("tol", self.tol, minimum=0.0, open_minimum=True)

    def prepare(
        self, leadfield: torch.Tensor, src_coords: np.ndarray | None = None
    ) -> SpatialPrior:
        return SpatialPrior()

    def fit(self, y, leadfield, prepared, *, noise_var, gamma="learn") -> SolverFit:
        fit = gamma_map_posterior(
            y,
            leadfield,
            noise_var=noise_var,
            max_iter=self.max_iter,
            tol=self.tol,
            basis=prepared.basis,
        )
        blocks = torch.diag_embed(fit.gamma.reshape(y.shape[0], leadfield.shape[1], -1))
        return SolverFit(
            posterior=fit.posterior,
            gamma=mean_prior_var(blocks),
            noise_var=fit.noise_var.mean(1),
            prior_blocks=blocks,
            sensor_noise_var=fit.noise_var,
            basis=prepared.basis,
        )
