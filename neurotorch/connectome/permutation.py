"""Sign-flip permutation inference with the max statistic: family-wise error control per lesion.

Under the null hypothesis that each subject's z map is symmetric about 0, flipping the signs of
whole subject maps leaves its distribution unchanged. For each of P random sign vectors s the
one-sample t map of (s_i z_i) is computed (the sum of squares does not change, only the sum), and
its largest |t| over the voxels is kept; a voxel's FWER-corrected p value is
(1 + #{p : max|t*_p| >= |t|}) / (P + 1), which counts the unflipped data as one permutation.

The observed |t| that is compared with the null comes from the same float64 computation as the
null: it is row 0 of the same matrix product (an all-ones sign vector). A sampled sign vector
that equals the observed data (all +1 or all -1) therefore gives exactly the observed maximum,
and counts as a tie, as in an exact computation.

Sums for a block of permutations are one matrix product (permutations x subjects) @ (subjects x
voxels), in float64 on the chosen device; voxels are taken in blocks so that memory stays bounded,
and the maximum of each permutation is the maximum over all blocks.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from neurotorch._options import check_int
from neurotorch.connectome.stats import t_statistic


class ZMaps(Protocol):
    """(n_subjects, n_maps, n_voxels) z maps: an array, or anything with its ``shape`` that
    reads ``z[:, k, a:b]`` as one."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any) -> np.ndarray: ...


# float64 elements of one block of permuted sums (8 MiB): small enough to stay in cache on a CPU
BLOCK_ELEMENTS = 2**20


def sign_flips(n_permutations: int, n_subjects: int, seed: int) -> torch.Tensor:
    """(n_permutations, n_subjects) random ±1 float64 matrix drawn from ``seed``, the same on
    every device and machine."""
    n_permutations = check_int("n_permutations", n_permutations, minimum=1)
    n_subjects = check_int("n_subjects", n_subjects, minimum=1)
    generator = torch.Generator().manual_seed(check_int("seed", seed))
    bits = torch.randint(0, 2, (n_permutations, n_subjects), generator=generator)
    return bits.to(torch.float64).mul_(2).sub_(1)


def block_width(n_subjects: int, n_permutations: int) -> int:
    """Voxels per block of `permutation_t_max`: ``BLOCK_ELEMENTS`` float64 sums at most."""
    return max(1, BLOCK_ELEMENTS // max(n_subjects, n_permutations + 1))


def permutation_t_max(
    z: ZMaps, signs: torch.Tensor, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """The observed |t| maps and the largest |t| of every sign-flipped map, in one precision.

    Parameters
    ----------
    z
        (n_subjects, n_maps, n_voxels) per-subject z maps.
    signs
        (n_permutations, n_subjects) ±1, see `sign_flips`.
    device
        Torch device of the computation.

    Returns
    -------
    observed : np.ndarray
        (n_maps, n_voxels) float64 |t| of the unflipped maps.
    max_t_null : np.ndarray
        (n_permutations, n_maps) float64 max |t| over the voxels of each flipped map.
    """
    n_subjects, n_maps, n_voxels = z.shape
    ones = torch.ones((1, n_subjects), dtype=torch.float64)
    rows = torch.cat([ones, signs.to(dtype=torch.float64, device="cpu")]).to(device)
    observed = np.empty((n_maps, n_voxels), dtype=np.float64)
    null = torch.zeros((len(signs), n_maps), dtype=torch.float64, device=device)
    width = block_width(n_subjects, len(signs))
    for k in range(n_maps):
        for start in range(0, n_voxels, width):
            block = torch.from_numpy(np.ascontiguousarray(z[:, k, start : start + width]))
            abs_t = _flipped_abs_t(block.to(device=device, dtype=torch.float64), rows)
            observed[k, start : start + width] = abs_t[0].cpu().numpy()
            torch.maximum(null[:, k], abs_t[1:].amax(dim=1), out=null[:, k])
    return observed, null.cpu().numpy()


def _flipped_abs_t(block: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """(rows of signs, voxels) |t| of the one-sample t of (s_i z_i) over the subjects i."""
    n_subjects = block.shape[0]
    sum_sq = block.square().sum(dim=0)
    mean = (signs @ block).div_(n_subjects)  # (n_permutations, block voxels)
    squared_deviations = mean.square().mul_(-n_subjects).add_(sum_sq).clamp_(min=0)
    standard_error = squared_deviations.div_(n_subjects * (n_subjects - 1)).sqrt_()
    return t_statistic(mean, standard_error).abs_()


def permutation_max_t(
    z: ZMaps, signs: torch.Tensor, device: str | torch.device = "cpu"
) -> np.ndarray:
    """(n_permutations, n_maps) float64 largest |t| over the voxels of every sign-flipped map
    (the null of `permutation_t_max`)."""
    return permutation_t_max(z, signs, device)[1]


def exceedances(abs_t: np.ndarray, max_t_null: np.ndarray) -> np.ndarray:
    """(n_maps, n_voxels) number of permutations whose max |t| is at or above each voxel's |t|
    (``abs_t`` and the (P, n_maps) ``max_t_null`` from one `permutation_t_max`)."""
    n_permutations = len(max_t_null)
    counts = np.empty(abs_t.shape, dtype=np.int64)
    for k in range(abs_t.shape[0]):
        ranked = np.sort(max_t_null[:, k])
        counts[k] = n_permutations - np.searchsorted(ranked, np.abs(abs_t[k]), side="left")
    return counts


def fwe_p_values(abs_t: np.ndarray, max_t_null: np.ndarray) -> np.ndarray:
    """(n_maps, n_voxels) FWER p values of observed t given the (P, n_maps) null of max |t|.

    ``abs_t`` and ``max_t_null`` must come from the same computation (`permutation_t_max`), so
    that a null value equal to an observed one is a tie (counted), not a rounding difference.
    """
    return fwe_from_exceedances(exceedances(abs_t, max_t_null), len(max_t_null))


def fwe_from_exceedances(counts: np.ndarray, n_permutations: int) -> np.ndarray:
    """FWER p values (1 + count) / (P + 1) from `exceedances` (summed over chunks of the P
    permutations)."""
    return (1 + counts) / (n_permutations + 1)
