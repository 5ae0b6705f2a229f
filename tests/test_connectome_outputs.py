"""Outputs of lesion network mapping: only into folders neurotorch owns, complete or absent.

`NetworkMapResult.save` and ``neurotorch lnm --out`` refuse a non-empty folder they did not
write (the user's own ``summary.csv`` stays as it was), replace a previous output only with
``overwrite``, and leave nothing partial when the disk fills up; ``to_nifti(path=...)`` returns
the image and writes it atomically. Files are compared with nibabel's own reading.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import pytest

from neurotorch.cli import main
from neurotorch.connectome import ConnectomeBatches, network_map
from neurotorch.connectome.writer import write_batch
from neurotorch.errors import DatasetExistsError, OutputWriteError

SHAPE = (4, 3, 3)
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
N_SUBJECTS, N_TIMEPOINTS = 5, 12
MARKER = ".neurotorch-output.json"


@pytest.fixture(scope="module")
def connectome(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("outputs") / "batches"
    folder.mkdir()
    rng = np.random.default_rng(0)
    indices = np.argwhere(np.ones(SHAPE, dtype=bool))
    series = rng.standard_normal((N_SUBJECTS, N_TIMEPOINTS, len(indices))).astype(np.float32)
    write_batch(
        folder / "c_chunk_000.h5",
        iter(series),
        [f"sub-{s:02d}" for s in range(N_SUBJECTS)],
        mask_indices=indices,
        mask_affine=AFFINE,
        mask_shape=SHAPE,
        n_timepoints=N_TIMEPOINTS,
    )
    return folder


@pytest.fixture(scope="module")
def lesion_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lesions")
    for name, voxel in {"les-a": (0, 0, 0), "les-b": (3, 2, 2)}.items():
        mask = np.zeros(SHAPE, dtype=np.uint8)
        mask[voxel] = 1
        nib.save(nib.Nifti1Image(mask, AFFINE), folder / f"{name}.nii.gz")
    return folder


@pytest.fixture(scope="module")
def result(connectome, lesion_dir):
    return network_map(lesion_dir, connectome)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _staging_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_save_publishes_a_marked_folder_and_replaces_only_its_own(result, tmp_path):
    out = tmp_path / "maps"
    paths = result.save(out)
    listed = json.loads((out / MARKER).read_text())["files"]
    assert sorted(listed) == sorted([p.name for p in paths] + [MARKER])
    assert sorted(p.name for p in out.iterdir()) == sorted(listed)
    t_map = nib.load(out / "les-a_desc-t_map.nii.gz")
    np.testing.assert_array_equal(t_map.get_fdata()[tuple(result.mask_indices.T)], result.t[0])
    with pytest.raises(DatasetExistsError, match="overwrite"):
        result.save(out)
    before = (out / "summary.csv").stat().st_mtime_ns
    result.save(out, alpha=0.2, overwrite=True)  # replaced as a whole
    assert (out / "summary.csv").stat().st_mtime_ns != before
    assert "n_voxels_q<0.2" in (out / "summary.csv").read_text()
    assert _staging_leftovers(tmp_path) == []


def test_save_takes_an_empty_folder_and_refuses_anything_else(result, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result.save(empty)
    assert (empty / "summary.csv").exists()
    users = tmp_path / "results"
    users.mkdir()
    (users / "summary.csv").write_text("my own table\n")
    (users / "provenance.json").write_text('{"mine": true}\n')
    before = _snapshot(users)
    for overwrite in (False, True):
        with pytest.raises(DatasetExistsError, match="did not write it"):
            result.save(users, overwrite=overwrite)
    assert _snapshot(users) == before
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DatasetExistsError, match="is a file"):
        result.save(a_file)


def test_a_full_disk_leaves_no_partial_output(result, tmp_path, record_property):
    """ENOSPC at the 9th image (as on a full disk): a named error with the path, and neither a
    partial folder nor a change to the previous output."""
    real_save, calls = nib.save, []

    def full_disk(image, filename):
        calls.append(filename)
        if len(calls) == 9:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(image, filename)

    with mock.patch.object(nib, "save", full_disk), pytest.raises(OutputWriteError) as caught:
        result.save(tmp_path / "maps")
    assert "No space left on device" in str(caught.value) and str(tmp_path / "maps") in str(
        caught.value
    )
    assert not (tmp_path / "maps").exists() and _staging_leftovers(tmp_path) == []
    result.save(tmp_path / "maps")
    previous = _snapshot(tmp_path / "maps")
    calls.clear()
    with mock.patch.object(nib, "save", full_disk), pytest.raises(OutputWriteError):
        result.save(tmp_path / "maps", alpha=0.3, overwrite=True)
    intact = _snapshot(tmp_path / "maps") == previous and _staging_leftovers(tmp_path) == []
    record_property("durability", "intact" if intact else "damaged")
    assert intact


def test_to_nifti_returns_the_image_and_writes_it_atomically(result, connectome, tmp_path):
    image = result.to_nifti("t", "les-b", path=tmp_path / "t.nii.gz")
    written = nib.load(tmp_path / "t.nii.gz")
    np.testing.assert_array_equal(written.get_fdata(), image.get_fdata())
    np.testing.assert_array_equal(written.affine, AFFINE)
    np.testing.assert_array_equal(written.get_fdata()[tuple(result.mask_indices.T)], result.t[1])
    assert result.to_nifti("q", 0).get_filename() is None  # no path: nothing written
    batches = ConnectomeBatches(connectome)
    values = np.arange(batches.n_voxels, dtype=np.float32)
    volume = batches.to_nifti(values, path=tmp_path / "v.nii").get_fdata()
    np.testing.assert_array_equal(nib.load(tmp_path / "v.nii").get_fdata(), volume)
    with (
        mock.patch.object(nib, "save", side_effect=OSError(errno.ENOSPC, "No space left")),
        pytest.raises(OutputWriteError, match="r.nii.gz"),
    ):
        result.to_nifti("r", 0, path=tmp_path / "r.nii.gz")
    assert not (tmp_path / "r.nii.gz").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp." in p.name]


def _lnm(connectome, lesion_dir, out, *options) -> list[str]:
    return ["lnm", str(lesion_dir), "--connectome", str(connectome), "--out", str(out), *options]


def test_lnm_command_never_writes_over_the_users_files(connectome, lesion_dir, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "summary.csv").write_text("my own table\n")
    (out / "provenance.json").write_text('{"mine": true}\n')
    before = _snapshot(out)
    for extra in ([], ["--overwrite"]):
        assert main(_lnm(connectome, lesion_dir, out, "--no-figures", *extra)) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and str(out) in err and "did not write it" in err
        assert _snapshot(out) == before
    fresh = tmp_path / "maps"
    assert main(_lnm(connectome, lesion_dir, fresh, "--no-figures")) == 0
    assert main(_lnm(connectome, lesion_dir, fresh, "--no-figures")) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(_lnm(connectome, lesion_dir, fresh, "--no-figures", "--overwrite")) == 0
    assert json.loads((fresh / "provenance.json").read_text())["inputs"]["subjects"][0] == "sub-00"


def test_lnm_command_refuses_the_folder_it_runs_in_before_any_work(
    connectome, lesion_dir, tmp_path, capsys, monkeypatch
):
    """The output is renamed into place, which cannot replace the working folder: ``--out .``
    from an empty folder is refused up front, not after the mapping."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setattr("neurotorch.connectome.network_map", _no_work)
    for out in (".", str(here), ".."):
        assert main(_lnm(connectome, lesion_dir, out, "--no-figures")) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and "current folder" in err and "subfolder" in err
    assert list(here.iterdir()) == []


def _no_work(*args, **kwargs):
    raise AssertionError("the mapping ran before the output folder was checked")


def test_lnm_command_on_a_full_disk_names_the_file_and_leaves_nothing(
    connectome, lesion_dir, tmp_path, capsys
):
    real_save, calls = nib.save, []

    def full_disk(image, filename):
        calls.append(filename)
        if len(calls) == 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(image, filename)

    with mock.patch.object(nib, "save", full_disk):
        status = main(_lnm(connectome, lesion_dir, tmp_path / "maps", "--no-figures"))
    err = capsys.readouterr().err
    assert status == 1 and "No space left on device" in err
    assert str(tmp_path / "maps" / "les-b_desc-") in err  # the 10th image is one of les-b's maps
    assert not (tmp_path / "maps").exists() and _staging_leftovers(tmp_path) == []
