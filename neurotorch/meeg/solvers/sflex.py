"""CaliBrain's ``gamma_map_sflex`` (and ``gamma_lambda_map_sflex``): gamma-MAP on the
coefficients of a spatial basis of the source positions (`neurotorch.meeg.sparse_bayes`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from neurotorch._options import check_number, check_option
from neurotorch.errors import ParameterError
from neurotorch.meeg.solvers.gamma_map import GammaMap, SpatialPrior
from neurotorch.meeg.sparse_bayes import BASIS_NORMALIZATIONS, spatial_basis


@dataclass(frozen=True)
class SFlex(GammaMap):
    """sFlex: gamma-MAP with sources ``x = B c`` on a Gaussian kernel ``B`` between source
    positions; the leadfield needs ``src_coords``.

    Parameters
    ----------
    max_iter, tol
        As for `GammaMap`.
    sigma
        Width of the kernel (m).
    threshold_factor
        The kernel is cut at ``threshold_factor * sigma``.
    normalize
        ``"sym"`` (default), ``"row"`` or ``None`` (see `spatial_basis`).
    """

    name = "gamma_map_sflex"
    joint_name = "gamma_lambda_map_sflex"
    needs_src_coords = True
    sigma: float = 0.01
    threshold_factor: float = 3.0
    normalize: Literal["sym", "row"] | None = "sym"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("sigma", self.sigma, minimum=0.0, open_minimum=True)
        check_number("threshold_factor", self.threshold_factor, minimum=0.0, open_minimum=True)
        check_option("normalize", self.normalize, BASIS_NORMALIZATIONS)

    def prepare(
        self, leadfield: torch.Tensor, src_coords: np.ndarray | None = None
    ) -> SpatialPrior:
        if src_coords is None:
            raise ParameterError(
                "solver='gamma_map_sflex' needs the source positions (src_coords) of the "
                "leadfield, and this leadfield has none: load or simulate one with positions."
            )
        basis = spatial_basis(
            src_coords,
            sigma=self.sigma,
            threshold_factor=self.threshold_factor,
            normalize=self.normalize,
        )
        return SpatialPrior(basis.to(leadfield.device))
