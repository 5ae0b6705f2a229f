"""A brute-force numpy reference for the ridge tests: k-fold selection over the raw trials and
closed-form refits (no torch, no neurotorch), and the synthetic problems they are run on."""

from __future__ import annotations

import itertools

import numpy as np


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
        pred, truth = pred - pred.mean(0), truth - truth.mean(0)
        return (pred * truth).sum(0) / np.sqrt((pred**2).sum(0) * (truth**2).sum(0))

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
    for c in np.unique(best):
        targets = best == c
        w, b = closed_form(everything, penalty_vector(*candidates[c]))
        weight[:, targets], intercept[targets] = w[:, targets], b[targets]
    penalty = np.array([[candidates[c][1] / g for g in candidates[c][0]] for c in best]).T
    return weight, intercept, penalty
