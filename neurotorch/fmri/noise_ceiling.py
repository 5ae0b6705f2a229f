"""Noise ceilings from repeated presentations (the NSD ``ncsnr`` formula).

Betas are z-scored per session and voxel; the noise variance is the mean, over images shown more
than once, of the variance across repetitions (ddof=1); the signal variance is ``1 - noise``
(floored at 0); ``ncsnr = signal_sd / noise_sd``. The noise ceiling for responses averaged over
``n`` repetitions is ``100 * ncsnr**2 / (ncsnr**2 + 1/n)`` percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def zscore_sessions(betas: np.ndarray, sessions: Sequence) -> np.ndarray:
    """Z-score each voxel within each session (float64 result)."""
    out = np.empty(betas.shape, dtype=np.float64)
    session_of_row = np.asarray(sessions)
    for session in np.unique(session_of_row):
        rows = session_of_row == session
        block = betas[rows].astype(np.float64)
        sd = block.std(axis=0)
        out[rows] = (block - block.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return out


def ncsnr(zscored: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Noise-ceiling SNR per voxel from z-scored single-trial betas (n_trials, n_voxels).

    Only images with at least two trials contribute to the noise estimate; with none, NaN.
    """
    names, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    repeated = counts >= 2
    if not repeated.any():
        return np.full(zscored.shape[1], np.nan)
    sums = np.zeros((len(names), zscored.shape[1]))
    squares = np.zeros_like(sums)
    np.add.at(sums, inverse, zscored)
    np.add.at(squares, inverse, zscored**2)
    n = counts[repeated, None].astype(np.float64)
    variances = (squares[repeated] - sums[repeated] ** 2 / n) / (n - 1)
    return ncsnr_from_noise_variance(variances.mean(axis=0))


def ncsnr_from_noise_variance(noise_var: np.ndarray) -> np.ndarray:
    """ncsnr per voxel from the noise variance of z-scored betas (the mean, over repeated
    images, of the variance across their repetitions)."""
    signal_var = np.clip(1.0 - noise_var, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(signal_var) / np.sqrt(noise_var)


def noise_ceiling(snr: np.ndarray, n_reps: float | np.ndarray) -> np.ndarray:
    """Noise ceiling in percent for responses averaged over ``n_reps`` repetitions.

    ``n_reps`` may be an array of repetition counts of the test images, in which case the
    NSD generalisation ``1/n -> mean(1/n_i)`` is used.
    """
    inv_n = np.mean(1.0 / np.asarray(n_reps, dtype=np.float64))
    snr2 = np.asarray(snr, dtype=np.float64) ** 2
    with np.errstate(invalid="ignore"):
        return 100.0 * snr2 / (snr2 + inv_n)


def single_trial_ceiling_r(nc_percent: np.ndarray, n_reps: float) -> np.ndarray:
    """Highest correlation a model can reach with single-trial betas, from a noise ceiling.

    Inverts `noise_ceiling` (``ncsnr² = f / (n (1 - f))`` with ``f = nc / 100``) and returns
    ``sqrt(ncsnr² / (ncsnr² + 1))``.
    """
    f = np.clip(np.asarray(nc_percent, dtype=np.float64) / 100.0, 0.0, 1.0 - 1e-12)
    snr2 = f / (n_reps * (1.0 - f))
    return np.sqrt(snr2 / (snr2 + 1.0))
