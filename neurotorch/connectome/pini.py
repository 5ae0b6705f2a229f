"""PINI seed selection: keep the lesion voxels that carry the lesion's dominant signal.

Per subject, each lesion voxel's series is correlated with the lesion's mean series (r = 0 where
either is constant). Over subjects this gives a (subjects x lesion voxels) matrix; its first
principal component (columns centred, as PCA does) loads each voxel, and the voxels whose absolute
loading is at or above the given percentile of all absolute loadings form the seed. Lacuna fits the
component separately in every batch file; here it is fitted once over all the subjects used, so
the seed does not depend on how subjects are grouped into files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurotorch.connectome.batches import ConnectomeBatches
from neurotorch.errors import NonFiniteError


def _correlations_with_mean(series: np.ndarray) -> np.ndarray:
    """r of every column of a (t, v) float64 series with the columns' mean; 0 where constant."""
    centred = series - series.mean(axis=0)
    centred[:, (series == series[:1]).all(axis=0)] = 0.0
    mean = centred.mean(axis=1)
    norms = np.linalg.norm(centred, axis=0) * np.linalg.norm(mean)
    return np.divide(mean @ centred, norms, out=np.zeros(series.shape[1]), where=norms > 0)


def select_voxels(correlations: np.ndarray, percentile: float) -> np.ndarray:
    """Boolean selection over the columns of a (subjects x voxels) correlation matrix."""
    centred = correlations - correlations.mean(axis=0)
    loadings = np.abs(np.linalg.svd(centred, full_matrices=False)[2][0])
    return loadings >= np.percentile(loadings, percentile)


def lesion_voxel_correlations(
    masks: np.ndarray, batches: ConnectomeBatches, subjects: Sequence[int]
) -> list[np.ndarray]:
    """Per lesion, the (subjects x lesion voxels) r of each lesion voxel with the lesion mean."""
    used = np.flatnonzero(masks.any(axis=0))
    columns = [np.searchsorted(used, np.flatnonzero(mask)) for mask in masks]
    correlations = [np.empty((len(subjects), len(c))) for c in columns]
    ids = batches.subject_ids
    for row, (subject, series) in enumerate(batches.iter_subjects(subjects, prefetch=1)):
        lesion_series = series[:, used].astype(np.float64)
        if not np.isfinite(lesion_series).all():
            raise NonFiniteError(
                f"Subject {subject} ({ids[subject]}) in {batches.locate_file(subject)} holds NaN "
                "or infinite values in lesion voxels; exclude this subject (subjects=...)."
            )
        for k, c in enumerate(columns):
            correlations[k][row] = _correlations_with_mean(lesion_series[:, c])
    return correlations


def seeds_from_correlations(
    masks: np.ndarray, correlations: Sequence[np.ndarray], percentile: float
) -> np.ndarray:
    """(n_lesions, n_voxels) PINI seed masks from `lesion_voxel_correlations` over all subjects."""
    seeds = np.zeros_like(masks, dtype=bool)
    for k, (mask, rows) in enumerate(zip(masks, correlations, strict=True)):
        seeds[k, np.flatnonzero(mask)[select_voxels(rows, percentile)]] = True
    return seeds


def pini_masks(
    masks: np.ndarray, batches: ConnectomeBatches, subjects: Sequence[int], percentile: float
) -> np.ndarray:
    """(n_lesions, n_voxels) PINI seed masks of (n_lesions, n_voxels) lesion masks."""
    correlations = lesion_voxel_correlations(masks, batches, subjects)
    return seeds_from_correlations(masks, correlations, percentile)
