"""What every solver strategy is: its options (a frozen dataclass, checked when it is made),
`Solver.prepare` (what depends on the leadfield only, computed once) and `Solver.fit` (the
posterior of a batch of trials).

Every solver is a Gaussian model with a diagonal noise covariance and a source prior that is
block diagonal (one ``K x K`` block per source, or per coefficient of sFlex's basis), returned in
`SolverFit.prior_blocks` so that a full posterior covariance can be formed from it
(`neurotorch.meeg.solvers.full_posterior_cov`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch

from neurotorch._docs import fill_doc
from neurotorch._options import check_option
from neurotorch.errors import ParameterError
from neurotorch.meeg.posterior import NOISE_TYPES, GaussianPosterior

Prepared = TypeVar("Prepared")
LEARNED_NOISE = "adaptive_joint_learning"


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


@dataclass(frozen=True)
class Solver(Generic[Prepared]):
    """A CaliBrain solver: its options are the dataclass fields (CaliBrain's ``solver_params``
    names and defaults), checked when the solver is made.

    Class attributes say what the solver supports: ``name`` (CaliBrain's, the registry key),
    ``joint_name`` (CaliBrain's name when the noise is learned with the prior, ``None`` when it
    cannot be), ``takes_gamma`` (a given source prior variance) and ``needs_src_coords``.
    """

    name: ClassVar[str]
    joint_name: ClassVar[str | None] = None
    takes_gamma: ClassVar[bool] = False
    needs_src_coords: ClassVar[bool] = False

    def options(self) -> dict[str, Any]:
        """The options as a plain dict (CaliBrain's ``solver_params``)."""
        return dataclasses.asdict(self)

    def calibrain_name(self, noise_type: str) -> str:
        """CaliBrain's name of this solver under ``noise_type`` (its manifest's ``solver``)."""
        return self.joint_name if noise_type == LEARNED_NOISE and self.joint_name else self.name

    def check_noise_type(self, noise_type: str, gamma: object = "learn") -> None:
        """Refuse what CaliBrain does not define: learned noise for a solver that cannot learn
        it, or with a given prior variance; a given prior variance for a solver that learns its
        own prior."""
        check_option("noise_type", noise_type, NOISE_TYPES)
        if noise_type == LEARNED_NOISE and (self.joint_name is None or gamma != "learn"):
            raise ParameterError(
                f"noise_type='{LEARNED_NOISE}' learns the noise together with the prior "
                "variances; pass solver='BMN', 'gamma_map' or 'gamma_map_sflex' and "
                f"gamma='learn' (got solver={self.name!r}, gamma={gamma!r})."
            )
        if gamma != "learn" and not self.takes_gamma:
            raise ParameterError(
                f"solver={self.name!r} learns its own source prior: gamma must stay 'learn' "
                f"(got {gamma!r}; a given gamma is a BMN option)."
            )

    def prepare(self, leadfield: torch.Tensor, src_coords: np.ndarray | None = None) -> Prepared:
        """What the posterior needs of ``leadfield`` alone (computed once per leadfield)."""
        raise NotImplementedError

    @fill_doc
    def fit(
        self,
        y: torch.Tensor,
        leadfield: torch.Tensor,
        prepared: Prepared,
        *,
        noise_var: float | torch.Tensor | None,
        gamma: str | float | torch.Tensor = "learn",
    ) -> SolverFit:
        """The posterior of trials ``y`` on ``leadfield``.

        Parameters
        ----------
        %(meeg_y)s
        %(meeg_leadfield_tensor)s
        prepared
            `prepare`'s result for this leadfield.
        %(meeg_noise_var_or_none)s
        gamma
            BMN's source prior variance: ``"learn"`` or a value (scalar or ``(B,)``, nAm²).
        """
        raise NotImplementedError


def per_trial(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a float64 ``(B,)`` tensor on ``like``'s device (``like`` is ``(B, ...)``)."""
    value = torch.as_tensor(value, dtype=torch.float64, device=like.device)
    return value.expand(like.shape[0]).clone()


def per_sensor(noise_var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` noise variance repeated for every sensor: ``(B, M)``."""
    return noise_var[:, None].expand(-1, y.shape[1]).clone()


def as_blocks(per_source: torch.Tensor) -> torch.Tensor:
    """``(N,)`` scalars or ``(N, K, K)`` blocks as ``(N, K, K)`` float64."""
    per_source = per_source.to(torch.float64)
    return per_source[:, None, None] if per_source.ndim == 1 else per_source


def mean_prior_var(blocks: torch.Tensor) -> torch.Tensor:
    """``(B,)`` the mean diagonal of ``(B, N, K, K)`` prior blocks."""
    return torch.diagonal(blocks, dim1=-2, dim2=-1).flatten(1).mean(1)
