"""CaliBrain's ``eloreta``: eLORETA's weighted minimum norm as a Gaussian posterior
(`neurotorch.meeg.eloreta`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neurotorch._options import check_number
from neurotorch.meeg.eloreta import EloretaOperator, eloreta_operator, eloreta_posterior
from neurotorch.meeg.solvers.base import (
    Solver,
    SolverFit,
    as_blocks,
    mean_prior_var,
    per_sensor,
    per_trial,
)


@dataclass(frozen=True)
class Eloreta(Solver[EloretaOperator]):
    """eLORETA: a source prior ``sigma2 R`` with eLORETA's weights ``R``; it needs the noise
    variance (``noise_type`` ``"oracle"`` or ``"baseline"``).

    Parameters
    ----------
    lambda2
        eLORETA's regularisation (CaliBrain's is 1).
    """

    name = "eloreta"
    lambda2: float = 1.0

    def __post_init__(self) -> None:
        check_number("lambda2", self.lambda2, minimum=0.0, open_minimum=True)

    def prepare(
        self, leadfield: torch.Tensor, src_coords: np.ndarray | None = None
    ) -> EloretaOperator:
        return eloreta_operator(leadfield, self.lambda2)

    def fit(self, y, leadfield, prepared, *, noise_var, gamma="learn") -> SolverFit:
        post = eloreta_posterior(
            y, leadfield, noise_var=noise_var, lambda2=self.lambda2, operator=prepared
        )
        noise = per_trial(noise_var, y)
        blocks = noise[:, None, None, None] * as_blocks(prepared.weights)[None]
        return SolverFit(
            posterior=post,
            gamma=mean_prior_var(blocks),
            noise_var=noise,
            prior_blocks=blocks,
            sensor_noise_var=per_sensor(noise * self.lambda2, y),  # the model's: λσ²
        )
