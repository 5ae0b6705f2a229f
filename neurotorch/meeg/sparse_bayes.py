"""The gamma-MAP posterior (sparse Bayesian learning; CaliBrain's ``gamma_map`` solver), batched in
torch.

Each source component ``i`` has its own prior variance ``gamma_i`` (one shared by the K components
of a free source). With ``C = L Gamma L^T + sigma2 I``, ``gamma`` is learned per trial by
CaliBrain's (and MNE's) default fixed point, ``gamma_i <- gamma_i ||(L^T C^-1 Y)_i||_T /
sqrt(l_i^T C^-1 l_i)`` (``||.||_T``: root mean square over time; for a free source, numerator and
denominator are summed over its components and the result shared among them), in CaliBrain's
units (noise whitened, ``||Y Y^T||_F = 1``, ``L`` divided by its largest absolute row sum, every
``gamma`` starting at 1). A source whose ``gamma`` reaches machine epsilon is pruned for good. The
iteration stops when ``sum |gamma_new - gamma| / sum (|gamma| + eps)`` falls below ``tol``.

The posterior is the Gaussian one of the learned ``Gamma``:
``mu = Gamma L^T C^-1 y``, ``Sigma = Gamma - Gamma L^T C^-1 L Gamma`` (zero for pruned sources).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neurotorch._docs import fill_doc
from neurotorch._options import check_number, check_option
from neurotorch.errors import NonFiniteError, ParameterError, ShapeMismatchError
from neurotorch.meeg.posterior import (
    GaussianPosterior,
    check_inputs,
    check_iterations,
    positive_per_trial,
)

_EPS = float(torch.finfo(torch.float64).eps)
#: sFlex basis normalisations (CaliBrain's ``compute_B``).
BASIS_NORMALIZATIONS = ("sym", "row", None)
#: CaliBrain's floor of a learned sensor noise variance (its units).
_LAMBDA_FLOOR = 1e-16


@dataclass
class GammaMapResult:
    """`gamma_map_posterior`'s output.

    Attributes
    ----------
    posterior
        Mean ``(B, N, T)`` / ``(B, N, K, T)`` nAm, variances (and free-orientation blocks) nAm².
    gamma
        Learned prior variances ``(B, N)`` or ``(B, N, K)``, nAm² (0 where pruned).
    noise_var
        ``(B, M)`` the sensor noise variances of the posterior: the given ones, or those learned.
    n_iter
        ``(B,)`` iterations each trial ran.
    """

    posterior: GaussianPosterior
    gamma: torch.Tensor
    noise_var: torch.Tensor
    n_iter: torch.Tensor


@fill_doc
def gamma_map_posterior(
    y: torch.Tensor,
    leadfield: torch.Tensor,
    noise_var: float | torch.Tensor | None,
    max_iter: int = 300,
    tol: float = 1e-6,
    basis: torch.Tensor | None = None,
) -> GammaMapResult:
    """Learn gamma-MAP's prior variances for each trial and return its Gaussian posterior.

    Parameters
    ----------
    %(meeg_y)s
    %(meeg_leadfield_tensor)s
    %(meeg_noise_var_or_none)s
        A learned noise follows CaliBrain's ``gamma_lambda_map``:
        ``lambda_m <- sqrt(mean_t r_m^2 / (C^-1)_mm)`` with the residual ``r = Y - L X``, from
        ``lambda = 1`` in its units.
    %(meeg_max_iter_tol)s
    basis
        ``(N, N)`` spatial basis ``B`` (`spatial_basis`): sFlex, the sources are ``x = B c``
        (per component) and the gammas belong to the coefficients ``c``; the posterior is
        returned for ``x``.
    """
    check_inputs(y, leadfield)
    check_iterations(max_iter, tol)
    batch, n_sensors, n_times = y.shape
    learn_noise = noise_var is None
    if noise_var is not None:
        noise_var = positive_per_trial(
            noise_var, "noise_var", batch=batch, dtype=torch.float64, device=y.device
        )
    free = leadfield.ndim == 3
    k = leadfield.shape[2] if free else 1
    lf = leadfield.to(torch.float64).reshape(n_sensors, leadfield.shape[1], k)
    if basis is not None:
        basis = _check_basis(basis, leadfield.shape[1]).to(lf.device)
        lf = torch.einsum("mnk,nj->mjk", lf, basis)  # the leadfield of the coefficients
    lf = lf.reshape(n_sensors, -1)
    lf_norm = lf.abs().sum(dim=1).max()
    if not lf_norm > 0:
        raise ParameterError("The leadfield is all zeros; gamma-MAP needs a non-zero leadfield.")
    yd = y.to(torch.float64)
    data_norm = torch.linalg.matrix_norm(yd @ yd.transpose(1, 2))  # ||Y Y^T||_F, data units
    if not bool((data_norm > 0).all()):
        raise ParameterError("Some trials are all zeros; gamma-MAP has nothing to fit.")
    # CaliBrain's units: G = L / ||L||_inf, Y / sqrt(||Y Y^T||_F), noise / ||Y Y^T||_F (its
    # noise-learning variant adds eps to both norms)
    pad = _EPS if learn_noise else 0.0
    g = lf / (lf_norm + pad)
    m = yd / (data_norm.sqrt() + pad)[:, None, None]
    if learn_noise:
        lam = torch.ones(batch, n_sensors, dtype=torch.float64, device=y.device)
    else:
        lam = (noise_var / data_norm)[:, None].expand(batch, n_sensors).clone()
    data_power = m @ m.transpose(1, 2) / n_times  # (B, M, M)
    gamma = torch.ones(batch, lf.shape[1], dtype=torch.float64, device=y.device)
    n_iter = torch.zeros(batch, dtype=torch.long, device=y.device)
    active = torch.arange(batch, device=y.device)
    for _ in range(int(max_iter)):
        old = gamma[active]
        # a trial whose every source is pruned stops before the step, with all gammas 0
        alive = (old.reshape(len(active), -1, k).mean(-1) > _EPS).any(1)
        gamma[active[~alive]] = 0.0
        active, old = active[alive], old[alive]
        if active.numel() == 0:
            break
        new, new_lam = _update(
            old, g, lam=lam[active], data_power=data_power[active], k=k, learn_noise=learn_noise
        )
        total = old.abs().sum(1) + (_EPS if learn_noise else _EPS * old.shape[1])
        err = (new - old).abs().sum(1) / total
        gamma[active], lam[active] = new, new_lam
        n_iter[active] += 1
        active = active[err >= tol]
        if active.numel() == 0:
            break
    posterior = _posterior(gamma, g, lam=lam, m=m, k=k, free=free, basis=basis)
    scale = data_norm.sqrt() / (lf_norm + pad)  # CaliBrain's n_const: back to nAm
    out = y.dtype
    mean = posterior.mean * scale.reshape(-1, *[1] * (posterior.mean.ndim - 1))
    var_scale = (scale**2).reshape(-1, *[1] * (posterior.var.ndim - 1))
    blocks = posterior.cov_blocks
    if blocks is not None:
        blocks = (blocks * (scale**2)[:, None, None, None]).to(out)
    learned = gamma * (scale**2)[:, None]
    return GammaMapResult(
        posterior=GaussianPosterior(mean.to(out), (posterior.var * var_scale).to(out), blocks),
        gamma=learned.reshape(batch, -1, k) if free else learned,
        noise_var=lam * data_norm[:, None],
        n_iter=n_iter,
    )


def _update(
    gamma: torch.Tensor,
    g: torch.Tensor,
    *,
    lam: torch.Tensor,
    data_power: torch.Tensor,
    k: int,
    learn_noise: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed-point step for a batch of ``gamma`` (B, NK) and noise ``lam`` (B, M), pruning
    at ``eps`` first (whole groups: the components of a source share one value)."""
    batch, n_coeffs = gamma.shape
    gamma = torch.nan_to_num(gamma, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)
    groups = gamma.reshape(batch, -1, k)
    gamma = torch.where(groups.mean(-1, keepdim=True) > _EPS, groups, 0.0).reshape(batch, n_coeffs)
    cov_inv = _inverse_sensor_cov(gamma, g, lam)
    cinv_g = cov_inv @ g  # (B, M, NK)
    # mean over time of (G^T C^-1 Y)^2, without forming the (NK, T) product
    numer = gamma * (cinv_g * (data_power @ cinv_g)).sum(1).clamp_min(0.0).sqrt()
    denom = (g * cinv_g).sum(1)
    numer = numer.reshape(batch, -1, k).sum(-1)
    denom = denom.reshape(batch, -1, k).sum(-1)
    if learn_noise:  # CaliBrain's two variants guard the square root differently
        root = denom.clamp_min(0.0).sqrt().clamp_min(_EPS)
    else:
        root = denom.clamp_min(_EPS).sqrt()
    new = (numer / root / k).repeat_interleave(k, dim=1).clamp_min(0.0)
    if not learn_noise:
        return new, lam
    # residual R Y with R = I - G Gamma_new G^T C^-1 (C of the previous step, as CaliBrain)
    eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    resid = eye - (g * new[:, None, :]) @ cinv_g.transpose(1, 2)
    numer_noise = (resid * (resid @ data_power)).sum(-1)  # mean_t r_m^2
    diag = torch.diagonal(cov_inv, dim1=-2, dim2=-1)
    updated = torch.where(
        diag > _LAMBDA_FLOOR,
        (numer_noise.clamp_min(0.0) / diag.clamp_min(_LAMBDA_FLOOR)).sqrt(),
        lam,
    )
    return new, updated.clamp_min(_LAMBDA_FLOOR)


def _inverse_sensor_cov(gamma: torch.Tensor, g: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``C^-1`` with ``C = G diag(gamma) G^T + diag(lam)``, per trial; eigenvalues get ``+eps``
    as in CaliBrain, so a noise-free fit stays finite."""
    cov = (g * gamma[:, None, :]) @ g.T + torch.diag_embed(lam)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    return (eigvecs / (eigvals.clamp_min(0.0) + _EPS)[:, None, :]) @ eigvecs.transpose(1, 2)


def _posterior(
    gamma: torch.Tensor,
    g: torch.Tensor,
    *,
    lam: torch.Tensor,
    m: torch.Tensor,
    k: int,
    free: bool,
    basis: torch.Tensor | None,
) -> GaussianPosterior:
    """The Gaussian posterior of ``gamma`` and noise ``lam`` in CaliBrain's units, for the
    sources (``x = B c`` when there is a basis): with ``H = G Gamma B^T`` (``G Gamma`` without a
    basis), mean ``H^T C^-1 Y`` and blocks ``diag(B^2 gamma) - H_n^T C^-1 H_n``."""
    batch, n_sensors = gamma.shape[0], g.shape[0]
    n_sources = gamma.shape[1] // k
    gain = (g * gamma[:, None, :]).reshape(batch, n_sensors, n_sources, k)
    prior = gamma.reshape(batch, n_sources, k)
    if basis is not None:
        gain = torch.einsum("bmjk,nj->bmnk", gain, basis)
        prior = torch.einsum("nj,bjk->bnk", basis**2, prior)
    solved = _inverse_sensor_cov(gamma, g, lam) @ gain.reshape(batch, n_sensors, -1)
    mean = solved.transpose(1, 2) @ m  # (B, NK, T)
    solved = solved.reshape(gain.shape)
    blocks = torch.diag_embed(prior) - torch.einsum("bmsi,bmsj->bsij", gain, solved)
    if not free:
        return GaussianPosterior(mean, blocks[:, :, 0, 0])
    return GaussianPosterior(
        mean.reshape(batch, n_sources, k, -1), torch.diagonal(blocks, dim1=-2, dim2=-1), blocks
    )


def spatial_basis(
    src_coords: np.ndarray | torch.Tensor,
    sigma: float = 0.01,
    threshold_factor: float = 3.0,
    normalize: str | None = "sym",
) -> torch.Tensor:
    """sFlex's spatial basis (CaliBrain's ``compute_B``): a Gaussian kernel of width ``sigma``
    (m) between source positions ``(N, 3)``, zero beyond ``threshold_factor * sigma``, then
    normalised by its row sums ``s``: ``"sym"`` ``S^-1/2 B S^-1/2`` (the default), ``"row"``
    ``S^-1 B``, or ``None``. Returns a dense float64 ``(N, N)`` tensor."""
    coords = torch.as_tensor(np.asarray(src_coords, dtype=np.float64))
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ShapeMismatchError(
            f"src_coords must be (n_sources, 3) positions, got shape {tuple(coords.shape)}."
        )
    if not bool(torch.isfinite(coords).all()):
        raise NonFiniteError("src_coords hold NaN or Inf; sFlex needs every source position.")
    check_number("sigma", sigma, minimum=0.0, open_minimum=True)
    check_number("threshold_factor", threshold_factor, minimum=0.0, open_minimum=True)
    check_option("normalize", normalize, BASIS_NORMALIZATIONS)
    dist2 = torch.cdist(coords, coords).pow(2)
    kernel = torch.where(
        dist2 <= (threshold_factor * sigma) ** 2, torch.exp(-dist2 / (2 * sigma**2)), 0.0
    )
    kernel = 0.5 * (kernel + kernel.T)
    if normalize is None:
        return kernel
    row_sums = kernel.sum(1).clamp_min(1e-12)
    if normalize == "row":
        return kernel / row_sums[:, None]
    scaled = kernel * row_sums.rsqrt()[:, None] * row_sums.rsqrt()[None, :]
    return 0.5 * (scaled + scaled.T)


def _check_basis(basis: torch.Tensor, n_sources: int) -> torch.Tensor:
    basis = torch.as_tensor(basis, dtype=torch.float64)
    if basis.shape != (n_sources, n_sources):
        raise ShapeMismatchError(
            f"The spatial basis must be (n_sources, n_sources) = ({n_sources}, {n_sources}), got "
            f"{tuple(basis.shape)}."
        )
    if not bool(torch.isfinite(basis).all()):
        raise NonFiniteError("The spatial basis holds NaN or Inf.")
    return basis
