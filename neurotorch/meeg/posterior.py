"""Closed-form Gaussian posterior of the Bayesian minimum-norm inverse, batched in torch.

Model, per time sample: ``x ~ N(0, gamma I)`` over all source components, ``y = L x + e`` with
``e ~ N(0, sigma2 I)``. With ``C = gamma L L^T + sigma2 I`` (sensor space, cheap when
n_sensors < n_sources):

* posterior mean ``mu = gamma L^T C^-1 y``
* posterior covariance ``Sigma = gamma I - gamma^2 L^T C^-1 L``

Only the marginal variances (fixed orientation) or the per-source ``K x K`` blocks (free
orientation) are formed, never the full ``NK x NK`` matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GaussianPosterior:
    """Posterior of a batch of trials.

    Attributes
    ----------
    mean
        ``(B, N, T)`` (fixed) or ``(B, N, K, T)`` (free), nAm.
    var
        Marginal variances ``(B, N)`` or ``(B, N, K)``, nAm².
    cov_blocks
        ``(B, N, K, K)`` per-source covariance blocks (free orientation), else ``None``.
    """

    mean: torch.Tensor
    var: torch.Tensor
    cov_blocks: torch.Tensor | None = None


def bmn_posterior(
    y: torch.Tensor,
    leadfield: torch.Tensor,
    gamma: float | torch.Tensor,
    noise_var: float | torch.Tensor,
    compute_dtype: torch.dtype = torch.float64,
) -> GaussianPosterior:
    """Posterior mean and (block-)marginal variances of Bayesian minimum norm.

    Parameters
    ----------
    y
        ``(B, M, T)`` sensor data.
    leadfield
        ``(M, N)`` or ``(M, N, K)``; the flattening of ``(N, K)`` is source-major.
    gamma, noise_var
        Source prior variance and sensor noise variance: scalars or ``(B,)`` tensors.
    compute_dtype
        Precision of the solve (``gamma - gamma^2 ...`` cancels, so float64 by default); the
        results come back in ``y``'s dtype.
    """
    out_dtype = y.dtype
    batch, n_sensors, _ = y.shape
    free = leadfield.ndim == 3
    n_sources = leadfield.shape[1]
    k = leadfield.shape[2] if free else 1
    lf = leadfield.reshape(n_sensors, n_sources * k).to(compute_dtype)
    yd = y.to(compute_dtype)
    gamma = torch.as_tensor(gamma, dtype=compute_dtype, device=y.device).expand(batch)
    noise_var = torch.as_tensor(noise_var, dtype=compute_dtype, device=y.device).expand(batch)
    eye = torch.eye(n_sensors, dtype=compute_dtype, device=y.device)
    cov_y = gamma[:, None, None] * (lf @ lf.T) + noise_var[:, None, None] * eye
    chol = torch.linalg.cholesky(cov_y)
    a = torch.linalg.solve_triangular(chol, lf.expand(batch, -1, -1), upper=False)  # (B, M, NK)
    white_y = torch.linalg.solve_triangular(chol, yd, upper=False)  # (B, M, T)
    mean = gamma[:, None, None] * (a.transpose(1, 2) @ white_y)  # (B, NK, T)
    g = gamma[:, None]
    if not free:
        var = g - g**2 * (a**2).sum(dim=1)
        return GaussianPosterior(mean.to(out_dtype), var.to(out_dtype))
    a_blocks = a.reshape(batch, n_sensors, n_sources, k)
    gram = torch.einsum("bmsi,bmsj->bsij", a_blocks, a_blocks)
    eye_k = torch.eye(k, dtype=compute_dtype, device=y.device)
    blocks = g[:, :, None, None] * eye_k - (g**2)[:, :, None, None] * gram
    return GaussianPosterior(
        mean.reshape(batch, n_sources, k, -1).to(out_dtype),
        torch.diagonal(blocks, dim1=-2, dim2=-1).to(out_dtype),
        blocks.to(out_dtype),
    )
