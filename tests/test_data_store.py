"""The prepared store: content equal to nibabel's read, statistics, invalidation, crash safety."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurotorch.cli import main
from neurotorch.data.collate import collate_items
from neurotorch.data.fmri.betas import BetasDataset
from neurotorch.data.fmri.store import build_store
from neurotorch.errors import CacheError, DtypeRangeError
from neurotorch.fmri import layout
from neurotorch.fmri.voxel_selection import VoxelSelection

SUBJECT = "sub-01"
FACE, FFA1, ALL = (VoxelSelection(roi=r) for r in ("face", "FFA1", "all"))


@pytest.fixture
def own_root(tiny_laion_root, tmp_path) -> Path:
    """A private copy of the tiny tree (these tests modify files)."""
    return Path(shutil.copytree(tiny_laion_root, tmp_path / "tree"))


def _nibabel_rows(root: Path, session: str, mask: np.ndarray) -> np.ndarray:
    data = np.asarray(nib.load(root / layout.session_betas(SUBJECT, session)).dataobj)
    return data[mask].T


def _roi_grid(root: Path, category: str, roi: str) -> np.ndarray:
    return np.asarray(nib.load(root / layout.roi_volume(SUBJECT, category, roi)).dataobj) != 0


def test_store_equals_nibabel_and_stats(tiny_laion_root, tmp_path):
    store = build_store(tiny_laion_root, SUBJECT, voxels=FACE, cache_dir=tmp_path)
    brain = (
        np.asarray(nib.load(tiny_laion_root / layout.anatomical_brain_mask(SUBJECT)).dataobj) != 0
    )
    face = np.zeros_like(brain)
    for roi in ("FFA1", "FFA2", "OFA", "pSTSfaces"):
        if (tiny_laion_root / layout.roi_volume(SUBJECT, "face", roi)).exists():
            face |= _roi_grid(tiny_laion_root, "face", roi)
    np.testing.assert_array_equal(store.voxel_mask, brain & face)
    assert store.sessions == ["ses-01", "ses-02"]
    for session in store.sessions:
        expected = _nibabel_rows(tiny_laion_root, session, brain & face)
        files = store.session(session)
        betas = files.open_betas()
        assert isinstance(betas, np.memmap) and betas.dtype == np.float32
        np.testing.assert_array_equal(betas, expected)
        mean, std = files.stats()
        np.testing.assert_allclose(mean, expected.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(std, expected.astype(np.float64).std(0), rtol=1e-4, atol=1e-6)
        manifest = files.manifest()
        assert manifest["shape"] == list(expected.shape) and manifest["dtype"] == "float32"


def test_float16_store(tiny_laion_root, tmp_path):
    store = build_store(
        tiny_laion_root, SUBJECT, ["ses-02"], voxels=FFA1, dtype="float16", cache_dir=tmp_path
    )
    betas = store.session("ses-02").open_betas()
    assert betas.dtype == np.float16
    expected = _nibabel_rows(tiny_laion_root, "ses-02", store.voxel_mask)
    np.testing.assert_array_equal(betas, expected.astype(np.float16))


def _files(store) -> dict[str, bytes]:
    """Every file of a store; manifests without the .npy modification time (it differs per run)."""
    files = {}
    for p in sorted(store.directory.iterdir()):
        if p.suffix == ".json":
            manifest = json.loads(p.read_text())
            manifest["betas_file"].pop("mtime_ns")
            files[p.name] = json.dumps(manifest).encode()
        elif not p.name.endswith(".lock"):
            files[p.name] = p.read_bytes()
    return files


def test_touching_the_source_or_changing_the_mask_rebuilds(own_root, tmp_path):
    store = build_store(own_root, SUBJECT, voxels=FFA1, cache_dir=tmp_path)
    files = store.session("ses-01")
    built_at = files.betas_path.stat().st_mtime_ns
    other_path = store.session("ses-02").betas_path
    other_built_at, other_inode = other_path.stat().st_mtime_ns, other_path.stat().st_ino
    build_store(own_root, SUBJECT, voxels=FFA1, cache_dir=tmp_path)
    assert files.betas_path.stat().st_mtime_ns == built_at  # current: reused

    source = own_root / layout.session_betas(SUBJECT, "ses-01")
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    time.sleep(0.01)
    build_store(own_root, SUBJECT, voxels=FFA1, cache_dir=tmp_path)
    assert files.betas_path.stat().st_mtime_ns != built_at
    assert json.loads(files.manifest_path.read_text())["source"]["version"] != ""
    other = other_path.stat()  # the untouched session was not rebuilt (nor replaced)
    assert (other.st_mtime_ns, other.st_ino) == (other_built_at, other_inode)

    # Rewrite the ROI file with one voxel fewer: a new selection, a new store with the new voxels.
    roi_path = own_root / layout.roi_volume(SUBJECT, "face", "FFA1")
    image = nib.load(roi_path)
    data = np.asarray(image.dataobj).copy()
    data[tuple(np.argwhere(data != 0)[0])] = 0
    nib.save(nib.Nifti1Image(data, image.affine, image.header), roi_path)
    changed = build_store(own_root, SUBJECT, voxels=FFA1, cache_dir=tmp_path)
    assert changed.directory != store.directory and changed.n_voxels == store.n_voxels - 1
    np.testing.assert_array_equal(
        changed.session("ses-01").open_betas(),
        _nibabel_rows(own_root, "ses-01", changed.voxel_mask),
    )


def test_a_corrupted_manifest_mask_hash_rebuilds(own_root, tmp_path):
    store = build_store(own_root, SUBJECT, ["ses-01"], voxels=FFA1, cache_dir=tmp_path)
    files = store.session("ses-01")
    manifest = files.manifest()
    files.manifest_path.write_text(json.dumps({**manifest, "mask_sha256": "0" * 64}))
    np.save(files.betas_path, np.zeros((2, 2), dtype=np.float32))
    build_store(own_root, SUBJECT, ["ses-01"], voxels=FFA1, cache_dir=tmp_path)
    rebuilt = files.manifest()
    for written in (manifest, rebuilt):  # the rebuilt file has a new modification time
        written["betas_file"].pop("mtime_ns")
    assert rebuilt == manifest
    np.testing.assert_array_equal(
        files.open_betas(), _nibabel_rows(own_root, "ses-01", store.voxel_mask)
    )


KILLED_BUILD = """
import sys, time
from pathlib import Path
import neurotorch.data.fmri.store as store
from neurotorch.fmri.voxel_selection import VoxelSelection

real = store.iter_volumes
def slow(source, mask, **options):
    for i, row in enumerate(real(source, mask, **options)):
        if i == 5:
            Path(sys.argv[3]).write_text("started")
            time.sleep(600)
        yield row
store.iter_volumes = slow
store.build_store(
    sys.argv[1], "sub-01", voxels=VoxelSelection(roi="face"), cache_dir=sys.argv[2], progress=False
)
"""


@pytest.mark.slow
def test_sigkilled_build_then_rerun_equals_uninterrupted(tiny_laion_root, tmp_path):
    marker = tmp_path / "started"
    killed_cache, clean_cache = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(tiny_laion_root), str(killed_cache), str(marker)]
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the build subprocess exited early"
            assert time.monotonic() < deadline, "the build subprocess never started writing"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    interrupted_dir = next(killed_cache.rglob(".*.tmp.ses-01.npy")).parent
    assert not (interrupted_dir / "ses-01.json").exists()

    rerun = build_store(
        tiny_laion_root, SUBJECT, voxels=FACE, cache_dir=killed_cache, progress=False
    )
    clean = build_store(
        tiny_laion_root, SUBJECT, voxels=FACE, cache_dir=clean_cache, progress=False
    )
    assert _files(rerun) == _files(clean)
    assert not list(rerun.directory.glob(".*.tmp.*"))


CONCURRENT_BUILD = """
import sys
from neurotorch.data.fmri.store import build_store
from neurotorch.fmri.voxel_selection import VoxelSelection
build_store(sys.argv[1], "sub-01", voxels=VoxelSelection(roi="all"), cache_dir=sys.argv[2], progress=False)
"""


@pytest.mark.slow
def test_two_processes_building_at_once(tiny_laion_root, tmp_path):
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_BUILD, str(tiny_laion_root), str(cache)])
        for _ in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = build_store(tiny_laion_root, SUBJECT, voxels=ALL, cache_dir=cache, progress=False)
    for session in store.sessions:
        np.testing.assert_array_equal(
            store.session(session).open_betas(),
            _nibabel_rows(tiny_laion_root, session, store.voxel_mask),
        )
    assert not list(store.directory.glob(".*.tmp.*"))


def test_prepare_command(tiny_laion_root, tmp_path, capsys):
    assert (
        main(
            [
                "prepare",
                "--data-dir",
                str(tiny_laion_root),
                "--subject",
                "sub-02",
                "--roi",
                "place",
                "--dtype",
                "float16",
                "--cache-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "sub-02: 2 session(s)" in out and "float16" in out
    assert len(list(tmp_path.rglob("ses-0*.json"))) == 2


@pytest.mark.parametrize(
    "field, stale",
    [
        ("format", 1),
        ("package_version", "0.0.1"),
        ("mask_sha256", "0" * 64),
        ("dtype", "float16"),
        ("values", "zeroed"),
    ],
)
def test_a_manifest_of_another_format_version_mask_or_dtype_rebuilds(
    own_root, tmp_path, field, stale
):
    """Only the manifest says the session was built otherwise; the ``.npy`` is intact."""
    store = build_store(own_root, SUBJECT, ["ses-01"], voxels=FFA1, cache_dir=tmp_path)
    files = store.session("ses-01")
    current = files.manifest()
    files.manifest_path.write_text(json.dumps({**current, field: stale}))
    build_store(own_root, SUBJECT, ["ses-01"], voxels=FFA1, cache_dir=tmp_path)
    assert files.manifest()[field] == current[field]  # rebuilt, with the right value


def _zscored(root: Path, session: str, mask: np.ndarray) -> np.ndarray:
    rows = _nibabel_rows(root, session, mask).astype(np.float64)
    return (rows - rows.mean(0)) / rows.std(0)


def test_statistics_copied_from_another_session_are_detected(own_root, tmp_path):
    """``cp -p`` of ses-02's statistics over ses-01's: the next build rebuilds them, and a
    dataset made before the swap refuses them by name."""
    dataset = BetasDataset(
        own_root,
        SUBJECT,
        voxels=FFA1,
        features=None,
        read={"zscore": True, "cache_dir": tmp_path},
    )
    mask = dataset.voxel_mask()
    first = dataset.stores[SUBJECT].session("ses-01")
    shutil.copy2(dataset.stores[SUBJECT].session("ses-02").stats_path, first.stats_path)
    with pytest.raises(CacheError, match=r"ses-01\.stats\.npz"):
        dataset[0]
    rebuilt = BetasDataset(
        own_root,
        SUBJECT,
        voxels=FFA1,
        features=None,
        read={"zscore": True, "cache_dir": tmp_path},
    )
    batch = collate_items(rebuilt.__getitems__(np.arange(len(rebuilt))))
    expected = {
        "ses-01": _zscored(own_root, "ses-01", mask),
        "ses-02": _zscored(own_root, "ses-02", mask),
    }
    for k in range(len(rebuilt)):
        wanted = expected[batch["session"][k]][int(batch["trial"][k])]
        np.testing.assert_allclose(batch["betas"][k].numpy(), wanted, rtol=1e-4, atol=1e-4)


def test_float16_store_refuses_betas_beyond_its_range(own_root, tmp_path):
    betas = own_root / layout.session_betas(SUBJECT, "ses-02")
    image = nib.load(betas)
    data = np.asarray(image.dataobj).astype(np.float32)
    voxel = tuple(
        np.argwhere(
            build_store(own_root, SUBJECT, ["ses-02"], voxels=FFA1, cache_dir=tmp_path).voxel_mask
        )[0]
    )
    data[(*voxel, 3)] = 70000.0  # finite in float32, inf in float16 (max 65504)
    nib.save(nib.Nifti1Image(data, image.affine, image.header), betas)
    with pytest.raises(DtypeRangeError, match=r"70000.*float32"):
        BetasDataset(
            own_root,
            SUBJECT,
            voxels=FFA1,
            trials={"sessions": "ses-02"},
            read={"dtype": "float16", "cache_dir": tmp_path},
        )
    assert not list(tmp_path.rglob("*-float16/ses-02.json"))  # no float16 session completed
    kept = BetasDataset(
        own_root,
        SUBJECT,
        voxels=FFA1,
        features=None,
        trials={"sessions": "ses-02"},
        read={"cache_dir": tmp_path},
    )
    row = kept.items.index[kept.items["trial"] == 3][0]
    assert float(kept[row]["betas"].max()) == 70000.0
