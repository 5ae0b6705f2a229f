"""Shared by the encoder tests: a one-epoch ridge fit plus test, and the generator's ground truth."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import numpy as np

from neurotorch.models import LinearEncoder


def fit_and_test_encoder(
    datamodule: L.LightningDataModule, output_dir: Path, **encoder_args
) -> LinearEncoder:
    """Fit `LinearEncoder` for one epoch on ``datamodule`` and run its test split."""
    model = LinearEncoder(output_dir=str(output_dir), **encoder_args)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, datamodule)
    trainer.test(model, datamodule)
    return model


def ground_truth_rows(root: Path, subject: str, voxels: np.ndarray) -> dict[str, np.ndarray]:
    """Attainable r and signal/noise flags of ``voxels`` (flat grid indices) from ``_groundtruth``."""
    truth = np.load(root / "_groundtruth" / f"{subject}_encoding.npz")
    rows = np.searchsorted(truth["brain_index"], voxels)
    assert np.array_equal(truth["brain_index"][rows], voxels), "voxels outside the brain mask"
    return {"attainable_r": truth["attainable_r"][rows], "signal": truth["amplitude"][rows] > 0}


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


def split_arrays(datamodule, part: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (float64), betas (float64) and image names of a data module's split, in order."""
    dataset = getattr(datamodule, f"{part}_set")
    loader = datamodule._loader(dataset, shuffle=False)
    xs, ys, names = [], [], []
    for batch in loader:
        xs.append(batch["embedding"].double().numpy())
        ys.append(batch["betas"].double().numpy())
        names += batch["image_name"]
    return np.concatenate(xs), np.concatenate(ys), names


def true_test_ceiling(root: Path, datamodule, subject: str = "sub-01") -> dict[str, np.ndarray]:
    """Correlation of the generator's noise-free responses with the test trials, per voxel, and
    which voxels carry signal (the others have no defined ceiling)."""
    truth = np.load(root / "_groundtruth" / f"{subject}_encoding.npz")
    voxels = datamodule.voxel_table["voxel"].to_numpy()
    rows = np.searchsorted(truth["brain_index"], voxels)
    x, y, _ = split_arrays(datamodule, "test")
    signal_rows = np.searchsorted(truth["signal_rows"], rows).clip(
        max=len(truth["signal_rows"]) - 1
    )
    has_signal = truth["signal_rows"][signal_rows] == rows
    weights = truth["weights"][signal_rows].astype(np.float64)  # (V, D); rows without signal unused
    s = (x.astype(np.float32).astype(np.float64) @ weights.T) * truth["amplitude"][rows]
    s, yc = s - s.mean(0), y - y.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (s * yc).sum(0) / np.sqrt((s**2).sum(0) * (yc**2).sum(0))
    return {"ceiling_r": r, "signal": has_signal}
