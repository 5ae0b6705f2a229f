"""Sign-flip permutation inference with the max statistic: family-wise error control per lesion.

Under the null hypothesis that each subject's z map is symmetric about 0, flipping the signs of
whole subject maps leaves its distribution unchanged. For each of P random sign vectors s the
one-sample t map of (s_i z_i) is computed (the sum of squares does not change, only the sum), and
its largest |t| over the voxels is kept; a voxel's FWER-corrected p value is
(1 + #{p : max|t*_p| >= |t|}) / (P + 1), which counts the unflipped data as one permutation.

Sums for a block of permutations are one matrix product (permutations x subjects) @ (subjects x
voxels), in float64 on the chosen device; voxels are taken in blocks so that memory stays bounded.
"""

from __future__ import annotations

import numpy as np
import torch

from neurotorch.connectome.stats import t_statistic

# float64 elements of one block of permuted sums (8 MiB): small enough to stay in cache on a CPU
BLOCK_ELEMENTS = 2**20


def sign_flips(n_permutations: int, n_subjects: int, seed: int) -> torch.Tensor:
    """(n_permutations, n_subjects) random ±1 float64 matrix, the same on every device."""
    generator = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (n_permutations, n_subjects), generator=generator)
    return bits.to(torch.float64).mul_(2).sub_(1)


def permutation_max_t(
    z: np.ndarray, signs: torch.Tensor, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Largest |t| over the voxels of every sign-flipped map.

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
    np.ndarray
        (n_permutations, n_maps) float64 max |t|.
    """
    n_subjects, n_maps, n_voxels = z.shape
    signs = signs.to(device=device, dtype=torch.float64)
    null = torch.zeros((len(signs), n_maps), dtype=torch.float64, device=device)
    width = max(1, BLOCK_ELEMENTS // max(n_subjects, len(signs)))
    for k in range(n_maps):
        for start in range(0, n_voxels, width):
            block = torch.from_numpy(np.ascontiguousarray(z[:, k, start : start + width]))
            block = block.to(device=device, dtype=torch.float64)
            sum_sq = block.square().sum(dim=0)
            mean = (signs @ block).div_(n_subjects)  # (n_permutations, block voxels)
            squared_deviations = mean.square().mul_(-n_subjects).add_(sum_sq).clamp_(min=0)
            standard_error = squared_deviations.div_(n_subjects * (n_subjects - 1)).sqrt_()
            block_max = t_statistic(mean, standard_error).abs_().amax(dim=1)
            torch.maximum(null[:, k], block_max, out=null[:, k])
    return null.cpu().numpy()


def fwe_p_values(t: np.ndarray, max_t_null: np.ndarray) -> np.ndarray:
    """(n_maps, n_voxels) FWER p values of observed ``t`` given the (P, n_maps) null of max |t|."""
    n_permutations = len(max_t_null)
    p = np.empty(t.shape, dtype=np.float64)
    for k in range(t.shape[0]):
        ranked = np.sort(max_t_null[:, k])
        at_least = n_permutations - np.searchsorted(ranked, np.abs(t[k]), side="left")
        p[k] = (1 + at_least) / (n_permutations + 1)
    return p
