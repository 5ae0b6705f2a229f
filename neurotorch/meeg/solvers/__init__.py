"""The posterior of each CaliBrain solver: a registry of solver strategies, and the posterior
settings of the calibration datasets and the run grid.

`SOLVERS` maps CaliBrain's solver names to strategy classes (`neurotorch.meeg.solvers.base.Solver`):
each is a frozen dataclass whose fields are the solver's options (checked when it is made), with
``prepare(leadfield, src_coords)`` (what depends on the leadfield only, typed, computed once) and
``fit(y, leadfield, prepared, noise_var=, gamma=)``. Adding a solver is one module in this package
and one line in `SOLVERS`.

* ``"BMN"``: Bayesian minimum norm (`neurotorch.meeg.posterior`), one prior variance ``gamma``
  (learned by evidence maximisation, given, or the oracle one), optionally sLORETA-normalised.
* ``"eloreta"``: eLORETA's weighted minimum norm (`neurotorch.meeg.eloreta`).
* ``"gamma_map"``: sparse Bayesian learning (`neurotorch.meeg.sparse_bayes`); with a learned
  per-sensor noise it is CaliBrain's ``gamma_lambda_map``.
* ``"gamma_map_sflex"``: gamma-MAP on the coefficients of a spatial basis (sFlex).

`PosteriorSpec` is what the datasets, DataModules and `neurotorch.meeg.grid.run_grid` take: a
solver with its options, the prior variance, the noise type and a noise misspecification factor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from neurotorch._docs import fill_doc
from neurotorch._options import check_number, check_option
from neurotorch.errors import ParameterError
from neurotorch.meeg.posterior import NoiseType
from neurotorch.meeg.solvers.base import Solver, SolverFit
from neurotorch.meeg.solvers.bmn import BMN
from neurotorch.meeg.solvers.eloreta import Eloreta
from neurotorch.meeg.solvers.gamma_map import GammaMap
from neurotorch.meeg.solvers.sflex import SFlex

#: CaliBrain's solver names and their strategies.
SOLVERS: dict[str, type[Solver]] = {
    "BMN": BMN,
    "eloreta": Eloreta,
    "gamma_map": GammaMap,
    "gamma_map_sflex": SFlex,
}
#: The keys of `SOLVERS`, as a type (so configs list them and refuse typos when parsed).
SolverName = Literal["BMN", "eloreta", "gamma_map", "gamma_map_sflex"]

__all__ = [
    "SOLVERS",
    "PosteriorSpec",
    "Solver",
    "SolverFit",
    "fit_posterior",
    "full_posterior_cov",
    "make_solver",
]


def make_solver(name: str, options: Mapping[str, Any] | None = None) -> Solver:
    """The solver ``name`` (a key of `SOLVERS`) with ``options`` (its defaults otherwise)."""
    cls = SOLVERS[check_option("solver", name, SOLVERS)]
    options = dict(options or {})
    accepted = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ParameterError(
            f"solver={name!r} has no option(s) {unknown}; it takes {accepted or 'none'}."
        )
    return cls(**options)


@dataclass(frozen=True)
class PosteriorSpec:
    """Which posterior calibration data carry (checked when it is made).

    Parameters
    ----------
    solver
        CaliBrain's solver name (a key of `SOLVERS`): ``"BMN"`` (default), ``"eloreta"``,
        ``"gamma_map"`` or ``"gamma_map_sflex"`` (sFlex needs a leadfield with ``src_coords``).
    options
        The solver's options (CaliBrain's ``solver_params``), e.g. ``{"normalization": True}``
        for BMN's sLORETA normalisation or ``{"sigma": 0.02}`` for sFlex; after construction,
        all of them with their defaults.
    gamma
        BMN's source prior variance: ``"learn"`` (CaliBrain's evidence maximisation, the
        default), ``"oracle"`` (each trial's mean source power) or a value (nAm²). The other
        solvers learn their own prior (``"learn"`` only).
    noise_type
        How the noise variance is set: ``"oracle"`` (the true one, default), ``"baseline"`` (the
        pre-stimulus estimate) or ``"adaptive_joint_learning"`` (learned with the prior: one
        variance for BMN -- CaliBrain's ``BMN_joint`` --, one per sensor for gamma-MAP and sFlex
        -- ``gamma_lambda_map``, ``gamma_lambda_map_sflex``; needs ``gamma="learn"``).
    noise_var_scale
        Assumed / true (or baseline) noise variance; values other than 1 misspecify the
        posterior (not with a learned noise).
    """

    solver: SolverName = "BMN"
    options: dict[str, Any] | None = None
    gamma: float | Literal["learn", "oracle"] = "learn"
    noise_type: NoiseType = "oracle"
    noise_var_scale: float = 1.0

    def __post_init__(self) -> None:
        strategy = make_solver(self.solver, self.options)
        object.__setattr__(self, "options", strategy.options())
        if isinstance(self.gamma, str):
            check_option("gamma", self.gamma, ("learn", "oracle"), hint="Or give a number (nAm²).")
        else:
            check_number("gamma", self.gamma, minimum=0.0, open_minimum=True)
        strategy.check_noise_type(self.noise_type, self.gamma)
        check_number("noise_var_scale", self.noise_var_scale, minimum=0.0, open_minimum=True)
        if self.noise_type == "adaptive_joint_learning" and self.noise_var_scale != 1.0:
            raise ParameterError(
                f"noise_var_scale={self.noise_var_scale} scales a given noise variance; with "
                "noise_type='adaptive_joint_learning' the noise is learned: leave it at 1."
            )

    def make_solver(self) -> Solver:
        """The configured solver strategy."""
        return make_solver(self.solver, self.options)

    @property
    def calibrain_name(self) -> str:
        """CaliBrain's name of this solver and noise type (``BMN_joint``, ``gamma_lambda_map``...)."""
        return self.make_solver().calibrain_name(self.noise_type)


@fill_doc
def fit_posterior(
    solver: str | Solver,
    y: torch.Tensor,
    leadfield: torch.Tensor,
    *,
    noise_var: float | torch.Tensor | None,
    gamma: str | float | torch.Tensor = "learn",
    src_coords: np.ndarray | None = None,
) -> SolverFit:
    """One-off posterior of ``solver`` (a name with default options, or a solver) for ``y``.

    Prepares the leadfield's part on every call: keep a solver and its ``prepare`` result to
    fit many batches on one leadfield.

    Parameters
    ----------
    solver
        A key of `SOLVERS`, or a solver made by `make_solver`.
    %(meeg_y)s
    %(meeg_leadfield_tensor)s
    %(meeg_noise_var_or_none)s
    gamma
        BMN's source prior variance: ``"learn"`` or a value (scalar or ``(B,)``, nAm²).
    src_coords
        ``(N, 3)`` source positions (m), for sFlex.
    """
    strategy = make_solver(solver) if isinstance(solver, str) else solver
    prepared = strategy.prepare(leadfield, src_coords)
    return strategy.fit(y, leadfield, prepared, noise_var=noise_var, gamma=gamma)


def full_posterior_cov(
    leadfield: np.ndarray,
    prior_blocks: np.ndarray,
    *,
    noise_var: float | np.ndarray,
    basis: np.ndarray | None = None,
) -> np.ndarray:
    """``P - P L^T (L P L^T + diag(noise_var))^-1 L P`` for the block-diagonal prior ``P`` of
    ``prior_blocks`` (N, K, K) and a noise variance (scalar or one per sensor); source-major
    ``(NK, NK)``. With sFlex's ``basis`` ``B`` the prior is on coefficients ``c`` and the result
    is the covariance of ``x = (B kron I_K) c``."""
    n, k = prior_blocks.shape[:2]
    expand = None if basis is None else np.kron(np.asarray(basis, np.float64), np.eye(k))
    lf = leadfield.reshape(leadfield.shape[0], -1)
    if expand is not None:
        lf = lf @ expand
    prior = np.zeros((n * k, n * k))
    for i, block in enumerate(prior_blocks):
        prior[i * k : i * k + k, i * k : i * k + k] = block
    gain = lf @ prior
    cov_y = gain @ lf.T + np.diag(np.broadcast_to(noise_var, lf.shape[:1]))
    cov = prior - gain.T @ np.linalg.solve(cov_y, gain)
    return cov if expand is None else expand @ cov @ expand.T
