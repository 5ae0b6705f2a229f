"""Sign-flip max-|t| FWER inference against independent computations.

* maps spanning several voxel blocks, with the strongest voxels in the first block, against
  scipy's one-sample t of every flipped map (a null that kept only one block's maximum fails);
* an exact enumeration of all 2^N sign vectors on a tiny problem, where the all-(+1) and
  all-(-1) vectors tie the observed maximum exactly and must be counted (one precision);
* ``network_map``'s FWER maps against np.corrcoef z maps and scipy with the same sign vectors;
* the seed of the sign flips is honoured.
"""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import stats

from neurotorch.connectome import network_map, permutation
from neurotorch.connectome.permutation import (
    block_width,
    fwe_p_values,
    permutation_max_t,
    permutation_t_max,
    sign_flips,
)
from neurotorch.connectome.writer import write_batch


def _scipy_null(z: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """(P, maps) max |t| over voxels of each flipped map, one scipy call per permutation."""
    z = z.astype(np.float64)
    return np.array(
        [
            np.abs(stats.ttest_1samp(s[:, None, None] * z, 0.0, axis=0).statistic).max(axis=1)
            for s in signs
        ]
    )


def _exact_p(abs_t: np.ndarray, null: np.ndarray) -> np.ndarray:
    """(1 + #{null >= |t|}) / (P + 1), counted voxel by voxel."""
    return (1 + (null[:, :, None] >= abs_t[None]).sum(axis=0)) / (len(null) + 1)


def test_null_spans_every_voxel_block(monkeypatch):
    """Several blocks per map (blocks made small so that the test is fast), the strongest effect
    in the first block and the second map's in the last: every permutation's maximum must come
    from all blocks."""
    monkeypatch.setattr(permutation, "BLOCK_ELEMENTS", 2**12)
    n_subjects, n_permutations = 6, 40
    n_voxels = 3 * block_width(n_subjects, n_permutations) + 123
    assert n_voxels > 3 * block_width(n_subjects, n_permutations)  # four blocks, the last short
    rng = np.random.default_rng(1)
    z = rng.standard_normal((n_subjects, 2, n_voxels)).astype(np.float32)
    z[:, 0, :50] += 2.5  # map 0: strong voxels in the first block only
    z[:, 1, -50:] += 2.5  # map 1: in the last block only
    signs = sign_flips(n_permutations, n_subjects, seed=3)
    observed, null = permutation_t_max(z, signs)
    expected_null = _scipy_null(z, signs.numpy())
    np.testing.assert_allclose(null, expected_null, rtol=1e-9)
    expected_t = np.abs(stats.ttest_1samp(z.astype(np.float64), 0.0, axis=0).statistic)
    np.testing.assert_allclose(observed, expected_t, rtol=1e-9)
    np.testing.assert_array_equal(permutation_max_t(z, signs), null)
    # where the maximum of each permutation lies: block 0 for map 0 in most permutations
    per_voxel = [
        np.abs(stats.ttest_1samp(s[:, None] * z[:, 0].astype(np.float64), 0.0, axis=0).statistic)
        for s in signs.numpy()[:5]
    ]
    assert any(np.argmax(t) < block_width(n_subjects, n_permutations) for t in per_voxel)


def test_exact_enumeration_counts_the_ties_of_the_observed_maximum():
    """All 2^6 sign vectors: the identity and its negation give exactly the observed maximum."""
    n_subjects = 6
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((n_subjects, 3, 257)) + np.linspace(0, 1.8, 257)).astype(np.float32)
    z[:, 2] = (rng.standard_normal((n_subjects, 257)) * 1e-3 + 6.0).astype(np.float32)
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=n_subjects)))
    observed, null = permutation_t_max(z, signs)
    p = fwe_p_values(observed, null)
    t64 = np.abs(stats.ttest_1samp(z.astype(np.float64), 0.0, axis=0).statistic)
    expected_null = _scipy_null(z, signs.numpy())
    # map 2's t of ~4e4 loses digits to the cancellation in sum(z^2) - n mean^2, the same in the
    # observed and the null row, so its ties stay exact
    np.testing.assert_allclose(null, expected_null, rtol=1e-7)
    for k in range(3):
        peak = int(np.argmax(observed[k]))
        identity = [i for i, s in enumerate(signs.tolist()) if len(set(s)) == 1]
        assert len(identity) == 2
        assert all(null[i, k] == observed[k, peak] for i in identity)  # exact ties, one precision
        assert p[k, peak] == _exact_p(t64[k : k + 1], expected_null[:, k : k + 1])[0, peak]
    np.testing.assert_array_equal(p, _exact_p(observed, null))
    assert p.min() >= 3 / 65  # the observed data and its two sign-identical vectors


def _write_connectome(folder, series, affine, shape):
    folder.mkdir()
    indices = np.argwhere(np.ones(shape, dtype=bool))
    write_batch(
        folder / "p_chunk_000.h5",
        iter(series),
        [f"sub-{s:02d}" for s in range(len(series))],
        mask_indices=indices,
        mask_affine=affine,
        mask_shape=shape,
        n_timepoints=series.shape[1],
    )
    return folder


def _reference_z(series, columns):
    z = []
    for x in series.astype(np.float64):
        seed = x[:, columns].mean(axis=1)
        r = np.array([np.corrcoef(seed, x[:, v])[0, 1] for v in range(x.shape[1])])
        z.append(np.arctanh(np.clip(r, -(1 - 2.0**-24), 1 - 2.0**-24)))
    return np.array(z)


def test_network_map_fwer_matches_an_independent_computation(tmp_path):
    """300 permutations of 6 subjects: every one of the 64 sign vectors occurs, the identity
    among them, so the peak voxel of each of five lesions counts its exact ties."""
    shape, affine = (4, 4, 3), np.diag([3.0, 3.0, 3.0, 1.0])
    rng = np.random.default_rng(5)
    n_voxels = int(np.prod(shape))
    shared = rng.standard_normal((6, 25, 1))
    series = shared * rng.uniform(-1, 1, n_voxels) + rng.standard_normal((6, 25, n_voxels))
    folder = _write_connectome(tmp_path / "c", series.astype(np.float32), affine, shape)
    lesions = {f"les-{k}": np.isin(np.arange(n_voxels), [k, k + 9]) for k in range(0, 40, 8)}
    result = network_map(lesions, folder, n_permutations=300, seed=11)
    signs = sign_flips(300, 6, seed=11).numpy()
    assert any(len(set(s)) == 1 for s in signs.tolist())
    z = np.stack(
        [_reference_z(series.astype(np.float32), np.flatnonzero(m)) for m in lesions.values()], 1
    )
    null = _scipy_null(z, signs)
    np.testing.assert_allclose(result.max_t_null, null, rtol=1e-4)
    t = np.abs(stats.ttest_1samp(z, 0.0, axis=0).statistic)
    np.testing.assert_array_equal(result.p_fwe, _exact_p(t, null))


def test_sign_flips_honour_their_seed(tmp_path):
    a, again, b = sign_flips(50, 9, seed=1), sign_flips(50, 9, seed=1), sign_flips(50, 9, seed=2)
    assert torch.equal(a, again) and not torch.equal(a, b)
    assert set(torch.unique(a).tolist()) == {-1.0, 1.0}
    assert abs(float(a.mean())) < 0.2  # about as many +1 as -1
    shape, affine = (3, 3, 2), np.eye(4)
    rng = np.random.default_rng(0)
    folder = _write_connectome(
        tmp_path / "c", rng.standard_normal((7, 15, 18)).astype(np.float32), affine, shape
    )
    image = nib.Nifti1Image(np.pad(np.ones((1, 1, 1), np.uint8), ((0, 2), (0, 2), (0, 1))), affine)
    first = network_map({"les": image}, folder, n_permutations=40, seed=1)
    second = network_map({"les": image}, folder, n_permutations=40, seed=2)
    assert not np.array_equal(first.max_t_null, second.max_t_null)
    assert first.provenance["parameters"]["seed"] == 1


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_sign_flips_refuse_a_bad_count(bad):
    from neurotorch.errors import ParameterError

    with pytest.raises(ParameterError, match="n_permutations"):
        sign_flips(bad, 5, seed=0)
