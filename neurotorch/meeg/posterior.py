"""Closed-form Gaussian posterior of the Bayesian minimum-norm inverse, batched in torch.

Model, per time sample: ``x ~ N(0, gamma I)`` over all source components, ``y = L x + e`` with
``e ~ N(0, sigma2 I)``. With ``C = gamma L L^T + sigma2 I`` (sensor space, cheap when
n_sensors < n_sources):

* posterior mean ``mu = gamma L^T C^-1 y``
* posterior covariance ``Sigma = gamma I - gamma^2 L^T C^-1 L``

Only the marginal variances (fixed orientation) or the per-source ``K x K`` blocks (free
orientation) are formed, never the full ``NK x NK`` matrix.

`learn_hyperparameters` finds ``gamma`` (and optionally ``sigma2``) by evidence maximisation with
CaliBrain's fixed-point updates (its ``BMN`` / ``BMN_joint``), batched over trials in the
eigenbasis of ``L L^T``. `baseline_noise_var` is CaliBrain's pre-stimulus noise estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch

from neurotorch._docs import fill_doc
from neurotorch._options import check_int, check_number, check_option
from neurotorch.errors import NonFiniteError, ParameterError, ShapeMismatchError
from neurotorch.meeg.simulation import ERPConfig

_EPS = float(np.finfo(np.float64).eps)
#: How a posterior's noise variance is set (CaliBrain's ``noise_type`` names).
NoiseType = Literal["oracle", "baseline", "adaptive_joint_learning"]
NOISE_TYPES: tuple[str, ...] = get_args(NoiseType)


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


@fill_doc
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
    %(meeg_y)s
    %(meeg_leadfield_tensor)s
    gamma
        Source prior variance (nAm²): a scalar or ``(B,)``.
    %(meeg_noise_var)s
    compute_dtype
        Precision of the solve (``gamma - gamma^2 ...`` cancels, so float64 by default); the
        results come back in ``y``'s dtype.
    """
    check_inputs(y, leadfield)
    out_dtype = y.dtype
    batch, n_sensors, _ = y.shape
    free = leadfield.ndim == 3
    n_sources = leadfield.shape[1]
    k = leadfield.shape[2] if free else 1
    lf = leadfield.reshape(n_sensors, n_sources * k).to(compute_dtype)
    yd = y.to(compute_dtype)
    per_trial: dict[str, Any] = dict(batch=batch, dtype=compute_dtype, device=y.device)
    gamma = positive_per_trial(gamma, "gamma", **per_trial)
    noise_var = positive_per_trial(noise_var, "noise_var", **per_trial)
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


def check_inputs(y: torch.Tensor, leadfield: torch.Tensor) -> None:
    if y.ndim != 3 or leadfield.ndim not in (2, 3) or leadfield.shape[0] != y.shape[1]:
        raise ShapeMismatchError(
            f"y must be (B, M, T) and the leadfield (M, N) or (M, N, K) with the same M; got "
            f"y {tuple(y.shape)} and leadfield {tuple(leadfield.shape)}."
        )
    for name, value in (("y", y), ("leadfield", leadfield)):
        if not bool(torch.isfinite(value).all()):
            raise NonFiniteError(f"{name} holds NaN or Inf; the posterior needs finite inputs.")


def positive_per_trial(
    value: float | torch.Tensor,
    name: str,
    *,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """``value`` as a ``(batch,)`` tensor, checked to be finite and > 0."""
    tensor = torch.as_tensor(value, dtype=dtype, device=device)
    if tensor.ndim > 1 or (tensor.ndim == 1 and tensor.shape[0] not in (1, batch)):
        raise ShapeMismatchError(f"{name} must be a scalar or have one value per trial ({batch}).")
    if not bool((torch.isfinite(tensor) & (tensor > 0)).all()):
        raise ParameterError(f"{name} must be finite and > 0, got {tensor.tolist()}.")
    return tensor.expand(batch)


@fill_doc
def learn_hyperparameters(
    y: torch.Tensor,
    leadfield: torch.Tensor,
    noise_var: float | torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    init_noise_var: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source variance ``gamma`` (and noise variance) maximising each trial's evidence.

    CaliBrain's updates, run per trial until the relative change of ``gamma`` is below ``tol``.
    CaliBrain iterates in units where ``||Y||_F = ||L||_2 = 1``; in data units, with
    ``C = gamma L L^T + sigma2 I`` and ``g = ||Y||_F^2 / ||L||_2^2``, that is
    ``gamma <- g tr(Y^T C^-1 L L^T C^-1 Y) / T / tr(C^-1 L L^T)`` (from ``gamma = g``) and, when
    the noise is learned, ``sigma2 <- sqrt(||Y - L X||_F^2 / T / tr(C^-1))`` (its
    convex-bounding rule, from ``sigma2 = init_noise_var``). The known-noise case whitens first,
    which leaves ``g`` unchanged.

    Parameters
    ----------
    %(meeg_y)s
    %(meeg_leadfield_tensor)s
    %(meeg_noise_var_or_none)s
    %(meeg_max_iter_tol)s
    init_noise_var
        Starting noise variance when it is learned (data units², CaliBrain's ``init_lambda``).

    Returns
    -------
    gamma, noise_var
        ``(B,)`` float64 tensors (``noise_var`` is the given one when it is not learned).
    """
    check_inputs(y, leadfield)
    check_iterations(max_iter, tol)
    batch, n_sensors, n_times = y.shape
    lf = leadfield.reshape(n_sensors, -1).to(torch.float64)
    eigvals, eigvecs = torch.linalg.eigh(lf @ lf.T)
    eigvals = eigvals.clamp_min(0.0)
    power = (eigvecs.T @ y.to(torch.float64)).pow(2).sum(-1)  # (B, M): ||U_i^T Y||^2
    y_norm2 = power.sum(-1)
    if not bool((y_norm2 > 0).all()):
        raise ParameterError("Some trials are all zeros; their evidence has no maximum.")
    learn_noise = noise_var is None
    sigma2 = positive_per_trial(
        init_noise_var if noise_var is None else noise_var,
        "noise_var",
        batch=batch,
        dtype=torch.float64,
        device=y.device,
    ).clone()
    gamma_scale = y_norm2 / eigvals.max()  # CaliBrain's internal unit of gamma
    gamma = gamma_scale.clone()
    active = torch.ones(batch, dtype=torch.bool, device=y.device)
    for _ in range(max_iter):
        d = gamma[:, None] * eigvals + sigma2[:, None]
        numerator = (eigvals * power / d**2).sum(-1) / n_times
        ratio = numerator / (eigvals / d).sum(-1)
        new_gamma = gamma_scale * torch.maximum(ratio, torch.full_like(ratio, _EPS))
        if learn_noise:
            d = new_gamma[:, None] * eigvals + sigma2[:, None]
            residual2 = sigma2**2 * (power / d**2).sum(-1)
            new_sigma2 = torch.sqrt(residual2 / n_times / (1.0 / d).sum(-1))
            sigma2 = torch.where(active, torch.maximum(new_sigma2, _EPS * y_norm2), sigma2)
        change = (new_gamma - gamma).abs() / (gamma.abs() + _EPS * gamma_scale)
        gamma = torch.where(active, new_gamma, gamma)
        active = active & (change >= tol)
        if not bool(active.any()):
            break
    return gamma, sigma2


def check_iterations(max_iter: int, tol: float) -> None:
    """Refuse an iteration budget below 1 step or a stopping tolerance that is not > 0."""
    check_int("max_iter", max_iter, minimum=1)
    check_number("tol", tol, minimum=0.0, open_minimum=True)


def known_noise_var(
    noise_type: str, y: torch.Tensor, *, true_noise_var: torch.Tensor, config: ERPConfig
) -> torch.Tensor | None:
    """The noise variance a posterior assumes under CaliBrain's ``noise_type``: the true one
    (``"oracle"``), the pre-stimulus estimate (``"baseline"``, `baseline_noise_var`), or ``None``
    when it is learned with gamma (``"adaptive_joint_learning"``)."""
    if check_option("noise_type", noise_type, NOISE_TYPES) == "oracle":
        return true_noise_var.to(torch.float64)
    if noise_type == "baseline":
        return baseline_noise_var(
            y, tmin=config.tmin, stim_onset=config.stim_onset, sfreq=config.sfreq
        )
    return None


def baseline_noise_var(
    y: torch.Tensor, tmin: float = -0.5, stim_onset: float = 0.0, sfreq: float = 250.0
) -> torch.Tensor:
    """CaliBrain's pre-stimulus noise estimate: mean over sensors of the baseline variance.

    The baseline is the first ``int((stim_onset - tmin) * sfreq)`` samples (all samples when
    that is 0); the variance is the population one (``ddof=0``). As in CaliBrain, a trial whose
    baseline is flat gets 1.0. ``y`` is ``(B, M, T)``; returns ``(B,)`` float64.
    """
    if y.ndim != 3:
        raise ShapeMismatchError(f"y must be (B, M, T), got {tuple(y.shape)}.")
    if not bool(torch.isfinite(y).all()):
        raise NonFiniteError("y holds NaN or Inf; the baseline noise estimate needs finite data.")
    n_pre = int((stim_onset - tmin) * sfreq)
    pre = y[..., :n_pre] if n_pre > 0 else y
    estimate = pre.to(torch.float64).var(dim=-1, correction=0).mean(dim=-1)
    return torch.where(estimate > 0, estimate, torch.ones_like(estimate))


def sloreta_weights(leadfield: torch.Tensor, beta: float = 1e-6) -> torch.Tensor:
    """CaliBrain's sLORETA normalisation ``W`` (its ``compute_W``), in float64.

    With ``S = L^T (L L^T + beta I)^-1 L``: fixed orientation ``w_n = S_nn^-1/2`` (``(N,)``);
    free orientation ``W_n = S_n^-1/2`` for each source's ``K x K`` block (``(N, K, K)``).
    Eigenvalues below 1e-12 are raised to it, as in CaliBrain.
    """
    n_sensors = leadfield.shape[0]
    free = leadfield.ndim == 3
    lf = leadfield.reshape(n_sensors, -1).to(torch.float64)
    gram = lf @ lf.T + beta * torch.eye(n_sensors, dtype=torch.float64, device=lf.device)
    solved = torch.linalg.solve(gram, lf)  # (M, NK)
    if not free:
        return (lf * solved).sum(0).clamp_min(1e-12).rsqrt()
    k = leadfield.shape[2]
    blocks = torch.einsum(
        "msi,msj->sij", lf.reshape(n_sensors, -1, k), solved.reshape(n_sensors, -1, k)
    )
    eigvals, eigvecs = torch.linalg.eigh(0.5 * (blocks + blocks.transpose(1, 2)))
    return eigvecs @ torch.diag_embed(eigvals.clamp_min(1e-12).rsqrt()) @ eigvecs.transpose(1, 2)


def weight_leadfield(leadfield: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``L W``: the leadfield seen by a posterior on normalised sources ``x = W x'``."""
    lf = leadfield.to(torch.float64)
    if weights.ndim == 1:
        return lf * weights
    return torch.einsum("msk,skj->msj", lf, weights)


def unweight_posterior(posterior: GaussianPosterior, weights: torch.Tensor) -> GaussianPosterior:
    """The posterior of ``x = W x'`` from that of the normalised sources ``x'``."""
    dtype = posterior.mean.dtype
    w = weights.to(dtype)
    if w.ndim == 1:
        return GaussianPosterior(posterior.mean * w[:, None], posterior.var * w**2)
    mean = torch.einsum("skj,bsjt->bskt", w, posterior.mean)
    assert posterior.cov_blocks is not None, "a free-orientation posterior has its blocks"
    blocks = w @ posterior.cov_blocks @ w.transpose(1, 2)
    return GaussianPosterior(mean, torch.diagonal(blocks, dim1=-2, dim2=-1), blocks)
