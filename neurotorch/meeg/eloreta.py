"""The eLORETA posterior (CaliBrain's ``eloreta`` solver), batched in torch.

eLORETA is a Gaussian model with white sensor noise ``sigma2 I`` and a source prior covariance
``sigma2 R``. The weights ``R`` come from a fixed-point iteration (Pascual-Marqui's, as in MNE and
CaliBrain): ``R_n = (L_n^T (L R L^T + lambda2 I)^-1 L_n)^-1/2`` per source (a scalar for fixed
orientation, a K x K block for free orientation), ``R`` rescaled every step so that
``trace(L R L^T) = M``. With ``A = L R L^T + lambda2 I`` the posterior of a trial is

* mean ``mu = R L^T A^-1 y``
* covariance ``Sigma = sigma2 (R - R L^T A^-1 L R)``

The normalised weights do not depend on the scale of ``L``, so they are fitted once per leadfield
(`eloreta_weights`), and so is the rest (`eloreta_operator`): the mean operator is shared by all
trials and the covariance is ``sigma2`` times a fixed one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurotorch._docs import fill_doc
from neurotorch._options import check_number
from neurotorch.errors import ShapeMismatchError
from neurotorch.meeg.posterior import (
    GaussianPosterior,
    check_inputs,
    check_iterations,
    positive_per_trial,
)

#: CaliBrain's (and MNE's) stopping rule of the weight iteration.
WEIGHT_TOL = 1e-6
WEIGHT_MAX_ITER = 20
_EPS = float(torch.finfo(torch.float64).eps)


def eloreta_weights(
    leadfield: torch.Tensor,
    lambda2: float = 1.0,
    max_iter: int = WEIGHT_MAX_ITER,
    tol: float = WEIGHT_TOL,
) -> torch.Tensor:
    """eLORETA's source prior for unit white noise: ``(N,)`` (fixed) or ``(N, K, K)`` (free).

    Iterates until the relative change of the weights is below ``tol`` (at most ``max_iter``
    steps, as CaliBrain and MNE). ``lambda2`` is the regularisation, CaliBrain's is 1.
    """
    check_number("lambda2", lambda2, minimum=0.0, open_minimum=True)
    check_iterations(max_iter, tol)
    n_sensors = leadfield.shape[0]
    free = leadfield.ndim == 3
    lf = leadfield.to(torch.float64)
    blocks = lf.reshape(n_sensors, lf.shape[1], -1).permute(1, 0, 2)  # (N, M, K)
    k = blocks.shape[-1]
    prior = (
        torch.eye(k, dtype=torch.float64, device=lf.device).expand(blocks.shape[0], k, k).clone()
    )
    prior = _normalise(blocks, prior, n_sensors)
    eye = torch.eye(n_sensors, dtype=torch.float64, device=lf.device)
    for _ in range(int(max_iter)):
        inv = torch.linalg.inv(_sensor_cov(blocks, prior) + lambda2 * eye)
        gram = blocks.transpose(1, 2) @ inv @ blocks  # (N, K, K): L_n^T N L_n
        eigvals, eigvecs = torch.linalg.eigh(0.5 * (gram + gram.transpose(1, 2)))
        scale = eigvals.clamp_min(_EPS * float(eigvals.max())).rsqrt()
        inv_root = eigvecs @ torch.diag_embed(scale) @ eigvecs.transpose(1, 2)
        last, prior = prior, _normalise(blocks, inv_root, n_sensors)
        if torch.linalg.norm(prior - last) < tol * torch.linalg.norm(last):
            break
    return prior if free else prior[:, 0, 0]


def _sensor_cov(blocks: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """``L R L^T`` for per-source blocks ``(N, M, K)`` and priors ``(N, K, K)``."""
    return torch.einsum("nmi,nij,nsj->ms", blocks, prior, blocks)


def _normalise(blocks: torch.Tensor, prior: torch.Tensor, n_sensors: int) -> torch.Tensor:
    return prior * (n_sensors / torch.trace(_sensor_cov(blocks, prior)))


@dataclass
class EloretaOperator:
    """What eLORETA's posterior needs of one leadfield, for unit noise: the ``weights``
    (`eloreta_weights`), the mean operator ``kernel = R L^T A^-1`` (``(NK, M)``) and the
    posterior blocks ``R_n - R_n L_n^T A^-1 L_n R_n`` (``(N, K, K)``)."""

    weights: torch.Tensor
    kernel: torch.Tensor
    unit_blocks: torch.Tensor


def eloreta_operator(
    leadfield: torch.Tensor, lambda2: float = 1.0, weights: torch.Tensor | None = None
) -> EloretaOperator:
    """eLORETA's operator for ``leadfield`` (M, N) or (M, N, K): computed once, shared by every
    trial (``weights``: `eloreta_weights` of this leadfield, when already computed)."""
    weights = eloreta_weights(leadfield, lambda2) if weights is None else weights
    free = leadfield.ndim == 3
    n_sensors, n_sources = leadfield.shape[:2]
    k = leadfield.shape[2] if free else 1
    expected = (n_sources, k, k) if free else (n_sources,)
    if tuple(weights.shape) != expected:
        raise ShapeMismatchError(
            f"eLORETA weights {tuple(weights.shape)} do not fit this leadfield (need "
            f"{expected}); compute them with eloreta_weights(leadfield)."
        )
    lf = leadfield.to(torch.float64)
    blocks = lf.reshape(n_sensors, n_sources, k).permute(1, 0, 2)  # (N, M, K)
    prior = weights.to(torch.float64)
    prior = prior if free else prior[:, None, None]
    eye = torch.eye(n_sensors, dtype=torch.float64, device=lf.device)
    gain = prior @ blocks.transpose(1, 2)  # (N, K, M): R_n L_n^T
    solved = torch.linalg.solve(
        _sensor_cov(blocks, prior) + lambda2 * eye, gain.reshape(-1, n_sensors).T
    )  # (M, NK)
    unit_blocks = prior - torch.einsum(
        "nim,mnj->nij", gain, solved.reshape(n_sensors, n_sources, k)
    )
    return EloretaOperator(weights, solved.T, unit_blocks)


@fill_doc
def eloreta_posterior(
    y: torch.Tensor,
    leadfield: torch.Tensor,
    noise_var: float | torch.Tensor,
    lambda2: float = 1.0,
    operator: EloretaOperator | None = None,
) -> GaussianPosterior:
    """eLORETA's posterior mean and (block-)marginal variances for a batch of trials.

    Parameters
    ----------
    %(meeg_y)s
    %(meeg_leadfield_tensor)s
    %(meeg_noise_var)s
    lambda2
        eLORETA's regularisation (CaliBrain uses 1).
    operator
        `eloreta_operator` of this leadfield and ``lambda2``, when already computed.
    """
    check_inputs(y, leadfield)
    batch, n_sensors, _ = y.shape
    noise_var = positive_per_trial(
        noise_var, "noise_var", batch=batch, dtype=torch.float64, device=y.device
    )
    operator = eloreta_operator(leadfield, lambda2) if operator is None else operator
    n_sources = leadfield.shape[1]
    if operator.kernel.shape[1] != n_sensors or operator.unit_blocks.shape[0] != n_sources:
        raise ShapeMismatchError(
            "The eLORETA operator belongs to another leadfield; compute it with "
            "eloreta_operator(leadfield)."
        )
    mean = operator.kernel @ y.to(torch.float64)  # (B, NK, T)
    blocks = noise_var[:, None, None, None] * operator.unit_blocks
    out = y.dtype
    if leadfield.ndim == 2:
        return GaussianPosterior(mean.to(out), blocks[:, :, 0, 0].to(out))
    return GaussianPosterior(
        mean.reshape(batch, n_sources, -1, mean.shape[-1]).to(out),
        torch.diagonal(blocks, dim1=-2, dim2=-1).to(out),
        blocks.to(out),
    )
