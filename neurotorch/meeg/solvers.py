"""The posterior of each CaliBrain solver, one entry point for the calibration datasets and the
run grid.

* ``"BMN"``: Bayesian minimum norm (`neurotorch.meeg.posterior`), one prior variance ``gamma``
  (learned by evidence maximisation, given, or the oracle one), optionally sLORETA-normalised.
* ``"eloreta"``: eLORETA's weighted minimum norm (`neurotorch.meeg.eloreta`).
* ``"gamma_map"``: sparse Bayesian learning (`neurotorch.meeg.sparse_bayes`).

Every solver is a Gaussian model with white noise and a source prior that is block diagonal
(one ``K x K`` block per source), returned as ``prior_blocks`` so that a full posterior
covariance can be formed from it (`full_posterior_cov`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neurotorch.errors import ParameterError
from neurotorch.meeg.eloreta import eloreta_posterior, eloreta_weights
from neurotorch.meeg.posterior import (
    NOISE_TYPES,
    GaussianPosterior,
    bmn_posterior,
    learn_hyperparameters,
    sloreta_weights,
    unweight_posterior,
    weight_leadfield,
)
from neurotorch.meeg.sparse_bayes import gamma_map_posterior

#: CaliBrain's solver names (its ``solver`` metadata).
SOLVERS = ("BMN", "eloreta", "gamma_map")


@dataclass
class SolverFit:
    """A solver's posterior for a batch of trials.

    Attributes
    ----------
    posterior
        Mean, marginal variances and (free orientation) covariance blocks.
    gamma
        ``(B,)`` the source prior variance, nAm²: BMN's ``gamma``; for eLORETA and gamma-MAP the
        mean of their per-source prior variances.
    noise_var
        ``(B,)`` the noise variance the posterior assumes (learned or given; the mean over
        sensors when gamma-MAP learns one per sensor).
    prior_blocks
        ``(B, N, K, K)`` the source prior covariance, one block per source.
    sensor_noise_var
        ``(B, M)`` the noise variance of each sensor (all equal unless learned per sensor).
    """

    posterior: GaussianPosterior
    gamma: torch.Tensor
    noise_var: torch.Tensor
    prior_blocks: torch.Tensor
    sensor_noise_var: torch.Tensor


def check_solver(solver: str, gamma: object, noise_type: str, normalization: bool) -> None:
    """Refuse combinations CaliBrain does not define, with a named error."""
    if solver not in SOLVERS:
        raise ParameterError(f"solver must be one of {SOLVERS}, got {solver!r}.")
    if noise_type not in NOISE_TYPES:
        raise ParameterError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}.")
    if noise_type == "adaptive_joint_learning" and (solver == "eloreta" or gamma != "learn"):
        raise ParameterError(
            "noise_type='adaptive_joint_learning' learns the noise together with the prior "
            "variances; pass solver='BMN' or 'gamma_map' and gamma='learn'."
        )
    if solver != "BMN" and (gamma != "learn" or normalization):
        raise ParameterError(
            f"solver={solver!r} sets its own source prior: gamma must stay 'learn' and "
            "normalization False (both are BMN options)."
        )


def fit_posterior(
    solver: str,
    y: torch.Tensor,
    leadfield: torch.Tensor,
    noise_var: torch.Tensor | None,
    gamma: str | float | torch.Tensor = "learn",
    normalization: bool = False,
    eloreta_prior: torch.Tensor | None = None,
) -> SolverFit:
    """The posterior of ``solver`` for trials ``y`` (B, M, T) on ``leadfield`` (M, N[, K]).

    ``noise_var``: the assumed noise variance (scalar or ``(B,)``), or ``None`` to learn it with
    the prior (BMN: one variance; gamma-MAP: one per sensor, CaliBrain's ``gamma_lambda_map``). ``gamma``: BMN's prior variance, ``"learn"`` or a value (scalar or ``(B,)``,
    nAm²). ``eloreta_prior``: `eloreta_weights` of ``leadfield``, when already computed.
    """
    batch = y.shape[0]
    if solver == "eloreta":
        prior = eloreta_weights(leadfield) if eloreta_prior is None else eloreta_prior
        post = eloreta_posterior(y, leadfield, noise_var, weights=prior)
        noise = _per_trial(noise_var, y)
        blocks = noise[:, None, None, None] * _as_blocks(prior, leadfield)[None]
        return SolverFit(post, _mean_prior_var(blocks), noise, blocks, _per_sensor(noise, y))
    if solver == "gamma_map":
        fit = gamma_map_posterior(y, leadfield, noise_var)
        blocks = torch.diag_embed(fit.gamma.reshape(batch, leadfield.shape[1], -1))
        mean_noise = fit.noise_var.mean(1)
        return SolverFit(fit.posterior, _mean_prior_var(blocks), mean_noise, blocks, fit.noise_var)
    weights = sloreta_weights(leadfield) if normalization else None
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
    leadfield: np.ndarray, prior_blocks: np.ndarray, noise_var: float | np.ndarray
) -> np.ndarray:
    """``P - P L^T (L P L^T + diag(noise_var))^-1 L P`` for the block-diagonal prior ``P`` of
    ``prior_blocks`` (N, K, K) and a noise variance (scalar or one per sensor); source-major
    ``(NK, NK)``."""
    lf = leadfield.reshape(leadfield.shape[0], -1)
    n, k = prior_blocks.shape[:2]
    prior = np.zeros((n * k, n * k))
    for i, block in enumerate(prior_blocks):
        prior[i * k : i * k + k, i * k : i * k + k] = block
    gain = lf @ prior
    cov_y = gain @ lf.T + np.diag(np.broadcast_to(noise_var, lf.shape[:1]))
    return prior - gain.T @ np.linalg.solve(cov_y, gain)
