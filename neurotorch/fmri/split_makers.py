"""Generate the four split families of a LAION-fMRI stimulus pool and write them as split files.

`make_splits` builds, for one pool of image names and their (CLIP) embeddings:

* ``random_0 .. random_{n-1}``: uniform 80/20 splits, ``random_r`` drawn with seed ``seed + r``;
* ``cluster_k5_0 .. cluster_k5_4``: k-means (k = 5, Lloyd's algorithm with k-means++ starts) on the
  L2-normalised embeddings; ``cluster_k5_j`` holds out cluster j, clusters numbered by size,
  largest first;
* ``tau``: an 80/20 split whose test images are far from every other image of the pool (nearest
  neighbour cosine distance above a threshold tau) while the train and test embedding
  distributions stay as close as those of a random split (squared MMD with a linear kernel, i.e.
  the squared distance of the two mean embeddings, no larger than the mean over random splits);
* ``ood``: train = the whole pool, test = the out-of-distribution images.

`write_split_files` writes them as ``<folder>/<pool>/<name>.json`` in the schema that
`neurotorch.fmri.splits` reads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from neurotorch._options import as_names
from neurotorch.config import show_progress
from neurotorch.errors import ParameterError, ShapeMismatchError, UnsafePathError
from neurotorch.fmri import layout
from neurotorch.fmri.splits import validate_split_dict
from neurotorch.io.atomic import named_write_errors, write_json

TAU_TARGET_RATIO = 1.0
TAU_PERCENTILE_STEP = 5
_N_BASELINE_DRAWS = 64
_N_START_DRAWS = 64
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def split_dict(
    name: str,
    pool: str,
    splitter: str,
    params: dict[str, Any],
    train_ids: Sequence[str],
    test_ids: Sequence[str],
) -> dict[str, Any]:
    """One split in the file schema, with a single variant (``variant_id=0``)."""
    return {
        "name": name,
        "pool": pool,
        "splitter": splitter,
        "params": params,
        "n_train": len(train_ids),
        "n_test": len(test_ids),
        "variants": [{"variant_id": 0, "train_ids": list(train_ids), "test_ids": list(test_ids)}],
    }


def _holdout_dict(
    name: str, pool: str, splitter: str, params: dict[str, Any], names: np.ndarray, test: np.ndarray
) -> dict[str, Any]:
    return split_dict(
        name,
        pool,
        splitter,
        params=params,
        train_ids=names[~test].tolist(),
        test_ids=names[test].tolist(),
    )


def n_test_images(n_images: int, test_fraction: float) -> int:
    """Test-set size of an 80/20-style split: ``test_fraction * n_images`` rounded half up."""
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(
            f"test_fraction must lie strictly between 0 and 1, got {test_fraction}."
        )
    n_test = int(np.floor(test_fraction * n_images + 0.5))
    if not 0 < n_test < n_images:
        raise ParameterError(
            f"test_fraction={test_fraction} of {n_images} images leaves an empty train or test "
            "set; give more images or another fraction."
        )
    return n_test


def normalise_rows(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64); `ValueError` for non-finite or all-zero rows."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        raise ParameterError(
            f"{int(bad.sum())} embedding rows are all zero or not finite (first at row "
            f"{int(np.flatnonzero(bad)[0])}); fix or drop those images."
        )
    return x / norms


# ── random ─────────────────────────────────────────────────────────────────────────────────────


def random_test_mask(n_images: int, n_test: int, seed: int) -> np.ndarray:
    """Boolean mask of ``n_test`` images drawn uniformly without replacement."""
    mask = np.zeros(n_images, dtype=bool)
    mask[np.random.default_rng(seed).choice(n_images, n_test, replace=False)] = True
    return mask


# ── cluster ────────────────────────────────────────────────────────────────────────────────────


def _squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return (x * x).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centroids = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.maximum(_squared_distances(x, np.asarray(centroids)).min(1), 0.0)
        total = d2.sum()
        index = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
        centroids.append(x[index])
    return np.asarray(centroids)


def _lloyd(
    x: np.ndarray, centroids: np.ndarray, max_iter: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd iterations until the assignment no longer changes; returns labels, centroids, inertia."""
    k = len(centroids)
    labels = None
    for _ in range(max_iter):
        d2 = _squared_distances(x, centroids)
        new_labels = d2.argmin(1)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        centroids = centroids.copy()
        for j in range(k):
            members = labels == j
            if members.any():
                centroids[j] = x[members].mean(0)
            else:  # an empty cluster restarts at the point worst served by the others
                centroids[j] = x[d2[np.arange(len(x)), labels].argmax()]
    assert labels is not None, "max_iter >= 1"
    d2 = _squared_distances(x, centroids)
    return labels, centroids, float(d2[np.arange(len(x)), labels].sum())


def kmeans_labels(
    x: np.ndarray, k: int, seed: int, n_init: int = 10, max_iter: int = 300
) -> np.ndarray:
    """Cluster labels of the rows of ``x`` by k-means (best of ``n_init`` k-means++ starts).

    Every row is nearest (Euclidean) to the mean of its own cluster. Clusters are numbered by
    size, largest first (ties: by their first member).
    """
    if len(x) < k:
        raise ParameterError(f"k-means with k={k} needs at least {k} images, got {len(x)}.")
    rng = np.random.default_rng(seed)
    best_labels, best_inertia = None, np.inf
    for _ in range(n_init):
        labels, _, inertia = _lloyd(x, _kmeans_plus_plus(x, k, rng), max_iter)
        if inertia < best_inertia and np.unique(labels).size == k:
            best_labels, best_inertia = labels, inertia
    if best_labels is None:
        raise ParameterError(
            f"k-means found fewer than {k} distinct clusters; are the embeddings constant?"
        )
    sizes = np.bincount(best_labels, minlength=k)
    first = np.array([np.flatnonzero(best_labels == j)[0] for j in range(k)])
    order = np.lexsort((first, -sizes))
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    return relabel[best_labels]


# ── tau ────────────────────────────────────────────────────────────────────────────────────────


def nearest_neighbour_distance(x: np.ndarray) -> np.ndarray:
    """Cosine distance of every row of unit-length ``x`` to its nearest other row."""
    dist = 1.0 - x @ x.T
    np.fill_diagonal(dist, np.inf)
    return dist.min(1)


def mean_embedding_mmd2(x: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Squared MMD (linear kernel) between test and train rows, for one mask or a stack of masks."""
    masks = np.atleast_2d(test).astype(np.float64)
    n_test = masks.sum(1, keepdims=True)
    sum_test = masks @ x
    diff = sum_test / n_test - (x.sum(0) - sum_test) / (len(x) - n_test)
    result = (diff * diff).sum(1)
    return result if np.ndim(test) == 2 else result[0]


def _mmd_matched_subset(
    x: np.ndarray,
    gram: np.ndarray,
    feasible: np.ndarray,
    n_test: int,
    target_mmd2: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """A test set of ``n_test`` feasible images with a small squared MMD.

    Starts from the best of several random draws, then makes the swap (one test image out, one
    feasible image in) that lowers the MMD most, until the MMD is below ``target_mmd2`` or no swap
    lowers it. The swap gain comes from the Gram matrix: with ``c = 1/m + 1/(n-m)`` and
    ``h_j = diff · x_j``, swapping i for j changes the MMD by ``2c(h_j - h_i) + c²|x_j - x_i|²``.
    """
    n = len(x)
    draws = np.zeros((_N_START_DRAWS, n), dtype=bool)
    for row in draws:
        row[rng.choice(feasible, n_test, replace=False)] = True
    test = draws[int(np.argmin(mean_embedding_mmd2(x, draws)))].copy()
    mmd2 = float(mean_embedding_mmd2(x, test))
    c = 1.0 / n_test + 1.0 / (n - n_test)
    row_sums = gram.sum(0)
    test_sums = gram[test].sum(0)
    sq_norms = np.diag(gram)
    for _ in range(2 * n_test):
        if mmd2 <= target_mmd2:
            break
        inside = np.flatnonzero(test)
        outside = feasible[~test[feasible]]
        if outside.size == 0:
            break
        h = c * test_sums - row_sums / (n - n_test)
        delta = 2.0 * c * (h[outside][None, :] - h[inside][:, None]) + c * c * (
            sq_norms[inside][:, None]
            + sq_norms[outside][None, :]
            - 2.0 * gram[np.ix_(inside, outside)]
        )
        best = np.unravel_index(int(np.argmin(delta)), delta.shape)
        if delta[best] >= -1e-15:
            break
        out_index, in_index = inside[best[0]], outside[best[1]]
        test[out_index], test[in_index] = False, True
        test_sums += gram[in_index] - gram[out_index]
        mmd2 += float(delta[best])
    return test, float(mean_embedding_mmd2(x, test))


def tau_test_mask(
    x: np.ndarray,
    n_test: int,
    seed: int,
    target_ratio: float = TAU_TARGET_RATIO,
    percentile_step: float = TAU_PERCENTILE_STEP,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Test mask of the tau split of unit-length embeddings ``x``, and how it was chosen.

    For thresholds tau at percentiles of the nearest-neighbour distance (highest first), the test
    set is drawn from the images whose nearest neighbour lies farther than tau and tuned to an MMD
    no larger than ``target_ratio`` times the mean MMD of random splits. The highest tau that
    reaches it wins; if none does, the candidate with the smallest MMD.
    """
    n = len(x)
    rng = np.random.default_rng(seed)
    gram = x @ x.T
    lonely = nearest_neighbour_distance(x)
    draw_seeds = rng.integers(2**32, size=_N_BASELINE_DRAWS)
    baseline_masks = np.stack([random_test_mask(n, n_test, int(s)) for s in draw_seeds])
    baseline = float(mean_embedding_mmd2(x, baseline_masks).mean())
    target = target_ratio * baseline
    candidates = []
    top = 100.0 * (1.0 - n_test / n)
    for percentile in np.arange(0.0, top + 1e-9, percentile_step)[::-1]:
        tau = float(np.quantile(lonely, percentile / 100.0))
        feasible = np.flatnonzero(lonely > tau)
        if feasible.size < n_test:
            continue
        test, mmd2 = _mmd_matched_subset(
            x, gram, feasible, n_test=n_test, target_mmd2=target, rng=rng
        )
        candidates.append((mmd2, test, tau, float(percentile), feasible.size))
        if mmd2 <= target:
            break
    if not candidates:
        raise ParameterError("No tau threshold leaves enough isolated images; lower test_fraction.")
    matched = candidates[-1][0] <= target
    mmd2, test, tau, percentile, n_feasible = (
        candidates[-1] if matched else min(candidates, key=lambda row: row[0])
    )
    selection = {
        "criterion": "highest_tau_mmd_matched",
        "target_ratio_x_random": float(target_ratio),
        "tau": tau,
        "percentile": percentile,
        "n_feasible": int(n_feasible),
        "mmd2_mean": mmd2,
        "random_baseline_mmd2": baseline,
        "ratio_to_random": mmd2 / baseline if baseline > 0 else float("inf"),
    }
    return test, selection


# ── ood ────────────────────────────────────────────────────────────────────────────────────────


def _ood_types_present(ood_names: Iterable[str]) -> list[str]:
    kinds = {}
    for image in ood_names:
        kind = layout.ood_type(image)
        if kind is None:
            raise ParameterError(
                f"OOD image {image!r} does not name an OOD type (expected '..._OOD_<type>_...' "
                f"with a type in {list(layout.OOD_TYPES)})."
            )
        kinds[kind] = True
    return [kind for kind in layout.OOD_TYPES if kind in kinds]


# ── all families ───────────────────────────────────────────────────────────────────────────────


def make_splits(
    image_names: Sequence[str],
    embeddings: np.ndarray,
    *,
    pool: str,
    ood_names: Iterable[str] = (),
    n_random: int = 5,
    k: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, dict[str, Any]]:
    """All split families of one pool, as file-schema dicts keyed by split name.

    Parameters
    ----------
    image_names
        The pool's regular (non-OOD) images (a string is one image). Their order does not matter:
        images are sorted by name first, so the result depends only on the set of images, the
        embeddings and the seed.
    embeddings
        ``(n_images, dim)`` array, row i for ``image_names[i]`` (CLIP embeddings for the official
        recipe); used after scaling each row to unit length.
    pool
        Pool id written into the files: ``"shared"`` or a subject such as ``"sub-01"``.
    ood_names
        Out-of-distribution images, the test set of the ``ood`` split (no ``ood`` split if empty).
    n_random
        Number of random splits, ``random_0 .. random_{n_random-1}``.
    k
        Number of k-means clusters, giving ``cluster_k{k}_0 .. cluster_k{k}_{k-1}``.
    test_fraction
        Test share of the random and tau splits (``n_test`` = fraction × n, rounded half up).
    seed
        Base seed: ``random_r`` uses ``seed + r``; k-means and tau use ``seed``.
    progress
        Show a progress bar (``None``: `neurotorch.config.show_progress`).

    Returns
    -------
    dict
        ``{name: split}`` in the order random, cluster, tau, ood.
    """
    names = np.asarray(as_names("image_names", image_names), dtype=object)
    x = np.asarray(embeddings)
    if x.ndim != 2 or len(x) != len(names):
        raise ShapeMismatchError(
            f"embeddings have shape {x.shape} but there are {len(names)} image names; "
            "pass one embedding row per image."
        )
    if len(set(names)) != len(names):
        raise ParameterError("image_names lists some images more than once; pass each image once.")
    ood = sorted(set(as_names("ood_names", ood_names, allow_empty=True)))
    clash = sorted(set(ood) & set(names))
    if clash:
        raise ParameterError(f"{len(clash)} OOD images are also pool images, e.g. {clash[:3]}.")
    ood_kinds = _ood_types_present(ood)
    if not _SAFE_COMPONENT.match(pool):
        raise UnsafePathError(f"Pool id {pool!r} is not a plain folder name such as 'sub-01'.")

    order = np.argsort(names.astype(str), kind="stable")
    names, x = names[order], normalise_rows(x[order])
    n_test = n_test_images(len(names), test_fraction)
    splits: dict[str, dict[str, Any]] = {}
    total = n_random + 2 + bool(ood)
    disable = not show_progress(progress)
    with tqdm(total=total, desc=f"splits {pool}", disable=disable) as bar:
        for r in range(n_random):
            params = {"method": "uniform_random", "seed": seed + r, "test_fraction": test_fraction}
            test = random_test_mask(len(names), n_test, seed + r)
            splits[f"random_{r}"] = _holdout_dict(
                f"random_{r}", pool, "uniform_random", params=params, names=names, test=test
            )
            bar.update()
        labels = kmeans_labels(x, k, seed)
        for j in range(k):
            name = f"cluster_k{k}_{j}"
            params = {"method": "kmeans_holdout", "k": k, "held_out_cluster": j, "seed": seed}
            splits[name] = _holdout_dict(
                name, pool, "kmeans_holdout", params=params, names=names, test=labels == j
            )
        bar.update()
        test, selection = tau_test_mask(x, n_test, seed)
        params = {
            "method": "min_nn_filter + greedy_mmd_swap",
            "criterion": f"MMD-matched (≤ {TAU_TARGET_RATIO:.1f}× random)",
            "distance": "cosine",
            "seed": seed,
            "adaptive_selection": selection,
        }
        splits["tau"] = _holdout_dict(
            "tau", pool, "min_nn_stochastic", params=params, names=names, test=test
        )
        bar.update()
        if ood:
            params = {"method": "ood_dataset_holdout", "ood_types": ood_kinds}
            splits["ood"] = split_dict(
                "ood", pool, "ood_holdout", params=params, train_ids=names.tolist(), test_ids=ood
            )
            bar.update()
    for name, split in splits.items():
        validate_split_dict(split, f"generated split {name!r}")
    return splits


# ── comparing splits (figures: `neurotorch.plotting.fmri.plot_splits`) ─────────────────────────


def nearest_train_distance(x: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Cosine distance of every test row of unit-length ``x`` to its nearest train row."""
    return (1.0 - x[test] @ x[~test].T).min(1)


# ── writing ────────────────────────────────────────────────────────────────────────────────────


def write_split_files(
    splits: Mapping[str, Mapping[str, Any]],
    folder: str | os.PathLike,
    *,
    pool: str | None = None,
) -> list[Path]:
    """Write splits as ``<folder>/<pool>/<name>.json``, each file atomically.

    Parameters
    ----------
    splits
        ``{name: split}`` as returned by `make_splits`; each is checked against the schema first.
    folder
        The split folder, e.g. ``<dataset root>/splits``.
    pool
        Pool folder to write into (default: each split's own ``pool`` entry).

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    OutputWriteError
        A file cannot be written (a full disk, no permission); the message names it, and the
        previous file of that name is unchanged.
    """
    written = []
    for key, split in splits.items():
        validate_split_dict(split, f"split {key!r}")
        name, pool_dir = split["name"], pool or split["pool"]
        if name != key:
            raise ParameterError(
                f"Split keyed {key!r} is named {name!r}; key splits by their name."
            )
        for part in (name, pool_dir):
            if not _SAFE_COMPONENT.match(str(part)):
                raise UnsafePathError(
                    f"{part!r} is not a plain file name; rename the split or pool."
                )
        path = Path(folder) / pool_dir / f"{name}.json"
        with named_write_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, split, indent=None)
        written.append(path)
    return written
