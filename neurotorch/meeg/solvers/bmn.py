"""CaliBrain's ``BMN`` (and ``BMN_joint``): Bayesian minimum norm with one source prior variance,
learned by evidence maximisation or given, optionally sLORETA-normalised
(`neurotorch.meeg.posterior`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neurotorch._options import check_bool
from neurotorch.meeg.posterior import (
    bmn_posterior,
    learn_hyperparameters,
    sloreta_weights,
    unweight_posterior,
    weight_leadfield,
)
from neurotorch.meeg.solvers.base import Solver, SolverFit, as_blocks, per_sensor, per_trial


@dataclass(frozen=True)
class BMNOperator:
    """BMN's per-leadfield part: CaliBrain's sLORETA normalisation ``weights`` (`sloreta_weights`)
    when ``normalization`` is on, else ``None``."""

    weights: torch.Tensor | None = None


@dataclass(frozen=True)
class BMN(Solver[BMNOperator]):
    """Bayesian minimum norm.

    Parameters
    ----------
    normalization
        CaliBrain's sLORETA normalisation: the posterior of ``x = W x'`` with ``x'`` the
        normalised sources (``W`` from `neurotorch.meeg.posterior.sloreta_weights`).
    """

    name = "BMN"
    joint_name = "BMN_joint"
    takes_gamma = True
    normalization: bool = False

    def __post_init__(self) -> None:
        check_bool("normalization", self.normalization)

    def prepare(self, leadfield: torch.Tensor, src_coords: np.ndarray | None = None) -> BMNOperator:
        return BMNOperator(sloreta_weights(leadfield) if self.normalization else None)

    def fit(self, y, leadfield, prepared, *, noise_var, gamma="learn") -> SolverFit:
        weights = prepared.weights
        weighted = leadfield if weights is None else weight_leadfield(leadfield, weights)
        if isinstance(gamma, str):
            gamma, noise_var = learn_hyperparameters(y, weighted, noise_var)
        prior_var = per_trial(gamma, y)
        post = bmn_posterior(y, weighted, gamma=prior_var, noise_var=noise_var)
        batch, n_sources = y.shape[0], leadfield.shape[1]
        k = leadfield.shape[2] if leadfield.ndim == 3 else 1
        eye = torch.eye(k, dtype=torch.float64, device=y.device)
        blocks = (prior_var[:, None, None, None] * eye).expand(batch, n_sources, k, k)
        if weights is not None:
            post = unweight_posterior(post, weights)
            w = as_blocks(weights)
            blocks = w @ blocks @ w.transpose(1, 2)
        noise = per_trial(noise_var, y)
        return SolverFit(
            posterior=post,
            gamma=prior_var,
            noise_var=noise,
            prior_blocks=blocks,
            sensor_noise_var=per_sensor(noise, y),
        )
