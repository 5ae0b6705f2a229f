"""The ridge solver against a brute-force numpy reference: k-fold selection over the raw trials and
a closed-form refit, for the primal and dual solves, banded ridge, every score and one penalty."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ridge_reference import make_problem, reference_fit

from neurotorch.errors import EncoderConfigError, ParameterError
from neurotorch.models.ridge import fit_ridge, folds_of
from neurotorch.models.ridge_statistics import RidgeStatistics

PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)
RATIOS = (0.1, 1.0, 10.0)


def neurotorch_fit(x, y, names, n_folds=5, batch=37, **kwargs):
    kwargs.setdefault("penalties", PENALTIES)
    stats = RidgeStatistics(x.shape[1], y.shape[1], n_folds=n_folds)
    folds = folds_of(names, n_folds)
    for start in range(0, len(x), batch):
        part = slice(start, start + batch)
        stats.update(torch.from_numpy(x[part]), torch.from_numpy(y[part]), folds[part])
    return fit_ridge(stats, **kwargs), folds.numpy()


def assert_matches_reference(x, y, names, bands=None, ratios=RATIOS, **kwargs):
    fit, folds = neurotorch_fit(x, y, names, bands=bands, band_ratios=ratios, **kwargs)
    weight, intercept, penalty = reference_fit(
        x,
        y,
        folds,
        PENALTIES,
        bands or [x.shape[1]],
        ratios,
        kwargs.get("score", "r"),
        kwargs.get("per_target", True),
    )
    np.testing.assert_array_equal(fit.penalty.numpy(), penalty)
    scale = np.abs(weight).max()
    np.testing.assert_allclose(fit.weight.numpy(), weight, rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(
        fit.intercept.numpy(), intercept, rtol=0, atol=1e-8 * np.abs(intercept).max()
    )
    return fit


@pytest.mark.parametrize("score", ["r", "r2", "mse"])
def test_primal_matches_brute_force_cv_and_closed_form(score):
    x, y, names = make_problem(n_images=61, n_features=11)
    fit = assert_matches_reference(x, y, names, score=score)
    assert fit.solver == "primal"
    assert len(set(fit.penalty[0].tolist())) > 1, "every target chose the same penalty"


@pytest.mark.parametrize("score", ["r", "r2"])
def test_dual_matches_brute_force_cv_and_closed_form(score):
    x, y, names = make_problem(n_images=19, n_features=53)
    assert len(x) < x.shape[1]
    fit = assert_matches_reference(x, y, names, score=score)
    assert fit.solver == "dual"


def test_primal_and_dual_agree_when_both_apply():
    x, y, names = make_problem(n_images=13, n_features=41)
    dual, _ = neurotorch_fit(x, y, names, solver="dual")
    primal, _ = neurotorch_fit(x, y, names, solver="primal")
    assert (dual.solver, primal.solver) == ("dual", "primal")
    torch.testing.assert_close(dual.penalty, primal.penalty, rtol=0, atol=0)
    scale = float(primal.weight.abs().max())
    torch.testing.assert_close(dual.weight, primal.weight, rtol=0, atol=1e-9 * scale)


@pytest.mark.parametrize("n_images, n_features", [(47, 13), (11, 37)], ids=["primal", "dual"])
def test_banded_ridge_matches_per_space_penalties(n_images, n_features):
    x, y, names = make_problem(n_images=n_images, n_features=n_features, seed=1)
    x[:, 5:] *= 40  # the second space on another scale
    fit = assert_matches_reference(x, y, names, bands=[5, n_features - 5])
    assert fit.penalty.shape == (2, y.shape[1])
    assert (fit.penalty[0] != fit.penalty[1]).any(), "no target weighted the spaces unequally"


def test_one_penalty_for_every_target():
    x, y, names = make_problem(n_images=43, n_features=7, seed=2)
    fit = assert_matches_reference(x, y, names, score="r2", per_target=False)
    assert len(set(fit.penalty.flatten().tolist())) == 1


@pytest.mark.parametrize("score", ["r2"])  # with "r" this problem's best penalty is the first
def test_a_constant_target_does_not_choose_the_shared_penalty(score):
    """A constant target (a voxel NaN in every trial, read as zeros) has no score for any
    penalty; the shared penalty is the brute-force choice over the other targets, and the
    constant target is fitted with it (weights 0, intercept its value)."""
    x, y, names = make_problem(n_images=43, n_features=7, seed=2)
    with_constant = np.column_stack([y, np.full(len(y), 3.0)])
    fit, folds = neurotorch_fit(x, with_constant, names, score=score, per_target=False)
    _, _, penalty = reference_fit(
        x, y, folds, PENALTIES, [x.shape[1]], RATIOS, score, per_target=False
    )
    assert penalty[0, 0] != PENALTIES[0]  # else the fallback to the first could pass unseen
    np.testing.assert_array_equal(fit.penalty.numpy(), np.full((1, y.shape[1] + 1), penalty[0, 0]))
    np.testing.assert_allclose(fit.weight.numpy()[:, -1], 0, atol=1e-10)
    np.testing.assert_allclose(fit.intercept.numpy()[-1], 3.0, rtol=1e-12)


def test_held_out_predictions_are_unbiased_and_as_good_as_the_reference():
    x, y, names = make_problem(n_images=211, n_features=11, seed=3)
    train, held = slice(0, 300), slice(300, None)
    fit, folds = neurotorch_fit(x[train], y[train], names[train])
    weight, intercept, _ = reference_fit(x[train], y[train], folds, PENALTIES, [11], [], "r")
    residual = y[held] - (x[held] @ fit.weight.numpy() + fit.intercept.numpy())
    reference = y[held] - (x[held] @ weight + intercept)
    # noise SD 2: each target's mean residual is within 4 standard errors (held-out and fit) of 0
    assert np.abs(residual.mean(0)).max() < 4 * 2 * np.sqrt(1 / len(residual) + 1 / 300)
    np.testing.assert_allclose((residual**2).mean(0), (reference**2).mean(0), rtol=1e-9)


def test_folds_group_repeats_of_an_image():
    names = [f"img{i % 97}.jpg" for i in range(400)]
    folds = folds_of(names, 5).numpy()
    for name in set(names):
        assert len({folds[i] for i, n in enumerate(names) if n == name}) == 1
    assert np.bincount(folds, minlength=5).min() > 40


def test_named_errors():
    x, y, names = make_problem(n_images=13, n_features=5)
    with pytest.raises(ParameterError, match="score"):
        neurotorch_fit(x, y, names, score="accuracy")
    with pytest.raises(EncoderConfigError, match="do not add up"):
        neurotorch_fit(x, y, names, bands=[2, 2])
    with pytest.raises(EncoderConfigError, match="two folds"):
        neurotorch_fit(x, y, ["same.jpg"] * len(x))
    with pytest.raises(EncoderConfigError, match="dual solve needs the trials"):
        neurotorch_fit(*make_problem(n_images=61, n_features=3), solver="dual")
