"""The ridge fit in voxel chunks: chunked statistics (in memory or in a scratch file, trials added
in several buffers) give the fit of the unchunked statistics and of the brute-force numpy
reference, for the primal and dual solves, banded ridge and one penalty for all; float32
cross-products agree with float64 within the documented tolerance on realistic scales; rebasing
the sums on another shift is exact; the scratch file never shows in the folder and is gone when
the statistics are closed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ridge_reference import make_problem, reference_fit

from neurotorch.models.cross_products import scratch_dir
from neurotorch.models.ridge import fit_ridge, folds_of
from neurotorch.models.ridge_statistics import RidgeStatistics

PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)
RATIOS = (0.1, 1.0, 10.0)
N_FOLDS = 5
# 97 targets in chunks of 13: seven full chunks and a remainder of 6; trials added 29 at a time
N_TARGETS, CHUNK, BUFFER = 97, 13, 29


def statistics(x, y, names, batch=17, **settings) -> RidgeStatistics:
    stats = RidgeStatistics(x.shape[1], y.shape[1], N_FOLDS, **settings)
    folds = folds_of(names, N_FOLDS)
    for start in range(0, len(x), batch):
        part = slice(start, start + batch)
        stats.update(torch.from_numpy(x[part]), torch.from_numpy(y[part]), folds[part])
    return stats


def chunked(x, y, names, **settings) -> RidgeStatistics:
    """Chunks of 13 targets in a scratch file; more trials than features (primal) are added in
    buffers of 29, fewer are all kept for the dual solve."""
    buffer = BUFFER if len(x) > x.shape[1] else None
    return statistics(
        x, y, names, voxel_chunk=CHUNK, on_disk=True, buffer_trials=buffer, **settings
    )


def all_cross_products(stats: RidgeStatistics) -> np.ndarray:
    return np.concatenate([stats.xty.read(j).numpy() for j in range(len(stats.chunks))], axis=2)


@pytest.mark.parametrize(
    "n_images, n_features, fit_settings, solver",
    [
        (61, 11, {"score": "r"}, "primal"),
        (61, 47, {"score": "r2"}, "primal"),  # fewer trials per fold than features
        (61, 11, {"score": "r2", "per_target": False}, "primal"),
        (47, 13, {"score": "mse", "bands": [5, 8], "band_ratios": RATIOS}, "primal"),
        (19, 53, {"score": "r2"}, "dual"),
        (11, 37, {"score": "r", "bands": [5, 32], "band_ratios": RATIOS}, "dual"),
    ],
    ids=["primal", "primal-wide", "primal-one-penalty", "primal-banded", "dual", "dual-banded"],
)
def test_chunked_fit_equals_the_in_memory_fit_and_the_reference(
    n_images, n_features, fit_settings, solver
):
    x, y, names = make_problem(n_images=n_images, n_features=n_features, n_targets=N_TARGETS)
    whole = statistics(x, y, names)
    parts = chunked(x, y, names)
    assert len(parts.chunks) == 8 and parts.chunks[-1] == slice(91, 97) and parts.xty.on_disk
    assert (len(x) > 2 * BUFFER) == (solver == "primal")  # primal: several buffers
    settings = {"penalties": PENALTIES, **fit_settings}
    expected, got = fit_ridge(whole, **settings), fit_ridge(parts, **settings)
    assert (expected.solver, got.solver) == (solver, solver)
    torch.testing.assert_close(got.penalty, expected.penalty, rtol=0, atol=0)
    torch.testing.assert_close(got.cv_score, expected.cv_score, rtol=1e-8, atol=1e-10)
    scale = float(expected.weight.abs().max())
    torch.testing.assert_close(got.weight, expected.weight, rtol=0, atol=1e-9 * scale)
    torch.testing.assert_close(got.intercept, expected.intercept, rtol=0, atol=1e-9 * scale)
    # and both equal the brute-force reference over the raw trials
    bands = fit_settings.get("bands", [n_features])
    weight, intercept, penalty = reference_fit(
        x,
        y,
        folds_of(names, N_FOLDS).numpy(),
        PENALTIES,
        bands,
        fit_settings.get("band_ratios", ()),
        fit_settings["score"],
        fit_settings.get("per_target", True),
    )
    np.testing.assert_array_equal(got.penalty.numpy(), penalty)
    if fit_settings.get("per_target", True):
        assert np.unique(penalty, axis=1).shape[1] > 1, "every target chose the same penalties"
    np.testing.assert_allclose(got.weight.numpy(), weight, rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(got.intercept.numpy(), intercept, rtol=0, atol=1e-8 * scale)


def test_chunked_sums_equal_numpy_sums_over_the_raw_trials():
    x, y, names = make_problem(n_images=61, n_features=11, n_targets=N_TARGETS)
    stats = chunked(x, y, names)
    stats.flush()
    folds = folds_of(names, N_FOLDS).numpy()
    a, b = stats.shift_x.numpy(), stats.shift_y.numpy()
    for k in range(N_FOLDS):
        xk, yk = x[folds == k] - a, y[folds == k] - b
        np.testing.assert_allclose(all_cross_products(stats)[k], xk.T @ yk, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(stats.sum_yy[k].numpy(), (yk**2).sum(0), rtol=1e-12)
        np.testing.assert_allclose(stats.xtx[k].numpy(), xk.T @ xk, rtol=1e-12, atol=1e-9)


def test_rebase_on_another_shift_is_exact():
    x, y, names = make_problem(n_images=43, n_features=7, n_targets=N_TARGETS, seed=4)
    stats = chunked(x, y, names)
    rng = np.random.default_rng(0)
    a, b = rng.normal(3, 2, x.shape[1]), rng.normal(-1, 5, y.shape[1])
    stats.rebase(torch.from_numpy(a), torch.from_numpy(b))
    folds = folds_of(names, N_FOLDS).numpy()
    for k in range(N_FOLDS):
        xk, yk = x[folds == k] - a, y[folds == k] - b
        np.testing.assert_allclose(all_cross_products(stats)[k], xk.T @ yk, rtol=1e-10, atol=1e-8)
        np.testing.assert_allclose(stats.sum_x[k].numpy(), xk.sum(0), rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(stats.sum_y[k].numpy(), yk.sum(0), rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(stats.sum_yy[k].numpy(), (yk**2).sum(0), rtol=1e-10)
        np.testing.assert_allclose(stats.xtx[k].numpy(), xk.T @ xk, rtol=1e-10, atol=1e-8)


def realistic_problem(baseline: float, seed: int = 0):
    """CLIP-like features (unit-norm embeddings with a shared offset, stored as float16) of 500
    images shown twice; float32 betas with per-voxel baselines of about ``baseline``, noise SD 2
    and signal amplitudes 0–1 (single-trial r up to about 0.45), 40 % noise voxels."""
    rng = np.random.default_rng(seed)
    n_images, n_features, n_voxels = 500, 128, 300
    embedding = rng.normal(size=(n_images, n_features)) + 0.8 * rng.normal(size=n_features)
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    embedding = embedding.astype(np.float16).astype(np.float64)
    image_of = rng.permutation(np.repeat(np.arange(n_images), 2))
    x = embedding[image_of]
    weights = rng.normal(size=(n_features, n_voxels)) * (rng.uniform(size=n_voxels) < 0.6)
    signal = x @ weights
    signal /= signal.std(0) + 1e-12
    amplitude = rng.uniform(0, 1, n_voxels)
    noise = rng.normal(size=(len(x), n_voxels)) * 2.0
    y = baseline * rng.normal(1, 1, n_voxels) + amplitude * signal + noise
    return x, y.astype(np.float32), [f"img{i}.jpg" for i in image_of]


@pytest.mark.parametrize("baseline", [2.0, 1000.0], ids=["percent-change", "raw-scale"])
def test_float32_cross_products_keep_the_penalties_and_the_weights(baseline):
    """The documented tolerance: the same penalties, weights within 1e-5 of each voxel's largest
    weight, intercepts within 1e-5 of the betas' SD, cross-validation scores within 1e-6."""
    x, y, names = realistic_problem(baseline)
    exact = fit_ridge(statistics(x, y, names, batch=64, keep_rows=False), score="r2")
    single = statistics(x, y, names, batch=64, keep_rows=False, precision="float32")
    assert single.xty.dtype == torch.float32
    approx = fit_ridge(single, score="r2")
    assert approx.weight.dtype == torch.float32 and exact.solver == approx.solver == "primal"
    assert len(exact.penalty.unique()) > 3
    torch.testing.assert_close(approx.penalty, exact.penalty, rtol=0, atol=0)
    w64, w32 = exact.weight.numpy(), approx.weight.numpy().astype(np.float64)
    assert (np.abs(w32 - w64).max(0) <= 1e-5 * np.abs(w64).max(0)).all()
    intercept_error = np.abs(approx.intercept.numpy() - exact.intercept.numpy())
    assert (intercept_error <= 1e-5 * y.std(0)).all()
    assert float((approx.cv_score - exact.cv_score).abs().max()) <= 1e-6


def scratch_files() -> list[str]:
    """Open files of this process in the scratch folder (an unnamed file shows as deleted)."""
    folder = str(scratch_dir())
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(folder):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_the_scratch_file_is_unnamed_and_gone_when_closed():
    x, y, names = make_problem(n_images=61, n_features=11, n_targets=N_TARGETS)
    before = scratch_files()
    stats = chunked(x, y, names)
    opened = [f for f in scratch_files() if f not in before]
    assert len(opened) == 1 and opened[0].endswith("(deleted)")
    assert not any(scratch_dir().iterdir()), "the scratch file shows in the folder"
    fit_ridge(stats, penalties=PENALTIES)
    stats.close()
    assert scratch_files() == before
