"""Functional lesion network mapping (LNM) over a connectome, in torch.

For each lesion the seed is the mean time course of its voxels (or of the voxels PINI selects);
per subject, r is the Pearson correlation of the seed with every voxel and z = arctanh(r); across
subjects the maps are the mean z, its one-sample t statistic, the two-sided p value, the
Benjamini-Hochberg adjusted p (q) and, on request, sign-flip permutation FWER p values.

Rules at the edges, one for every path:

* a voxel (or a seed) whose series is constant in a subject has r = 0 in that subject;
* the seed voxel of a one-voxel lesion has r = 1 exactly (not 1 minus float32 rounding), and |r|
  is clipped at `R_MAX` = 1 - 2^-24, the largest float32 below 1, so that voxel has
  z = `Z_MAX` = arctanh(1 - 2^-24) ≈ 8.664 in every subject (hence t = inf, p = 0);
* a NaN or infinite value in a subject's series raises `NonFiniteError` naming the subject.

All lesions are computed together in one pass over the subjects: one subject's time series is
worked on at a time (while the next `READ_AHEAD` are read and inflated in threads, into buffers
allocated once), correlations and z are computed in float32 and the across-subject sums of z are
accumulated in float64 (`neurotorch.connectome.stats.ShiftedSums`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Literal, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from neurotorch._docs import fill_doc
from neurotorch._options import as_ints, check_int, check_number, check_option
from neurotorch.config import check_device, show_progress
from neurotorch.connectome.batches import ConnectomeBatches
from neurotorch.connectome.lesions import LesionInput, LesionSet, load_lesions
from neurotorch.connectome.permutation import fwe_p_values, permutation_t_max, sign_flips
from neurotorch.connectome.pini import pini_masks
from neurotorch.connectome.result import NetworkMapResult
from neurotorch.connectome.stats import ShiftedSums, benjamini_hochberg, two_sided_p
from neurotorch.errors import NonFiniteError, ParameterError

R_MAX = 1.0 - 2.0**-24
Z_MAX = math.atanh(R_MAX)  # 8.664, within 2e-9 of 12.5 ln 2
METHODS = ("boes", "pini")
Method = Literal["boes", "pini"]
# subjects read and inflated ahead, each in its own thread: inflating a subject takes about twice
# as long as computing its correlations on one core
READ_AHEAD = 2
_VERSIONED_PACKAGES = ("neurotorch", "torch", "numpy", "scipy", "nibabel", "h5py")


class SeedWeights:
    """How seeds are formed from voxels: seed k = timeseries[:, index] @ weights[:, k].

    Only lesion voxels are touched, so building the seeds costs nothing next to the correlations.
    """

    def __init__(self, index: torch.Tensor, weights: torch.Tensor):
        self.index = index  # (n_seed_voxels,) voxel columns used by any seed
        self.weights = weights  # (n_seed_voxels, n_seeds)
        # seeds of one voxel, and that voxel: their correlation there is 1 by definition
        used = weights != 0
        self.one_voxel_seeds = torch.nonzero(used.sum(dim=0) == 1).flatten()
        self.one_voxel_columns = index[used[:, self.one_voxel_seeds].int().argmax(dim=0)]

    @classmethod
    def from_masks(
        cls, masks: np.ndarray, device: str | torch.device = "cpu", dtype=torch.float32
    ) -> SeedWeights:
        """Mean-of-voxels seeds from (n_seeds, n_voxels) boolean masks."""
        masks = np.asarray(masks, dtype=bool)
        index = np.flatnonzero(masks.any(axis=0))
        weights = masks[:, index].T / masks.sum(axis=1)
        return cls(
            torch.from_numpy(index).to(device),
            torch.from_numpy(weights).to(device=device, dtype=dtype),
        )


def seed_correlations(
    timeseries: torch.Tensor,
    seeds: SeedWeights,
    inplace: bool = False,
    out: torch.Tensor | None = None,
    source: str = "the time series",
) -> torch.Tensor:
    """Pearson r of each seed time course with every voxel, for one subject.

    Parameters
    ----------
    timeseries
        (n_timepoints, n_voxels) float tensor.
    seeds
        Which voxels average into which seed, see `SeedWeights.from_masks`.
    inplace
        Centre ``timeseries`` in place instead of in a copy (for callers that own the tensor).
    out
        Optional (n_seeds, n_voxels) tensor to write the correlations into (reused across
        subjects, it saves allocating and page-faulting a large array per subject).
    source
        What ``timeseries`` is, for the error message.

    Returns
    -------
    torch.Tensor
        (n_seeds, n_voxels) correlations; 0 where a voxel or a seed is constant over time.

    Raises
    ------
    NonFiniteError
        ``timeseries`` holds NaN or infinite values.
    """
    n_timepoints = timeseries.shape[0]
    constant = _constant_columns(timeseries)  # exact, before any rounding
    mean = timeseries.new_full((1, n_timepoints), 1.0 / n_timepoints) @ timeseries  # BLAS gemv
    non_finite = ~torch.isfinite(mean)  # a NaN or inf anywhere in a column reaches its mean
    if non_finite.any():
        raise NonFiniteError(
            f"{source} holds NaN or infinite values in {int(non_finite.sum())} voxels; exclude "
            "this subject (subjects=...) or re-create the connectome from finite series."
        )
    centred = timeseries.sub_(mean) if inplace else timeseries - mean
    if constant.any():
        centred[:, constant] = 0.0
    seed_series = centred[:, seeds.index] @ seeds.weights
    seed_series -= seed_series.mean(dim=0, keepdim=True)
    seed_series /= _nonzero(torch.linalg.vector_norm(seed_series, dim=0))
    correlation = torch.matmul(seed_series.T, centred, out=out)
    correlation /= _nonzero(_column_norms(centred))
    # exactly 1 rather than 1 - a few float32 ulps (0 if the voxel is constant in this subject)
    one_voxel = seeds.one_voxel_columns
    correlation[seeds.one_voxel_seeds, one_voxel] = (~constant[one_voxel]).to(correlation.dtype)
    return correlation


def _constant_columns(x: torch.Tensor) -> torch.Tensor:
    """Whether each column of a (t, v) tensor is constant (max == min; False where NaN).

    Taking running maxima and minima row by row walks memory in order, ~10x faster than a
    reduction across rows.
    """
    high, low = x[0].clone(), x[0].clone()
    for row in x[1:]:
        torch.maximum(high, row, out=high)
        torch.minimum(low, row, out=low)
    return high == low


def _nonzero(norms: torch.Tensor) -> torch.Tensor:
    """Norms with 0 replaced by 1, so that an all-zero (constant) series gives r = 0."""
    return norms.masked_fill_(norms == 0, 1.0)


def _column_norms(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of every column of a (t, v) tensor, summed row by row.

    Adding squared rows walks memory in order, ~8x faster than a reduction across rows.
    """
    squares = torch.zeros_like(x[0])
    for row in x:
        squares.addcmul_(row, row)
    return squares.sqrt_()


def fisher_z_(r: torch.Tensor) -> torch.Tensor:
    """arctanh(r) in place, with |r| clipped at `R_MAX` (so |z| <= `Z_MAX`)."""
    return r.clamp_(-R_MAX, R_MAX).atanh_()


def _versions() -> dict[str, str]:
    found = {}
    for package in _VERSIONED_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:  # pragma: no cover - every one is a dependency
            found[package] = "not installed"
    return found


def _checked_subjects(subjects: Sequence[int] | None, n_subjects: int) -> list[int]:
    """The subject indices to use; raises `ParameterError` unless >= 2 distinct ones in range."""
    subjects = list(range(n_subjects)) if subjects is None else as_ints("subjects", subjects)
    if len(subjects) < 2:
        raise ParameterError(
            f"Lesion network mapping needs at least 2 subjects, got {len(subjects)}."
        )
    outside = [s for s in subjects if not 0 <= s < n_subjects]
    if outside or len(set(subjects)) != len(subjects):
        raise ParameterError(
            f"subjects must be distinct indices in 0..{n_subjects - 1}; got "
            f"{outside[:5] or 'repeated indices'}."
        )
    return subjects


def load_inputs(
    lesions: LesionInput | Sequence | Mapping | LesionSet,
    connectome: str | os.PathLike | ConnectomeBatches,
    storage_options: dict | None,
    lesion_options: dict,
) -> tuple[LesionSet, ConnectomeBatches]:
    """The lesions and the connectome of a run, loaded unless given loaded."""
    batches = (
        connectome
        if isinstance(connectome, ConnectomeBatches)
        else ConnectomeBatches(connectome, storage_options)
    )
    if isinstance(lesions, LesionSet) and lesion_options:
        raise ParameterError(
            f"{sorted(lesion_options)} apply when loading lesions; pass them to load_lesions, "
            "not with an already loaded LesionSet."
        )
    if isinstance(lesions, LesionSet):
        return lesions, batches
    return load_lesions(lesions, batches, **lesion_options), batches


def check_run_options(
    method: str, pini_percentile: float, n_permutations: int, seed: int
) -> tuple[Method, float, int, int]:
    """The options of a run, checked (`ParameterError` naming the one at fault)."""
    return (
        cast(Method, check_option("method", method, METHODS)),
        check_number("pini_percentile", pini_percentile, minimum=0, maximum=100),
        check_int("n_permutations", n_permutations, minimum=0),
        check_int("seed", seed),
    )


def _provenance(
    lesions: LesionSet, batches: ConnectomeBatches, subjects: list[int], **parameters
) -> dict:
    """Inputs, parameters and package versions of a run, for ``provenance.json``."""
    ids = batches.subject_ids
    return {
        "inputs": {
            "lesions": dict(zip(lesions.names, lesions.sources, strict=True)),
            "connectome": [str(f) for f in batches.files],
            "connectome_space": batches.space,
            "subjects": [ids[s] for s in subjects],
        },
        "parameters": {**parameters, "lesions": lesions.options},
        "versions": _versions(),
    }


@fill_doc
def network_map(
    lesions: LesionInput | Sequence | Mapping | LesionSet,
    connectome: str | os.PathLike | ConnectomeBatches,
    subjects: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    storage_options: dict | None = None,
    method: Method = "boes",
    pini_percentile: float = 20.0,
    n_permutations: int = 0,
    seed: int = 0,
    **lesion_options,
) -> NetworkMapResult:
    """Functional lesion network maps of many lesions in one pass over a connectome.

    With ``n_permutations``, every subject's z maps are kept in memory (subjects x lesions x
    voxels x 4 bytes); `neurotorch.connectome.lnm_units` splits the work into units instead.

    Parameters
    ----------
    %(lnm_lesions)s
    %(lnm_connectome)s
    subjects
        Subject indices to use (default: all).
    device
        Torch device for the correlations and permutations (``"cuda"`` moves the work to a GPU;
        refused with `ParameterError` where no CUDA device exists).
    %(storage_options)s
    %(lnm_options)s
    %(lnm_lesion_options)s

    Returns
    -------
    NetworkMapResult
        Mean Fisher z, r, t, two-sided p, Benjamini-Hochberg q (and FWER p) maps per lesion.

    Raises
    ------
    ParameterError
        An argument out of range, an unknown method, or a device this machine does not have.
    """
    method, pini_percentile, n_permutations, seed = check_run_options(
        method, pini_percentile, n_permutations, seed=seed
    )
    device = check_device(device)
    lesion_set, batches = load_inputs(
        lesions, connectome, storage_options, lesion_options=lesion_options
    )
    subjects = _checked_subjects(subjects, batches.n_subjects)
    seed_masks = (
        pini_masks(lesion_set.masks, batches, subjects=subjects, percentile=pini_percentile)
        if method == "pini"
        else lesion_set.masks
    )
    sums, z_maps = accumulate_z(
        batches,
        subjects,
        SeedWeights.from_masks(seed_masks, device),
        keep_z=bool(n_permutations),
        progress=show_progress(),
    )
    p_fwe = max_t_null = None
    if n_permutations:
        assert z_maps is not None, "kept with permutations (keep_z)"
        signs = sign_flips(n_permutations, len(subjects), seed)
        observed, max_t_null = permutation_t_max(z_maps, signs, device)
        p_fwe = fwe_p_values(observed, max_t_null)
    return assemble_result(
        lesion_set,
        batches,
        subjects,
        seed_masks=seed_masks,
        mean_and_t=sums.mean_and_t(),
        permutations=(p_fwe, max_t_null),
        parameters=dict(
            method=method,
            pini_percentile=pini_percentile if method == "pini" else None,
            n_permutations=n_permutations,
            seed=seed if n_permutations else None,
            device=str(device),
        ),
    )


def accumulate_z(
    batches: ConnectomeBatches,
    subjects: Sequence[int],
    seeds: SeedWeights,
    *,
    keep_z: bool = False,
    progress: bool = False,
) -> tuple[ShiftedSums, np.ndarray | None]:
    """The Fisher z maps of ``subjects``, one subject at a time, on the seeds' device.

    Returns
    -------
    sums : ShiftedSums
        Their float64 sums (around the first subject's z).
    z_maps : np.ndarray or None
        With ``keep_z``: every subject's (n_seeds, n_voxels) float32 map, (n_subjects, ...).
    """
    device = seeds.weights.device
    shape = (seeds.weights.shape[1], batches.n_voxels)
    sums = ShiftedSums(shape, device)
    z = torch.empty(shape, dtype=torch.float32, device=device)  # reused for every subject
    z_maps = np.empty((len(subjects),) + shape, np.float32) if keep_z else None
    ids = batches.subject_ids
    bar = tqdm(
        total=len(subjects), desc="lesion network mapping", unit="subject", disable=not progress
    )
    with bar:
        iterator = batches.iter_subjects(subjects, prefetch=READ_AHEAD, reuse_buffers=True)
        for row, (subject, series) in enumerate(iterator):
            x = torch.from_numpy(series).to(device)
            source = f"Subject {subject} ({ids[subject]}) in {batches.locate_file(subject)}"
            fisher_z_(seed_correlations(x, seeds, inplace=True, out=z, source=source))
            sums.add(z)
            if z_maps is not None:
                z_maps[row] = z.cpu().numpy()
            bar.update()
    return sums, z_maps


def assemble_result(
    lesion_set: LesionSet,
    batches: ConnectomeBatches,
    subjects: list[int],
    *,
    seed_masks: np.ndarray,
    mean_and_t: tuple[np.ndarray, np.ndarray],
    permutations: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
    parameters: dict,
) -> NetworkMapResult:
    """The maps of a run from its float64 mean z and t (`ShiftedSums.mean_and_t`): mean z, t, p,
    q; ``permutations`` is the (FWER p, max |t| null) pair, or ``(None, None)``; ``parameters``
    go into the provenance."""
    mean, t = mean_and_t
    p = two_sided_p(t, len(subjects) - 1)
    p_fwe, max_t_null = permutations
    return NetworkMapResult(
        names=list(lesion_set.names),
        mean_z=mean.astype(np.float32),
        t=t.astype(np.float32),
        p=p,
        q=benjamini_hochberg(p),
        n_subjects=len(subjects),
        lesion_voxels=lesion_set.masks.sum(axis=1),
        seed_voxels=seed_masks.sum(axis=1),
        lesion_volumes_mm3=lesion_set.volumes_mm3,
        lesion_masks=lesion_set.masks,
        mask_indices=batches.mask_indices,
        affine=batches.affine,
        mask_shape=batches.mask_shape,
        space=batches.space,
        p_fwe=p_fwe,
        max_t_null=max_t_null,
        provenance=_provenance(lesion_set, batches, subjects, **parameters, r_max=R_MAX),
    )
