"""Generating the four split families and writing them as split files."""

from __future__ import annotations

import gzip
import json

import matplotlib
import numpy as np
import pytest

from neurotorch.errors import ShapeMismatchError, SplitError, UnsafePathError
from neurotorch.fmri import splits
from neurotorch.fmri.split_makers import make_splits, nearest_train_distance, write_split_files
from neurotorch.plotting.fmri import plot_splits

N_IMAGES = 243  # 20 % is 48.6: the test sets hold 49 images, the train sets 194
BLOB_SIZES = (80, 60, 50, 35, 18)
OOD_COUNTS = {"shape": 7, "gabor": 5, "cropped": 3, "illusion-classic": 4}


def _pool(seed: int = 0):
    """Five well-separated blobs of known sizes in 24-D (float16, like the real embeddings)."""
    rng = np.random.default_rng(seed)
    centres = 4.0 * np.eye(5, 24)
    blob = np.repeat(np.arange(5), BLOB_SIZES)
    embeddings = (centres[blob] + 0.5 * rng.normal(size=(N_IMAGES, 24))).astype(np.float16)
    names = [f"shared_12rep_LAION_cluster_{i:04d}_i0.jpg" for i in range(N_IMAGES)]
    shuffle = rng.permutation(N_IMAGES)
    ood = [
        f"shared_4rep_OOD_{kind}_thing{i}.png" for kind, n in OOD_COUNTS.items() for i in range(n)
    ]
    return [names[i] for i in shuffle], embeddings[shuffle], blob[shuffle], ood


@pytest.fixture(scope="module")
def pool():
    return _pool()


@pytest.fixture(scope="module")
def made(pool):
    names, embeddings, _, ood = pool
    return make_splits(names, embeddings, pool="shared", ood_names=ood, seed=0, progress=False)


def _ids(split):
    variant = split["variants"][0]
    return variant["train_ids"], variant["test_ids"]


def _unit(embeddings):
    x = np.asarray(embeddings, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_names_and_sizes(made, pool):
    names = set(pool[0])
    expected = [f"random_{r}" for r in range(5)] + [f"cluster_k5_{j}" for j in range(5)]
    assert list(made) == [*expected, "tau", "ood"]
    for name in [f"random_{r}" for r in range(5)] + ["tau"]:
        train, test = _ids(made[name])
        assert (len(train), len(test)) == (194, 49)
        assert (made[name]["n_train"], made[name]["n_test"]) == (194, 49)
        assert not set(train) & set(test)
        assert set(train) | set(test) == names


def test_deterministic_per_seed_and_different_across_seeds(made, pool):
    names, embeddings, _, ood = pool
    reverse = slice(None, None, -1)
    again = make_splits(
        names[reverse], embeddings[reverse], pool="shared", ood_names=ood[reverse], progress=False
    )
    assert again == made
    tests = [set(_ids(made[f"random_{r}"])[1]) for r in range(5)]
    assert all(tests[a] != tests[b] for a in range(5) for b in range(a + 1, 5))
    other = make_splits(names, embeddings, pool="shared", seed=1, n_random=1, progress=False)
    assert set(_ids(other["random_0"])[1]) != tests[0]
    assert set(_ids(other["random_0"])[1]) == tests[1]  # random_r uses seed + r
    assert made["random_3"]["params"]["seed"] == 3


def test_cluster_splits_hold_out_one_kmeans_cluster(made, pool):
    names, embeddings, blob, _ = pool
    index = {name: i for i, name in enumerate(names)}
    held_out = [[index[n] for n in _ids(made[f"cluster_k5_{j}"])[1]] for j in range(5)]
    label = np.full(N_IMAGES, -1)
    for j, members in enumerate(held_out):
        assert (label[members] == -1).all()  # the five test sets do not overlap ...
        label[members] = j
        train = _ids(made[f"cluster_k5_{j}"])[0]
        assert set(train) == set(names) - {names[i] for i in members}
    assert (label >= 0).all()  # ... and cover the pool
    # every image is nearest to the centroid of its own cluster (a converged k-means assignment)
    x = _unit(embeddings)
    centroids = np.stack([x[label == j].mean(0) for j in range(5)])
    nearest = ((x[:, None, :] - centroids[None, :, :]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(nearest, label)
    # the planted blobs are recovered, numbered largest first
    assert [len(m) for m in held_out] == list(BLOB_SIZES)
    for j in range(5):
        assert len(set(blob[label == j])) == 1


def test_tau_test_images_are_isolated_and_distribution_matched(made, pool):
    names, embeddings, _, _ = pool
    x = _unit(embeddings)
    index = {name: i for i, name in enumerate(names)}
    distance = 1.0 - x @ x.T

    def mean_nearest_train_distance(split):
        train, test = (np.array([index[n] for n in ids]) for ids in _ids(split))
        return distance[np.ix_(test, train)].min(1).mean()

    tau_distance = mean_nearest_train_distance(made["tau"])
    random_distances = [mean_nearest_train_distance(made[f"random_{r}"]) for r in range(5)]
    assert tau_distance > max(random_distances)

    selection = made["tau"]["params"]["adaptive_selection"]
    np.fill_diagonal(distance, np.inf)
    test = np.array([index[n] for n in _ids(made["tau"])[1]])
    assert (distance[test].min(1) > selection["tau"]).all()
    is_test = np.isin(np.arange(N_IMAGES), test)
    mmd2 = ((x[is_test].mean(0) - x[~is_test].mean(0)) ** 2).sum()
    assert selection["mmd2_mean"] == pytest.approx(mmd2, rel=1e-9)
    random_mmd2 = []
    for r in range(5):
        rand = np.isin(names, _ids(made[f"random_{r}"])[1])
        random_mmd2.append(((x[rand].mean(0) - x[~rand].mean(0)) ** 2).sum())
    # matched like a random split: within the spread of random splits' MMD
    assert mmd2 <= selection["random_baseline_mmd2"] <= 3 * max(random_mmd2)


def test_ood_split_and_type_filter(made, pool, tmp_path):
    names, _, _, ood = pool
    train, test = _ids(made["ood"])
    assert sorted(train) == sorted(names) and test == sorted(ood)
    assert made["ood"]["params"]["ood_types"] == ["cropped", "gabor", "illusion-classic", "shape"]
    write_split_files(made, tmp_path / "splits")
    _, shape = splits.get_train_test_ids("ood", "shared", ood_types=["shape"], data_dir=tmp_path)
    assert len(shape) == OOD_COUNTS["shape"] and all("_OOD_shape_" in s for s in shape)
    _, some = splits.get_train_test_ids("ood", ood_types=("shape", "gabor"), data_dir=tmp_path)
    assert len(some) == 12
    assert splits.list_ood_types(data_dir=tmp_path) == made["ood"]["params"]["ood_types"]


def test_written_files_round_trip_with_the_official_schema(made, tmp_path):
    paths = write_split_files(made, tmp_path / "splits")
    assert paths == [tmp_path / "splits" / "shared" / f"{name}.json" for name in made]
    assert not list((tmp_path / "splits" / "shared").glob(".*"))  # no temporary files left
    loaded = splits.load_all_splits("shared", data_dir=tmp_path)
    assert list(loaded) == list(made)
    split_keys = {"name", "pool", "splitter", "params", "n_train", "n_test", "variants"}
    variant_keys = {"variant_id", "train_ids", "test_ids"}
    official_files = sorted((splits.BUNDLED_SPLITS_DIR / "shared").glob("*.json.gz"))
    assert len(official_files) == 12
    for raw in (json.loads(gzip.decompress(p.read_bytes())) for p in official_files):
        assert set(raw) == split_keys and set(raw["variants"][0]) == variant_keys
    for name, split in loaded.items():
        assert split.to_dict() == made[name]
        raw = json.loads((tmp_path / "splits" / "shared" / f"{name}.json").read_text())
        assert set(raw) == split_keys and set(raw["variants"][0]) == variant_keys
    assert [s.family for s in loaded.values()] == ["random"] * 5 + ["cluster"] * 5 + ["tau", "ood"]
    # a subject pool goes into its own folder
    subject = make_splits(*_pool(1)[:2], pool="sub-01", n_random=1, k=2, progress=False)
    write_split_files(subject, tmp_path / "splits")
    assert splits.list_pools(data_dir=tmp_path) == ["shared", "sub-01"]
    assert splits.list_splits("sub-01", data_dir=tmp_path) == [
        "random_0", "cluster_k2_0", "cluster_k2_1", "tau",
    ]  # fmt: skip


def test_bad_inputs(pool, tmp_path):
    names, embeddings, _, ood = pool
    with pytest.raises(ShapeMismatchError, match="one embedding row per image"):
        make_splits(names[:-1], embeddings, pool="shared")
    with pytest.raises(ValueError, match="more than once"):
        make_splits([names[0], *names[1:-1], names[0]], embeddings, pool="shared")
    with pytest.raises(ValueError, match="also pool images"):
        make_splits(names, embeddings, pool="shared", ood_names=[names[3]])
    with pytest.raises(ValueError, match="does not name an OOD type"):
        make_splits(names, embeddings, pool="shared", ood_names=["shared_4rep_OOD_x_y.png"])
    with pytest.raises(ValueError, match="all zero or not finite"):
        make_splits(names, np.zeros_like(embeddings), pool="shared")
    with pytest.raises(ValueError, match="test_fraction"):
        make_splits(names, embeddings, pool="shared", test_fraction=1.0)
    with pytest.raises(UnsafePathError):
        make_splits(names, embeddings, pool="../escape")
    broken = {"random_0": {"name": "random_0", "pool": "shared"}}
    with pytest.raises(SplitError, match="missing keys"):
        write_split_files(broken, tmp_path)
    assert not (tmp_path / "shared").exists()


def test_nearest_train_distance_and_plot(made, pool, tmp_path):
    names, embeddings, _, _ = pool
    x = _unit(embeddings)
    test = np.isin(names, _ids(made["tau"])[1])
    by_loop = [min(1.0 - x[i] @ x[j] for j in np.flatnonzero(~test)) for i in np.flatnonzero(test)]
    np.testing.assert_allclose(nearest_train_distance(x, test), by_loop, rtol=0, atol=1e-12)
    before = matplotlib.get_backend()
    out = plot_splits(made, names, embeddings, tmp_path / "figures" / "splits.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == before
