"""The ridge solver against a brute-force numpy reference: k-fold selection over the raw trials and
a closed-form refit, for the primal and dual solves, banded ridge, every score and one penalty."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from neurotorch.errors import EncoderConfigError
from neurotorch.models.ridge import RidgeStatistics, fit_ridge, folds_of

PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)
RATIOS = (0.1, 1.0, 10.0)


def make_problem(n_images: int, n_features: int, n_targets: int = 23, seed: int = 0):
    """Trials of ``n_images`` images shown 1–4 times in shuffled order, features with offsets and
    unequal scales, targets a noisy linear map plus a baseline."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, n_features)) * rng.uniform(0.2, 5, n_features) + 3
    repeats = rng.integers(1, 5, n_images)
    image_of = rng.permutation(np.repeat(np.arange(n_images), repeats))
    x = images[image_of]
    weights = rng.normal(size=(n_features, n_targets)) / np.sqrt(n_features)
    y = x @ weights + rng.normal(0, 1, n_targets) + rng.normal(size=(len(x), n_targets)) * 2
    names = [f"img{i:03d}.jpg" for i in image_of]
    return x, y, names


def reference_fit(x, y, folds, penalties, bands, ratios, score, per_target=True):
    """Brute force: fit every fold's training trials in closed form, score its held-out trials,
    average over folds, pick the best, refit on every trial. Penalty of feature space ``s`` is
    ``p / γ_s × mean eigenvalue of its centred covariance over all trials``."""
    n_targets = y.shape[1]
    spaces = np.split(np.arange(x.shape[1]), np.cumsum(bands)[:-1])
    centred = x - x.mean(0)
    mean_eig = [np.trace(centred[:, s].T @ centred[:, s]) / len(s) for s in spaces]
    gammas = [(1.0, *rest) for rest in itertools.product(ratios, repeat=len(bands) - 1)]

    def closed_form(rows, lam):  # lam: (D,) penalty per feature, one target set
        xm, ym = x[rows].mean(0), y[rows].mean(0)
        xc, yc = x[rows] - xm, y[rows] - ym
        w = np.linalg.solve(xc.T @ xc + np.diag(lam), xc.T @ yc)
        return w, ym - xm @ w

    def penalty_vector(gamma, p):
        lam = np.empty(x.shape[1])
        for space, g, e in zip(spaces, gamma, mean_eig, strict=True):
            lam[space] = p / g * e
        return lam

    def fold_score(pred, truth):
        if score == "mse":
            return -((truth - pred) ** 2).mean(0)
        if score == "r2":
            return 1 - ((truth - pred) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
        return np.array([np.corrcoef(pred[:, v], truth[:, v])[0, 1] for v in range(n_targets)])

    candidates = [(g, p) for g in gammas for p in penalties]
    scores = np.zeros((len(candidates), n_targets))
    used = np.unique(folds)
    for c, (gamma, p) in enumerate(candidates):
        for k in used:
            w, b = closed_form(folds != k, penalty_vector(gamma, p))
            scores[c] += fold_score(x[folds == k] @ w + b, y[folds == k]) / len(used)
    best = scores.argmax(0) if per_target else np.full(n_targets, scores.mean(1).argmax())
    weight, intercept = np.zeros((x.shape[1], n_targets)), np.zeros(n_targets)
    everything = np.ones(len(x), dtype=bool)
    for v in range(n_targets):
        gamma, p = candidates[best[v]]
        w, b = closed_form(everything, penalty_vector(gamma, p))
        weight[:, v], intercept[v] = w[:, v], b[v]
    penalty = np.array([[candidates[c][1] / g for g in candidates[c][0]] for c in best]).T
    return weight, intercept, penalty


def neurotorch_fit(x, y, names, n_folds=5, batch=37, **kwargs):
    kwargs.setdefault("penalties", PENALTIES)
    stats = RidgeStatistics(x.shape[1], y.shape[1], n_folds=n_folds)
    folds = folds_of(names, n_folds)
    for start in range(0, len(x), batch):
        part = slice(start, start + batch)
        stats.update(torch.from_numpy(x[part]), torch.from_numpy(y[part]), folds[part])
    return fit_ridge(stats, **kwargs), folds.numpy()


def assert_matches_reference(x, y, names, bands=None, ratios=RATIOS, **kwargs):
    fit, folds = neurotorch_fit(x, y, names, bands=bands, band_ratios=ratios, **kwargs)  # fmt: skip
    weight, intercept, penalty = reference_fit(
        x, y, folds, PENALTIES, bands or [x.shape[1]], ratios, kwargs.get("score", "r"),
        kwargs.get("per_target", True),
    )  # fmt: skip
    np.testing.assert_array_equal(fit.penalty.numpy(), penalty)
    scale = np.abs(weight).max()
    np.testing.assert_allclose(fit.weight.numpy(), weight, rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(fit.intercept.numpy(), intercept, rtol=0, atol=1e-8 * np.abs(intercept).max())  # fmt: skip
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
    with pytest.raises(EncoderConfigError, match="score"):
        neurotorch_fit(x, y, names, score="accuracy")
    with pytest.raises(EncoderConfigError, match="do not add up"):
        neurotorch_fit(x, y, names, bands=[2, 2])
    with pytest.raises(EncoderConfigError, match="two folds"):
        neurotorch_fit(x, y, ["same.jpg"] * len(x))
    with pytest.raises(EncoderConfigError, match="dual solve needs the trials"):
        neurotorch_fit(*make_problem(n_images=61, n_features=3), solver="dual")
