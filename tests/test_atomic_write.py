"""The one atomic writer: file modes from the umask, no partial files, unique temporary names, and
synthetic datasets that ``overwrite`` may replace without touching anyone else's files."""

from __future__ import annotations

import errno
import gzip
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurotorch.errors import DatasetExistsError
from neurotorch.io import atomic
from neurotorch.io.atomic import atomic_open, atomic_path, temporary_paths, write_json, write_text

# What a plain open() gives under each umask (POSIX): the modes colleagues expect to see.
EXPECTED_MODE = {0o022: 0o644, 0o077: 0o600}
TINY_CONNECTOME = dict(
    n_subjects=3, n_timepoints=7, voxel_mm=8, n_networks=2, lesions_per_network=1,
    subjects_per_chunk=2,
)  # fmt: skip


@pytest.fixture(params=sorted(EXPECTED_MODE), ids=lambda m: f"umask{m:03o}")
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing_it(umask):
    assert atomic.current_umask() == umask
    assert os.umask(umask) == umask  # still in force


def test_representative_outputs_get_the_umask_mode(umask, tmp_path):
    from neurotorch.fmri.split_makers import make_splits, write_split_files
    from neurotorch.meeg.leadfield import random_leadfield, save_leadfield_npz
    from neurotorch.plotting.figure import new_figure, save_png

    fig, (ax,) = new_figure()
    ax.plot([0, 1], [1, 0])
    png = save_png(fig, tmp_path / "figure.png")
    names = [f"img-{i:03d}.jpg" for i in range(41)]
    embeddings = np.random.default_rng(0).standard_normal((41, 6))
    splits = make_splits(names, embeddings, pool="shared", n_random=1, k=3, progress=False)
    jsons = write_split_files(splits, tmp_path / "splits")
    npz = save_leadfield_npz(tmp_path / "lf-fixed.npz", random_leadfield("fixed", 5, 11))
    for path in [png, npz, *jsons]:
        assert mode(path) == EXPECTED_MODE[umask], path.name
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(np.load(npz).files) == ["Q_basis", "leadfield"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png", "lf-fixed.npz", "splits"]


def test_synthetic_dataset_files_and_folders_get_the_umask_mode(umask, tmp_path):
    from neurotorch.synthetic.connectome import make_connectome

    root = make_connectome(tmp_path / "connectome", **TINY_CONNECTOME)
    entries = [root, *root.rglob("*")]
    assert len(entries) > 8
    for path in entries:
        expected = EXPECTED_MODE[umask] | (0o111 & ~umask if path.is_dir() else 0)
        assert mode(path) == expected, path


def test_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"r": 0.5})
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="mid-write"), atomic_open(target, "w") as handle:
        handle.write('{"r": 0.')
        raise RuntimeError("mid-write")
    with pytest.raises(RuntimeError, match="mid-write"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("mid-write")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_two_writers_to_one_target_use_unique_temporaries(tmp_path):
    target = tmp_path / "summary.csv"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert sorted(temporary_paths(target)) == sorted([first, second])
        first.write_text("first\n")
        second.write_text("second\n")
    # the inner writer commits first; the outer one replaces it as a whole
    assert target.read_text() == "first\n"
    assert temporary_paths(target) == []
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_temporary_names_end_like_the_target(tmp_path):
    image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    with atomic_path(tmp_path / "mask.nii.gz") as tmp:
        assert tmp.name.endswith(".mask.nii.gz") and tmp.name.startswith(".")
        nib.save(image, tmp)  # nibabel picks the gzip format from the name
    with atomic_path(tmp_path / "arrays.npz") as tmp:
        np.savez(tmp, a=np.arange(3))  # np.savez adds ".npz" unless the name ends with it
    raw = (tmp_path / "mask.nii.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b" and len(gzip.decompress(raw)) == 352 + 24 * 2
    np.testing.assert_array_equal(np.load(tmp_path / "arrays.npz")["a"], np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz", "mask.nii.gz"]


def test_file_and_folder_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        target = tmp_path / "data.bin"
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), target.exists()))
        real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name file descriptors")
    monkeypatch.setattr(atomic.os, "fsync", record)
    atomic.write_bytes(tmp_path / "data.bin", b"\x00\x01")
    (file_path, existed_then), (folder_path, existed_after) = synced
    assert Path(file_path).parent == tmp_path and Path(file_path).name != "data.bin"
    assert not existed_then  # the data were synced before the rename made them visible
    assert Path(folder_path) == tmp_path and existed_after


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EINVAL])
def test_folder_sync_reports_a_full_disk_but_not_an_unsupported_sync(code, tmp_path, monkeypatch):
    real_fsync = os.fsync

    def failing_on_folders(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", failing_on_folders)
    if code == errno.ENOSPC:
        with pytest.raises(OSError, match=os.strerror(code)):
            atomic.write_bytes(tmp_path / "data.bin", b"x")
    else:  # file systems that cannot sync folders: the write still succeeds
        atomic.write_bytes(tmp_path / "data.bin", b"x")
    assert (tmp_path / "data.bin").read_bytes() == b"x"  # the rename happened before the sync


def test_deferred_sync_syncs_once_when_the_block_ends(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(atomic.os, "sync", lambda: calls.append("sync"))
    with atomic.deferred_sync():
        for k in range(5):
            write_text(tmp_path / f"f{k}.txt", str(k))
        assert calls == []  # nothing synced yet, but every file is in place
        assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{k}.txt" for k in range(5)]
    assert calls == ["sync"]
    with pytest.raises(RuntimeError), atomic.deferred_sync():
        write_text(tmp_path / "f0.txt", "new")
        raise RuntimeError("the build failed")
    assert calls == ["sync"]  # a failed build is not synced
    write_text(tmp_path / "after.txt", "x")
    assert calls == ["sync", "fsync", "fsync"]  # outside the block: file, then folder


# -- synthetic datasets: overwrite deletes only what neurotorch wrote ------------------------------


def test_overwrite_refuses_a_folder_neurotorch_did_not_write(tmp_path):
    from neurotorch.synthetic.connectome import make_connectome

    folder = tmp_path / "thesis"
    (folder / "chapters").mkdir(parents=True)
    (folder / "chapters" / "one.tex").write_text("precious")
    with pytest.raises(DatasetExistsError, match="not written by neurotorch") as info:
        make_connectome(folder, overwrite=True, **TINY_CONNECTOME)
    assert isinstance(info.value, FileExistsError)
    assert (folder / "chapters" / "one.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_overwrite_replaces_only_its_own_dataset(tmp_path):
    from neurotorch.synthetic._once import MARKER
    from neurotorch.synthetic.connectome import make_connectome

    root = make_connectome(tmp_path / "c", seed=1, **TINY_CONNECTOME)
    files_seed1 = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(DatasetExistsError) as info:
        make_connectome(root, seed=2, **TINY_CONNECTOME)
    assert "overwrite=True" in str(info.value) and "--overwrite" in str(info.value)

    (root / "lesions" / "my_patient.nii.gz").write_bytes(b"user data")
    with pytest.raises(DatasetExistsError, match="lesions/my_patient.nii.gz"):
        make_connectome(root, seed=2, overwrite=True, **TINY_CONNECTOME)
    assert (root / "lesions" / "my_patient.nii.gz").read_bytes() == b"user data"
    assert (root / "_groundtruth" / MARKER).is_file()

    (root / "lesions" / "my_patient.nii.gz").unlink()
    make_connectome(root, seed=2, overwrite=True, **TINY_CONNECTOME)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == files_seed1
    assert '"seed": 2' in (root / "_groundtruth" / "parameters.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no partial folder left


def test_empty_folder_is_written_and_marker_lists_every_file(tmp_path):
    import json

    from neurotorch.synthetic._once import MARKER
    from neurotorch.synthetic.connectome import make_connectome

    (tmp_path / "empty").mkdir()
    root = make_connectome(tmp_path / "empty", **TINY_CONNECTOME)
    listed = json.loads((root / "_groundtruth" / MARKER).read_text())["files"]
    on_disk = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MARKER
    )
    assert listed == on_disk and "_groundtruth/parameters.json" in listed
    write_text(root / "extra.txt", "x")  # reuse with the same parameters ignores extra files
    assert make_connectome(root, **TINY_CONNECTOME) == root


def test_removal_stops_at_a_file_that_appeared_after_the_check(tmp_path):
    from neurotorch.synthetic._once import _remove_dataset

    root = tmp_path / "d"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ours.txt").write_text("generated")
    (root / "sub" / "theirs.txt").write_text("a user's")
    with pytest.raises(OSError):
        _remove_dataset(root, ["sub/ours.txt"])
    assert sorted(p.name for p in root.rglob("*")) == ["sub", "theirs.txt"]


def test_dataset_of_an_older_version_is_reused_but_never_deleted(tmp_path):
    from neurotorch.synthetic._once import MARKER
    from neurotorch.synthetic.connectome import make_connectome

    root = make_connectome(tmp_path / "old", **TINY_CONNECTOME)
    (root / "_groundtruth" / MARKER).unlink()  # as written before datasets carried a marker
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert make_connectome(root, **TINY_CONNECTOME) == root
    with pytest.raises(DatasetExistsError, match="not written by neurotorch"):
        make_connectome(root, seed=5, overwrite=True, **TINY_CONNECTOME)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
