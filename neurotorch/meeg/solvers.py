"""The posterior of each CaliBrain solver, one entry point for the calibration datasets and the
run grid.

* ``"BMN"``: Bayesian minimum norm (`neurotorch.meeg.posterior`), one prior variance ``gamma``
  (learned by evidence maximisation, given, or the oracle one), optionally sLORETA-normalised.
* ``"eloreta"``: eLORETA's weighted minimum norm (`neurotorch.meeg.eloreta`).
* ``"gamma_map"``: sparse Bayesian learning (`neurotorch.meeg.sparse_bayes`); with a learned
  per-sensor noise it is CaliBrain's ``gamma_lambda_map``.
* ``"gamma_map_sflex"``: gamma-MAP on the coefficients of a spatial basis (sFlex).

Every solver is a Gaussian model with a diagonal noise covariance and a prior that is block
diagonal (one ``K x K`` block per source, or per coefficient of sFlex's basis), returned as
``prior_blocks`` so that a full posterior covariance can be formed from it
(`full_posterior_cov`). What depends on the leadfield only (the sLORETA weights, eLORETA's
operator, sFlex's basis) is computed once by `prepare_solver`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from neurotorch.errors import ParameterError
from neurotorch.meeg.eloreta import eloreta_operator, eloreta_posterior
from neurotorch.meeg.posterior import (
    NOISE_TYPES,
    GaussianPosterior,
    bmn_posterior,
    learn_hyperparameters,
    sloreta_weights,
    unweight_posterior,
    weight_leadfield,
)
from neurotorch.meeg.sparse_bayes import BASIS_NORMALIZATIONS, gamma_map_posterior, spatial_basis

#: CaliBrain's solver names (its ``solver`` metadata).
SOLVERS = ("BMN", "eloreta", "gamma_map", "gamma_map_sflex")
#: The options each solver takes (CaliBrain's ``solver_params`` names) and their defaults.
SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "BMN": {"normalization": False},
    "eloreta": {"lambda2": 1.0},
    "gamma_map": {"max_iter": 300, "tol": 1e-6},
    "gamma_map_sflex": {
        "max_iter": 300, "tol": 1e-6, "sigma": 0.01, "threshold_factor": 3.0, "normalize": "sym"
    },
}  # fmt: skip


@dataclass
class SolverFit:
    """A solver's posterior for a batch of trials.

    Attributes
    ----------
    posterior
        Mean, marginal variances and (free orientation) covariance blocks of the sources.
    gamma
        ``(B,)`` the source prior variance, nAm²: BMN's ``gamma``; for eLORETA and gamma-MAP the
        mean of their per-source prior variances (sFlex: of its coefficients).
    noise_var
        ``(B,)`` the noise variance the posterior assumes (learned or given; the mean over
        sensors when gamma-MAP learns one per sensor).
    prior_blocks
        ``(B, N, K, K)`` the prior covariance, one block per source (sFlex: per coefficient).
    sensor_noise_var
        ``(B, M)`` the noise variance of each sensor (all equal unless learned per sensor).
    basis
        sFlex's ``(N, N)`` spatial basis (sources ``x = B c``), else ``None``.
    """

    posterior: GaussianPosterior
    gamma: torch.Tensor
    noise_var: torch.Tensor
    prior_blocks: torch.Tensor
    sensor_noise_var: torch.Tensor
    basis: torch.Tensor | None = None


def resolve_options(solver: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``solver``'s options: its defaults updated by ``options``, each checked."""
    if solver not in SOLVERS:
        raise ParameterError(f"solver must be one of {SOLVERS}, got {solver!r}.")
    merged = dict(SOLVER_OPTIONS[solver])
    unknown = set(options or {}) - set(merged)
    if unknown:
        raise ParameterError(
            f"solver={solver!r} has no option(s) {sorted(unknown)}; it takes {sorted(merged)}."
        )
    merged.update(options or {})
    for key, value in merged.items():
        if key == "normalization":
            if not isinstance(value, bool):
                raise ParameterError(f"normalization must be True or False, got {value!r}.")
        elif key == "normalize":
            if value not in BASIS_NORMALIZATIONS:
                raise ParameterError(
                    f"normalize must be one of {BASIS_NORMALIZATIONS}, got {value!r}."
                )
        elif key == "max_iter":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"max_iter must be an integer >= 1, got {value!r}.")
        elif (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (np.isfinite(value) and value > 0)
        ):
            raise ParameterError(f"{key} must be a finite number > 0, got {value!r}.")
    return merged


def with_normalization(options: Mapping[str, Any] | None, normalization: bool) -> dict[str, Any]:
    """``options`` with the datasets' ``normalization`` keyword folded in (a BMN option)."""
    options = dict(options or {})
    if normalization:
        options["normalization"] = True
    return options


def check_solver(
    solver: str, gamma: object, noise_type: str, options: Mapping[str, Any] | None = None
) -> None:
    """Refuse combinations CaliBrain does not define, and bad options, with a named error."""
    resolve_options(solver, options)
    if noise_type not in NOISE_TYPES:
        raise ParameterError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}.")
    if noise_type == "adaptive_joint_learning" and (solver == "eloreta" or gamma != "learn"):
        raise ParameterError(
            "noise_type='adaptive_joint_learning' learns the noise together with the prior "
            "variances; pass solver='BMN', 'gamma_map' or 'gamma_map_sflex' and gamma='learn'."
        )
    if solver != "BMN" and gamma != "learn":
        raise ParameterError(
            f"solver={solver!r} sets its own source prior: gamma must stay 'learn' (a BMN option)."
        )


def prepare_solver(
    solver: str,
    leadfield: torch.Tensor,
    src_coords: np.ndarray | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``solver``'s options with what depends on the leadfield only, computed once: BMN's
    sLORETA ``weights`` (`sloreta_weights`, with ``normalization``), eLORETA's ``operator``
    (`eloreta_operator`), sFlex's ``basis`` (`spatial_basis` of ``src_coords``)."""
    prepared = resolve_options(solver, options)
    if solver == "BMN" and prepared["normalization"]:
        prepared["weights"] = sloreta_weights(leadfield)
    elif solver == "eloreta":
        prepared["operator"] = eloreta_operator(leadfield, prepared["lambda2"])
    elif solver == "gamma_map_sflex":
        if src_coords is None:
            raise ParameterError(
                "solver='gamma_map_sflex' needs the source positions (src_coords) of the "
                "leadfield, and this leadfield has none: load or simulate one with positions."
            )
        prepared["basis"] = spatial_basis(
            src_coords,
            prepared.pop("sigma"),
            prepared.pop("threshold_factor"),
            prepared.pop("normalize"),
        ).to(leadfield.device)
    return prepared


def fit_posterior(
    solver: str,
    y: torch.Tensor,
    leadfield: torch.Tensor,
    noise_var: torch.Tensor | None,
    gamma: str | float | torch.Tensor = "learn",
    prepared: Mapping[str, Any] | None = None,
    src_coords: np.ndarray | None = None,
) -> SolverFit:
    """The posterior of ``solver`` for trials ``y`` (B, M, T) on ``leadfield`` (M, N[, K]).

    ``noise_var``: the assumed noise variance (scalar or ``(B,)``), or ``None`` to learn it with
    the prior (BMN: one variance; gamma-MAP: one per sensor, CaliBrain's ``gamma_lambda_map``).
    ``gamma``: BMN's prior variance, ``"learn"`` or a value (scalar or ``(B,)``, nAm²).
    ``prepared``: `prepare_solver`'s result for this leadfield (default options otherwise, with
    ``src_coords`` for sFlex).
    """
    batch = y.shape[0]
    if prepared is None:
        prepared = prepare_solver(solver, leadfield, src_coords)
    if solver == "eloreta":
        operator = prepared["operator"]
        post = eloreta_posterior(y, leadfield, noise_var, prepared["lambda2"], operator)
        noise = _per_trial(noise_var, y)
        blocks = noise[:, None, None, None] * _as_blocks(operator.weights, leadfield)[None]
        return SolverFit(post, _mean_prior_var(blocks), noise, blocks, _per_sensor(noise, y))
    if solver in ("gamma_map", "gamma_map_sflex"):
        basis = prepared.get("basis")
        fit = gamma_map_posterior(
            y, leadfield, noise_var, prepared["max_iter"], prepared["tol"], basis
        )
        blocks = torch.diag_embed(fit.gamma.reshape(batch, leadfield.shape[1], -1))
        mean_noise = fit.noise_var.mean(1)
        return SolverFit(
            fit.posterior, _mean_prior_var(blocks), mean_noise, blocks, fit.noise_var, basis
        )
    weights = prepared.get("weights")  # sLORETA normalisation
    weighted = leadfield if weights is None else weight_leadfield(leadfield, weights)
    if isinstance(gamma, str):
        gamma, noise_var = learn_hyperparameters(y, weighted, noise_var)
    prior_var = _per_trial(gamma, y)
    post = bmn_posterior(y, weighted, prior_var, noise_var)
    k = leadfield.shape[2] if leadfield.ndim == 3 else 1
    blocks = prior_var[:, None, None, None] * torch.eye(k, dtype=torch.float64, device=y.device)
    blocks = blocks.expand(batch, leadfield.shape[1], k, k)
    if weights is not None:
        post = unweight_posterior(post, weights)
        w = _as_blocks(weights, leadfield)
        blocks = w @ blocks @ w.transpose(1, 2)
    noise = _per_trial(noise_var, y)
    return SolverFit(post, prior_var, noise, blocks, _per_sensor(noise, y))


def _per_trial(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a float64 ``(B,)`` tensor on ``like``'s device (``like`` is ``(B, ...)``)."""
    value = torch.as_tensor(value, dtype=torch.float64, device=like.device)
    return value.expand(like.shape[0]).clone()


def _per_sensor(noise_var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return noise_var[:, None].expand(-1, y.shape[1]).clone()


def _as_blocks(per_source: torch.Tensor, leadfield: torch.Tensor) -> torch.Tensor:
    """``(N,)`` scalars or ``(N, K, K)`` blocks as ``(N, K, K)``."""
    per_source = per_source.to(torch.float64)
    if per_source.ndim == 1:
        return per_source[:, None, None]
    return per_source


def _mean_prior_var(blocks: torch.Tensor) -> torch.Tensor:
    return torch.diagonal(blocks, dim1=-2, dim2=-1).flatten(1).mean(1)


def full_posterior_cov(
    leadfield: np.ndarray,
    prior_blocks: np.ndarray,
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
