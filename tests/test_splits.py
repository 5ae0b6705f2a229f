"""Reading split files: the official shared-pool files, source lookup, masks and errors."""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

from neurotorch.errors import SplitError
from neurotorch.fmri import splits
from neurotorch.fmri.datafiles import DATA_DIR_ENV
from neurotorch.io.storage import DataRoot

BUNDLED = splits.BUNDLED_SPLITS_DIR
# an upstream copy of laion_fmri's split files (``<pool>/<name>.json`` and LICENSE), if named
REFERENCE = Path(os.environ.get("NEUROTORCH_SPLITS_REFERENCE", "") or "/nonexistent")
OFFICIAL_NAMES = [f"random_{i}" for i in range(5)] + [f"cluster_k5_{i}" for i in range(5)]
OFFICIAL_NAMES += ["tau", "ood"]
OFFICIAL_POOLS = ["shared", "sub-01", "sub-03", "sub-05", "sub-06", "sub-07"]

_REAL_PACKAGE_LOOKUP = splits._installed_laion_fmri_splits


@pytest.fixture(autouse=True)
def _no_configured_sources(monkeypatch, tmp_path):
    """Tests see only the sources they set up themselves (the bundled copy included)."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.setattr(splits, "_installed_laion_fmri_splits", lambda: None)


def _bundled_raw(pool: str, name: str) -> dict:
    """A bundled file read with gzip + json alone."""
    with gzip.open(BUNDLED / pool / f"{name}.json.gz", "rt", encoding="utf-8") as handle:
        return json.load(handle)


def _raw_split(name="random_0", train=("a.jpg", "b.jpg", "c.jpg"), test=("d.jpg",), **extra):
    raw = {
        "name": name,
        "pool": "tiny pool",
        "splitter": "hand",
        "params": {"seed": 0},
        "n_train": len(train),
        "n_test": len(test),
        "variants": [{"variant_id": 0, "train_ids": list(train), "test_ids": list(test)}],
    }
    raw.update(extra)
    return raw


def _write(folder: Path, pool: str, name: str, content) -> Path:
    path = folder / pool / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# ── the official files (bundled copy) ──────────────────────────────────────────────────────────


def test_official_sizes_and_disjointness():
    """Published sizes: random_0 897/224; ood 1121/371, of which 82 of type "shape"."""
    train, test = splits.get_train_test_ids("random_0", "shared")
    assert (len(train), len(test)) == (897, 224)
    assert not set(train) & set(test)
    train, test = splits.get_train_test_ids("ood", "shared")
    assert (len(train), len(test)) == (1121, 371)
    assert not set(train) & set(test)
    _, shape = splits.get_train_test_ids("ood", "shared", ood_types=["shape"])
    assert len(shape) == 82
    assert shape == [t for t in test if t.startswith("shared_4rep_OOD_shape_")]


def test_official_listing_and_every_file_matches_raw_json():
    assert splits.find_split_source().kind == "bundled"
    assert splits.list_pools() == OFFICIAL_POOLS
    for pool in OFFICIAL_POOLS:
        assert splits.list_splits(pool) == OFFICIAL_NAMES
    assert splits.list_splits() == OFFICIAL_NAMES
    for pool in ("shared", "sub-06"):
        loaded = splits.load_all_splits(pool)
        families = {"random": 5, "cluster": 5, "tau": 1, "ood": 1}
        assert {f: sum(s.family == f for s in loaded.values()) for f in families} == families
        for name, split in loaded.items():
            raw = _bundled_raw(pool, name)
            assert split.pool == pool and split.pool_label == raw["pool"]
            assert split.source == f"bundled: {BUNDLED}"
            assert (split.n_train, split.n_test) == (raw["n_train"], raw["n_test"])
            assert split.to_dict() == raw
    shared = splits.load_all_splits("shared")
    assert shared["cluster_k5_2"].split_family == "cluster_k5"
    assert shared["tau"].params["adaptive_selection"]["tau"] == pytest.approx(0.4696, abs=1e-4)
    # a subject pool is the 1,121 shared images plus the subject's 4,712 unique ones
    sub01 = set(splits.load_split("random_0", "sub-01").variant().all_ids())
    assert len(sub01) == 5833 and set(shared["random_0"].variant().all_ids()) < sub01


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="NEUROTORCH_SPLITS_REFERENCE names no folder")
def test_bundled_bytes_equal_the_upstream_files():
    files = sorted(REFERENCE.glob("*/*.json"))
    assert len(files) == 12 * len(OFFICIAL_POOLS)
    for path in files:
        bundled = BUNDLED / path.parent.name / f"{path.name}.gz"
        assert gzip.decompress(bundled.read_bytes()) == path.read_bytes(), path
    assert (BUNDLED / "LICENSE").read_bytes() == (REFERENCE / "LICENSE").read_bytes()


def test_official_ood_types():
    raw = _bundled_raw("shared", "ood")
    assert splits.list_ood_types() == raw["params"]["ood_types"]
    assert len(raw["params"]["ood_types"]) == 9


def test_official_masks_match_set_membership():
    train, test = splits.get_train_test_ids("tau", "shared")
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array(train[:50] + test[:50] + ["unknown.jpg"], dtype=object), 401)
    trials = pd.DataFrame({"session": "ses-01", "label": labels})
    train_mask, test_mask = splits.get_split_masks(trials, "tau", "shared")
    assert train_mask.dtype == bool and train_mask.shape == (401,)
    np.testing.assert_array_equal(train_mask, [label in set(train) for label in labels])
    np.testing.assert_array_equal(test_mask, [label in set(test) for label in labels])
    assert not (train_mask & test_mask).any()
    # plain label arrays work the same way
    masks = splits.get_split_masks(list(labels), "tau", "shared")
    np.testing.assert_array_equal(masks[0], train_mask)


# ── sources ────────────────────────────────────────────────────────────────────────────────────


def test_dataset_splits_folder_path_dataroot_and_env(tmp_path, monkeypatch):
    _write(tmp_path / "ds" / "splits", "sub-01", "random_0", _raw_split())
    _write(tmp_path / "ds" / "splits", "shared", "tau", _raw_split("tau"))
    for data_dir in (tmp_path / "ds", str(tmp_path / "ds"), DataRoot(tmp_path / "ds")):
        assert splits.list_pools(data_dir=data_dir) == ["shared", "sub-01"]
        assert splits.get_train_test_ids("random_0", "sub-01", data_dir=data_dir) == (
            ["a.jpg", "b.jpg", "c.jpg"],
            ["d.jpg"],
        )
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "ds"))
    assert splits.list_splits() == ["random_0", "tau"]
    assert splits.load_split("tau").source == f"data_dir: {tmp_path / 'ds' / 'splits'}"


def test_laion_fmri_config_file_names_the_root(tmp_path, monkeypatch):
    _write(tmp_path / "ds" / "splits", "shared", "tau", _raw_split("tau"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    (tmp_path / "cfg" / "laion_fmri").mkdir(parents=True)
    (tmp_path / "cfg" / "laion_fmri" / "config.json").write_text(
        json.dumps({"data_dir": str(tmp_path / "ds")})
    )
    assert splits.find_split_source().kind == "data_dir"
    assert splits.list_splits("shared") == ["tau"]
    # neurotorch's own variable comes before the config file
    _write(tmp_path / "other" / "splits", "shared", "ood", _raw_split("ood"))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "other"))
    assert splits.list_splits("shared") == ["ood"]


def test_explicit_splits_dir_wins_over_data_dir(tmp_path):
    _write(tmp_path / "ds" / "splits", "shared", "tau", _raw_split("tau"))
    _write(tmp_path / "mine", "shared", "tau", _raw_split("tau", test=("c.jpg", "d.jpg"), train=()))
    split = splits.load_split("tau", data_dir=tmp_path / "ds", splits_dir=tmp_path / "mine")
    assert split.variant().test_ids == ["c.jpg", "d.jpg"]


def test_remote_dataset_root():
    fs = fsspec.filesystem("memory")
    fs.pipe("/remote-ds/splits/shared/random_3.json", json.dumps(_raw_split("random_3")).encode())
    try:
        assert splits.list_splits("shared", data_dir="memory://remote-ds") == ["random_3"]
        split = splits.load_split("random_3", data_dir="memory://remote-ds")
        assert (split.family, split.n_train, split.n_test) == ("random", 3, 1)
    finally:
        fs.rm("/remote-ds", recursive=True)


def test_installed_laion_fmri_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "laion_fmri"
    (package / "splits").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "splits" / "__init__.py").write_text("")
    _write(package / "splits" / "data", "shared", "ood", _raw_split("ood"))
    monkeypatch.setattr(splits, "_installed_laion_fmri_splits", _REAL_PACKAGE_LOOKUP)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "laion_fmri", raising=False)
    assert splits.list_splits("shared") == ["ood"]
    # a dataset root without a splits folder falls back to the package, before the bundled copy
    assert splits.list_pools(data_dir=tmp_path) == ["shared"]
    assert splits.load_split("ood", data_dir=tmp_path).source.startswith("laion_fmri: ")
    assert "laion_fmri" not in sys.modules  # found, not imported


def test_pooled_and_any_subject_pool_are_listed_and_read(tmp_path):
    folder = tmp_path / "ds" / "splits"
    for pool in ("pooled", "sub-42", "shared"):
        _write(folder, pool, "tau", _raw_split("tau"))
    assert splits.list_pools(data_dir=tmp_path / "ds") == ["shared", "pooled", "sub-42"]
    for pool in ("pooled", "sub-42"):
        assert splits.get_train_test_ids("tau", pool, data_dir=tmp_path / "ds")[1] == ["d.jpg"]


def test_missing_sources(tmp_path, monkeypatch):
    # a dataset root without splits/ falls back to the bundled copy
    assert splits.find_split_source(data_dir=tmp_path).kind == "bundled"
    with pytest.raises(SplitError, match="does not exist"):
        splits.list_pools(splits_dir=tmp_path / "missing")
    monkeypatch.setattr(splits, "BUNDLED_SPLITS_DIR", tmp_path / "gone")
    with pytest.raises(SplitError, match="No split files found.*reinstall"):
        splits.list_splits(data_dir=tmp_path)


# ── errors ─────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"name": "random_0", ', "not a valid split file"),
        (["not", "an", "object"], "expected a JSON object"),
        ({k: v for k, v in _raw_split().items() if k != "n_test"}, r"missing keys \['n_test'\]"),
        (_raw_split(test=("a.jpg",)), "in both train and test"),
        (_raw_split(n_train=5), "n_train=5 but train_ids holds 3"),
        (_raw_split(variants=[]), "non-empty list"),
        (_raw_split(variants=[{"variant_id": 0, "train_ids": []}]), "must be an object with keys"),
        (_raw_split(train=("a.jpg", "a.jpg", "b.jpg")), "more than once"),
        (_raw_split(name="random_1"), "name entry is 'random_1'"),
        (_raw_split(test=("images/d.jpg",)), "test_ids holds 1 ids with path components"),
        (_raw_split(train=("a.jpg", "x\\b.jpg", "c.jpg")), "train_ids holds 1 ids with path"),
    ],
)
def test_malformed_files_name_the_file(tmp_path, content, message):
    path = _write(tmp_path, "shared", "random_0", content)
    with pytest.raises(SplitError, match=message) as info:
        splits.load_split("random_0", splits_dir=tmp_path)
    assert str(path) in str(info.value)


def test_unknown_names_list_the_available_ones(tmp_path):
    _write(tmp_path, "shared", "random_0", _raw_split())
    _write(tmp_path, "shared", "ood", _raw_split("ood"))
    with pytest.raises(SplitError, match=r"Unknown split 'tau'.*\['random_0', 'ood'\]"):
        splits.load_split("tau", splits_dir=tmp_path)
    with pytest.raises(SplitError, match=r"Unknown split pool 'sub-09'.*\['shared'\]"):
        splits.load_split("random_0", "sub-09", splits_dir=tmp_path)
    for bad_name in ("../shared/random_0", "shared/random_0", ".."):
        with pytest.raises(SplitError, match="Invalid split name.*without path separators"):
            splits.load_split(bad_name, splits_dir=tmp_path)
    with pytest.raises(SplitError, match="Invalid pool"):
        splits.load_split("random_0", "../shared", splits_dir=tmp_path)
    with pytest.raises(SplitError, match=r"no variant_id=3; available variants: \[0\]"):
        splits.get_train_test_ids("random_0", variant_id=3, splits_dir=tmp_path)
    with pytest.raises(SplitError, match="only applies to the 'ood' split"):
        splits.get_train_test_ids("random_0", ood_types="shape", splits_dir=tmp_path)
    with pytest.raises(SplitError, match=r"Unknown ood_types \['circle'\]"):
        splits.get_train_test_ids("ood", ood_types=["circle"], splits_dir=tmp_path)
    with pytest.raises(KeyError, match="label_column"):
        splits.get_split_masks(pd.DataFrame({"image_name": ["a.jpg"]}), "ood", splits_dir=tmp_path)


def test_dataset_split_strings_with_extra_path_components_are_named():
    from neurotorch.data.fmri.trials import parse_split

    assert parse_split("tau/train") == ("tau", "train") and parse_split("ood") == ("ood", "all")
    for bad in ("tau/train/extra", "sub-01/tau/train", "../shared/tau"):
        with pytest.raises(SplitError, match="Unknown split part"):
            parse_split(bad)


def test_a_missing_split_is_caught_as_laion_fmri_raises(tmp_path):
    """laion_fmri raises ValueError for an unknown name and FileNotFoundError for a missing split
    file: except clauses for either catch neurotorch's error."""
    _write(tmp_path, "shared", "random_0", _raw_split())
    for laion_class in (ValueError, FileNotFoundError, SplitError):
        with pytest.raises(laion_class, match="random_1"):
            splits.load_split("random_1", "shared", splits_dir=tmp_path)
        with pytest.raises(laion_class, match="sub-05"):
            splits.load_split("random_0", "sub-05", splits_dir=tmp_path)
