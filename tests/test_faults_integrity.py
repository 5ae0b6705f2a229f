"""Fault cases of integrity, verification, downloads, first use and the LAION-fMRI readers.

Each case damages one input the way the held-out campaigns did (a betas file rewritten with its
modification time restored, damaged HDF5 attributes and object headers, NPZ directories, a full
disk, stale settings, concurrent first use) and checks what the user gets: an error of the right
class naming the culprit, never a traceback, a wrong item or a kept damaged file. Damaged files are
made by hand and checked against their real bytes (h5py's object addresses, the zip records).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from faults.framework import (
    BETAS,
    CLIP,
    SES,
    SUB,
    Fault,
    flip_at,
    flip_byte,
    run_fault,
    tmp_case,
    tree_case,
)

from neurotorch.errors import (
    CorruptFileError,
    DataNotDownloadedError,
    DataNotFoundError,
    FormatError,
    NeurotorchError,
    OutputWriteError,
    SubjectNotFoundError,
)

REPO = Path(__file__).resolve().parents[1]


def raise_bad(results: list) -> list:
    """``verify``'s results as a reader's outcome: the error of the first bad file, if any."""
    bad = [r for r in results if r.status == "bad"]
    if bad:
        raise bad[0].error
    return results


def verify(path: Path) -> list:
    from neurotorch.verify import verify_path

    return raise_bad(verify_path(path, progress=False))


# -- files written from scratch -----------------------------------------------------------------------


def write_batch_file(folder: Path, name: str = "gsp1000_chunk_000.h5") -> Path:
    """A tiny connectome batch file, as neurotorch's writer makes it (Fletcher-32 everywhere)."""
    from neurotorch.connectome.writer import write_batch

    rng = np.random.default_rng(0)
    indices = np.argwhere(np.ones((4, 4, 3), dtype=bool))
    series = [rng.standard_normal((10, len(indices))).astype(np.float32) for _ in range(2)]
    return write_batch(
        folder / name,
        subject_series=series,
        subject_ids=["s1", "s2"],
        mask_indices=indices,
        mask_affine=np.diag([2.0, 2.0, 2.0, 1.0]),
        mask_shape=(4, 4, 3),
        n_timepoints=10,
        description="a test batch",
    )


def write_attributed_h5(path: Path) -> Path:
    """An HDF5 file whose dataset carries a string attribute ``units`` (and a checksum)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(400.0).reshape(4, 100), fletcher32=True)
        f["x"].attrs["units"] = "mm"
    return path


def attribute_datatype_offset(path: Path, name: bytes = b"units") -> int:
    """File offset of the datatype message of the attribute ``name``: it follows the name, which
    an HDF5 attribute message pads to 8 bytes."""
    return path.read_bytes().index(name + b"\0") + 8


def object_header_address(path: Path, key: str) -> int:
    """File offset of the object header of ``key`` (its first byte is the header's version)."""
    with h5py.File(path, "r") as f:
        return int(h5py.h5g.get_objinfo(f.id, key.encode()).objno[0])


def chunk_offset(path: Path, key: str) -> int:
    with h5py.File(path, "r") as f:
        return int(f[key].id.get_chunk_info(0).byte_offset)


def _attribute_damaged(shift: int) -> Callable[[Path], tuple]:
    """Byte ``shift`` of the datatype message of an attribute flipped: 0 makes h5py raise, 1
    crashes the HDF5 library of this machine (both must come out as a damaged file)."""

    def make(tmp: Path):
        path = write_attributed_h5(tmp / "x.h5")
        flip_byte(path, attribute_datatype_offset(path) + shift)
        return (lambda: verify(path)), path.name

    return make


def _batch_with(damage: Callable[[Path], None]) -> Callable[[Path], tuple]:
    def make(tmp: Path):
        path = write_batch_file(tmp)
        damage(path)
        return (lambda: verify(path)), path.name

    return make


def _damage_attribute_value(path: Path) -> None:
    """``n_voxels`` says 1 voxel more: the value bytes follow the attribute's messages."""
    with h5py.File(path, "r") as f:
        n_voxels = int(f.attrs["n_voxels"])
    data = bytearray(path.read_bytes())
    value = np.int64(n_voxels).tobytes()
    start = data.index(b"n_voxels\0")
    where = data.index(value, start)
    data[where : where + 8] = np.int64(n_voxels + 1).tobytes()
    path.write_bytes(bytes(data))


def _npz(tmp: Path, name: str = "arrays.npz", **arrays: np.ndarray) -> Path:
    path = tmp / name
    np.savez(path, **(arrays or {"a": np.arange(1000, dtype=np.int64)}))
    return path


def _damaged_npz_end_record(tmp: Path):
    path = _npz(tmp)
    data = path.read_bytes()
    end = data.rindex(b"PK\x05\x06")  # the end-of-central-directory signature
    flip_byte(path, end)
    return (lambda: verify(path)), path.name


def _damaged_npz_central_directory(tmp: Path):
    path = _npz(tmp)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("a.npy")
    data = path.read_bytes()
    entry = data.rindex(b"PK\x01\x02")  # the member's central-directory record
    assert data.index(b"PK\x03\x04") == info.header_offset
    flip_byte(path, entry + 10)  # its compression method: one no reader knows
    return (lambda: verify(path)), path.name


def _leadfield_without_leadfield(tmp: Path):
    """A zip-sound NPZ named as a leadfield but lacking the ``leadfield`` array: only the
    family check (the leadfield reader) can tell."""
    path = _npz(tmp, "fsaverage_fixed_leadfield.npz", src_coords=np.zeros((3, 3)))
    return (lambda: verify(path)), path.name


def _empty_folder(tmp: Path):
    folder = tmp / "empty"
    folder.mkdir()
    return (lambda: verify(folder)), str(folder)


def _folder_without_dataset_files(tmp: Path):
    folder = tmp / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no data here")
    (folder / "figure.png").write_bytes(b"\x89PNG")
    return (lambda: verify(folder)), str(folder)


def _stimulus_reader(damage: Callable[[Path], None]) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        damage(root / CLIP)
        return Path(CLIP).name

    return apply


def _embedding_header_version(path: Path) -> None:
    flip_byte(path, object_header_address(path, "embedding"))


def _embeddings_of_first_images(root: Path):
    from neurotorch.fmri import load_stimuli

    stim = load_stimuli(root)
    return stim.embeddings.get("CLIP", stim.images.names()[:3])


def _verify_tree_file(relpath: str) -> Callable[[Path], object]:
    return lambda root: verify(root / relpath)


CASES = [
    tmp_case("batch-attribute-value-damaged", FormatError, _batch_with(_damage_attribute_value)),
    tmp_case(
        "batch-mask-affine-damaged",
        CorruptFileError,
        _batch_with(lambda p: flip_byte(p, chunk_offset(p, "mask_affine") + 3)),
    ),
    tmp_case("hdf5-attribute-message-damaged", CorruptFileError, _attribute_damaged(0)),
    tmp_case("hdf5-attribute-crashes-the-library", CorruptFileError, _attribute_damaged(1)),
    tmp_case("npz-end-record-damaged", CorruptFileError, _damaged_npz_end_record),
    tmp_case("npz-central-directory-damaged", CorruptFileError, _damaged_npz_central_directory),
    tmp_case("leadfield-schema-broken", FormatError, _leadfield_without_leadfield),
    tmp_case("verify-empty-folder", DataNotFoundError, _empty_folder),
    tmp_case(
        "verify-folder-without-dataset-files", DataNotFoundError, _folder_without_dataset_files
    ),
    tree_case(
        "stimulus-object-header-damaged",
        CorruptFileError,
        _stimulus_reader(_embedding_header_version),
        _embeddings_of_first_images,
    ),
    tree_case(
        "stimulus-object-header-damaged-verify",
        CorruptFileError,
        _stimulus_reader(_embedding_header_version),
        _verify_tree_file(CLIP),
    ),
    tree_case(
        "nifti-header-affine-damaged",
        FormatError,
        lambda root: _zero_affine(root / BETAS),
        _verify_tree_file(BETAS),
    ),
]


def _zero_affine(path: Path) -> str:
    """A NIfTI whose sform and qform describe a singular matrix (a damaged header)."""
    image = nib.load(path)
    header = image.header.copy()
    header.set_sform(np.zeros((4, 4)), code=1)
    header.set_qform(None, code=0)
    header["pixdim"][1:4] = 0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), None, header), path)
    return path.name


@pytest.mark.parametrize("fault", CASES, ids=lambda f: f.name)
def test_fault(fault: Fault, tiny_laion_root: Path, tmp_path: Path, record_property):
    run_fault(fault, tiny_laion_root, tmp_path, record_property)


def test_damaged_npz_is_not_called_pickled(tmp_path: Path):
    """The end record of a zip damaged: numpy would call it pickled; verify says damaged."""
    call, _ = _damaged_npz_end_record(tmp_path)
    with pytest.raises(CorruptFileError) as info:
        call()
    assert "pickle" not in str(info.value)


# -- a file rewritten after verification, its modification time restored ------------------------------


def _stream(root: Path, workers: int, **kwargs) -> tuple[list[dict], BaseException | None]:
    from neurotorch.data.fmri.stream import BetasStream
    from neurotorch.data.loader import StreamLoader

    items: list[dict] = []
    try:
        dataset = BetasStream(root, SUB, sessions=[SES], **kwargs)
        for batch in StreamLoader(dataset, batch_size=1, num_workers=workers):
            items.append(batch)
    except NeurotorchError as exc:
        return items, exc
    return items, None


@pytest.mark.slow
def test_a_rewrite_with_restored_mtime_is_verified_again(
    tiny_laion_root: Path, tmp_path: Path, record_property
):
    """``verify``, then bytes flipped inside the deflate data with size and modification time
    restored (what ``touch -r`` does): a ``nan_policy="zero"`` stream serves no item."""
    root = Path(shutil.copytree(tiny_laion_root, tmp_path / "tree"))
    verify(root)
    betas = root / BETAS
    before = betas.stat()
    flip_at(betas, 0.30)
    os.utime(betas, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = betas.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    clean, _ = _stream(tiny_laion_root, 0, verify="off", nan_policy="zero")
    unchecked, _ = _stream(root, 0, verify="off", nan_policy="zero")
    truth = {int(item["trial"]): item["betas"] for item in clean}
    wrong = sum(not np.array_equal(item["betas"], truth[int(item["trial"])]) for item in unchecked)
    assert wrong > 0, "without verification the rewrite must reach the items (else no test)"
    items, error = _stream(root, 2, nan_policy="zero")
    named = isinstance(error, CorruptFileError) and betas.name in str(error)
    record_property("fault", "named" if named and not items else "silent")
    assert items == [] and named, (len(items), error)


def test_seek_index_of_a_rewritten_file_is_not_reused(tmp_path: Path):
    """A seek index is keyed by the file's version: a rewrite with the modification time restored
    is indexed again (its CRC then fails), not read through the old index."""
    from neurotorch.io.seek_index import read_volumes

    path = tmp_path / "betas.nii.gz"
    data = np.random.default_rng(0).standard_normal((16, 16, 16, 30)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    np.testing.assert_array_equal(read_volumes(path, [0])[0], data[..., 0])
    before = path.stat()
    flip_at(path, 0.5)  # far from the first and last 64 KiB the index also hashes
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(CorruptFileError, match=path.name):
        read_volumes(path, [20])


# -- the command line ----------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), NEUROTORCH_PROGRESS="0")


def _cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "neurotorch", *args]
    return subprocess.run(command, env=_env(), capture_output=True, text=True)


@pytest.mark.slow
def test_verify_of_an_empty_folder_is_one_line_and_exit_1(tmp_path: Path):
    result = _cli("verify", str(tmp_path))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and str(tmp_path) in result.stderr


@pytest.mark.slow
def test_verify_into_head_ends_quietly(tiny_laion_root: Path):
    """``neurotorch verify DIR --all | head -3``: the Unix way, no 'Broken pipe' error."""
    command = f"{sys.executable} -m neurotorch verify {tiny_laion_root} --all | head -3"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], env=_env(), capture_output=True, text=True
    )
    assert len(result.stdout.splitlines()) == 3
    assert "Broken pipe" not in result.stderr and "error" not in result.stderr, result.stderr


@pytest.mark.slow
def test_verify_survives_a_file_that_crashes_the_hdf5_library(tmp_path: Path):
    """The damaged attribute crashes h5py when read in the process: verify reads HDF5 in a child
    process, reports the file bad and goes on with the others."""
    damaged = write_attributed_h5(tmp_path / "crash.h5")
    flip_byte(damaged, attribute_datatype_offset(damaged) + 1)
    write_attributed_h5(tmp_path / "sound.h5")
    result = _cli("verify", str(tmp_path), "--all")
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stderr
    assert any(line.startswith("bad") and "crash.h5" in line for line in lines), result.stdout
    assert any(line.startswith("verified") and "sound.h5" in line for line in lines)


# -- downloads never keep a damaged file -------------------------------------------------------------


@pytest.mark.slow
def test_a_rerun_after_a_damaged_download_does_not_keep_it(
    tiny_laion_root: Path, tmp_path: Path, record_property
):
    from neurotorch.fmri.download import download_laion_fmri
    from neurotorch.io.integrity import is_verified
    from neurotorch.io.storage import DataRoot

    source = Path(shutil.copytree(tiny_laion_root, tmp_path / "source"))
    out = tmp_path / "out"
    selection = dict(subjects=["sub-01"], sessions=[SES], source=source, workers=2)
    download_laion_fmri(out, **selection)
    # the local copy is damaged afterwards (a disk fault, an interrupted copy by hand)
    flip_at(out / BETAS, 0.5)
    before = (out / BETAS).stat()
    os.utime(out / BETAS, ns=(before.st_atime_ns, before.st_mtime_ns))
    result = download_laion_fmri(out, **selection)  # checked again, transferred anew
    assert BETAS in result.transferred
    assert (out / BETAS).read_bytes() == (source / BETAS).read_bytes()
    # the source is damaged: a rerun refuses, twice, and never keeps the file
    flip_at(source / BETAS, 0.5)
    (out / BETAS).unlink()
    outcomes = []
    for _ in range(2):
        with pytest.raises(CorruptFileError, match=Path(BETAS).name) as info:
            download_laion_fmri(out, **selection)
        outcomes.append(not (out / BETAS).exists() and "damaged twice" in str(info.value))
    trials = BETAS.replace(
        "space-T1w_stat-effect_desc-SingletrialBetas_statmap.nii.gz",
        "desc-SingletrialBetas_trials.tsv",
    )
    assert (out / trials).is_file() and is_verified(DataRoot(out), trials)
    record_property("fault", "named" if all(outcomes) else "silent")
    assert all(outcomes)


# -- a full disk names the path and keeps the previous file ------------------------------------------


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_to_nifti_on_a_full_disk_names_the_path(
    tiny_laion_root: Path, tmp_path: Path, monkeypatch, record_property
):
    from neurotorch.fmri import load_subject

    sub = load_subject(SUB, tiny_laion_root)
    path = tmp_path / "values.nii.gz"
    values = np.arange(sub.get_n_voxels(), dtype=np.float32)
    sub.to_nifti(values, path)
    previous = path.read_bytes()
    monkeypatch.setattr(nib, "save", _full_disk)
    with pytest.raises(OutputWriteError) as info:
        sub.to_nifti(values * 2, path)
    named = str(path) in str(info.value) and info.value.errno == errno.ENOSPC
    intact = path.read_bytes() == previous and [p.name for p in tmp_path.iterdir()] == [path.name]
    record_property("fault", "named" if named and intact else "silent")
    assert named and intact, str(info.value)


def test_split_files_on_a_full_disk_name_the_path(tmp_path: Path, monkeypatch, record_property):
    from neurotorch.fmri import split_makers
    from neurotorch.io import atomic

    names = [f"shared_12rep_LAION_cluster_{i}_i0.jpg" for i in range(40)]
    embeddings = np.random.default_rng(0).standard_normal((40, 8))
    made = split_makers.make_splits(names, embeddings, pool="shared", progress=False)
    monkeypatch.setattr(atomic.os, "replace", _full_disk)
    with pytest.raises(OutputWriteError) as info:
        split_makers.write_split_files(made, tmp_path / "splits")
    named = "random_0.json" in str(info.value) or "cluster" in str(info.value)
    leftovers = [p for p in (tmp_path / "splits").rglob("*") if p.is_file()]
    record_property("fault", "named" if named and not leftovers else "silent")
    assert named and not leftovers, (str(info.value), leftovers)


@pytest.mark.slow
def test_a_synthetic_dataset_on_a_full_disk_names_the_folder(
    tmp_path: Path, monkeypatch, record_property
):
    from neurotorch.io import atomic
    from neurotorch.synthetic.connectome import make_connectome_dataset

    monkeypatch.setattr(atomic.os, "replace", _full_disk)
    out = tmp_path / "connectome"
    with pytest.raises(OutputWriteError) as info:
        make_connectome_dataset(out, size="tiny")
    named = str(out) in str(info.value)
    nothing_left = sorted(p.name for p in tmp_path.iterdir()) == []
    record_property("fault", "named" if named and nothing_left else "silent")
    assert named and nothing_left, (str(info.value), list(tmp_path.iterdir()))


class _FullDisk:
    """A file open for writing on a disk that is full."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def test_a_download_onto_a_full_disk_names_the_file(
    tiny_laion_root: Path, tmp_path: Path, monkeypatch, record_property
):
    """Not a 'could not reach the server' error: the local file that cannot be written."""
    from neurotorch.fmri.download import download_laion_fmri
    from neurotorch.io import remote_cache

    monkeypatch.setattr(
        remote_cache, "open", lambda path, mode: _FullDisk(open(path, mode)), raising=False
    )
    out = tmp_path / "out"
    with pytest.raises(OutputWriteError) as info:
        download_laion_fmri(out, subjects=SUB, sessions=SES, source=tiny_laion_root, workers=2)
    named = str(out) in str(info.value) and info.value.errno == errno.ENOSPC
    record_property("fault", "named" if named else "misnamed")
    assert named, str(info.value)


# -- settings that name the data root: the error names the setting -----------------------------------


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("NEUROTORCH_DATA", str(tmp_path / "empty-home"))
    monkeypatch.delenv("LAION_FMRI_DATA_DIR", raising=False)
    config = tmp_path / "cfg" / "laion_fmri" / "config.json"
    config.parent.mkdir(parents=True)
    return config


def _outcome(call: Callable[[], object], error: type, *culprits: str) -> tuple[str, str]:
    try:
        call()
    except error as exc:
        return ("named" if all(c in str(exc) for c in culprits) else "misnamed"), str(exc)
    except Exception as exc:  # noqa: BLE001 - any other exception is the finding
        return "unnamed", repr(exc)
    return "silent", ""


def test_config_naming_a_missing_folder(config_home: Path, tmp_path: Path, record_property):
    from neurotorch.fmri import load_subject

    config_home.write_text(json.dumps({"data_dir": str(tmp_path / "moved")}))
    outcome, message = _outcome(
        lambda: load_subject(SUB), DataNotDownloadedError, str(config_home), "dataset_initialize"
    )
    record_property("fault", outcome)
    assert outcome == "named", message


def test_config_holding_a_relative_path(
    config_home: Path, tiny_laion_root: Path, tmp_path: Path, monkeypatch, record_property
):
    """laion_fmri reads a relative path from the current folder: so does neurotorch, with a
    warning naming the file; a relative path that leads nowhere names the file too."""
    from neurotorch.fmri import load_subject

    monkeypatch.chdir(tiny_laion_root.parent)
    config_home.write_text(json.dumps({"data_dir": tiny_laion_root.name}))
    with pytest.warns(UserWarning, match="relative"):
        assert load_subject(SUB).root.url == str(tiny_laion_root.resolve())
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=str(config_home)):
        outcome, message = _outcome(
            lambda: load_subject(SUB), DataNotDownloadedError, str(config_home)
        )
    record_property("fault", outcome)
    assert outcome == "named", message


def test_stale_variable_overriding_the_config(
    config_home: Path, tiny_laion_root: Path, tmp_path: Path, monkeypatch, record_property
):
    """``LAION_FMRI_DATA_DIR`` left pointing at an old tree wins over the config file: the error
    says so, naming both."""
    from neurotorch.fmri import load_subject

    config_home.write_text(json.dumps({"data_dir": str(tiny_laion_root)}))
    stale = tmp_path / "old-tree"
    other_subject = "derivatives/glmsingle-tedana/sub-02"
    shutil.copytree(tiny_laion_root / other_subject, stale / other_subject)
    monkeypatch.setenv("LAION_FMRI_DATA_DIR", str(stale))
    outcomes = [
        _outcome(
            lambda: load_subject(SUB), SubjectNotFoundError, "LAION_FMRI_DATA_DIR", str(config_home)
        )
    ]
    monkeypatch.setenv("LAION_FMRI_DATA_DIR", str(tmp_path / "gone"))
    outcomes.append(
        _outcome(lambda: load_subject(SUB), DataNotDownloadedError, "LAION_FMRI_DATA_DIR")
    )
    record_property("fault", "named" if all(o == "named" for o, _ in outcomes) else "silent")
    assert all(o == "named" for o, _ in outcomes), outcomes


def test_dataset_initialize_makes_laion_fmri_metadata_folder(config_home: Path, tmp_path: Path):
    """laion_fmri's dataset_initialize creates ``<DIR>/.laion_fmri/`` (its downloader keeps its
    licence marker there); neurotorch's does too, and records the absolute path."""
    from neurotorch.fmri import dataset_initialize

    folder = tmp_path / "data"
    folder.mkdir()
    dataset_initialize(str(folder))
    assert (folder / ".laion_fmri").is_dir()
    assert json.loads(config_home.read_text()) == {"data_dir": str(folder.resolve())}


# -- strings where lists of names are expected -------------------------------------------------------


@pytest.mark.slow
def test_a_string_is_one_name(tiny_laion_root: Path, tmp_path: Path):
    from neurotorch.fmri import load_subject
    from neurotorch.fmri.download import download_laion_fmri
    from neurotorch.fmri.splits import get_split_masks, get_train_test_ids

    train, test = get_train_test_ids("random_0", data_dir=tiny_laion_root)
    train_mask, test_mask = get_split_masks(test[0], "random_0", data_dir=tiny_laion_root)
    assert train_mask.tolist() == [False] and test_mask.tolist() == [True]
    sub = load_subject(SUB, tiny_laion_root)
    assert list(sub.get_roi_masks("face")) == ["face"]
    result = download_laion_fmri(
        tmp_path / "out", subjects=SUB, sessions=SES, source=tiny_laion_root, workers=1
    )
    assert {rel.split("/")[2] for rel in result.files if rel.startswith("derivatives/glm")} == {SUB}


# -- concurrent first use: one process writes, the others wait and reuse -----------------------------

FIRST_USE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    ready, go = Path(sys.argv[1]), Path(sys.argv[2])
    ready.touch()
    while not go.exists():
        time.sleep(0.01)
    {call}
    print("ok")
    """
)


def _three_processes(call: str, tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """Run ``call`` in three processes released at the same moment."""
    script = FIRST_USE.format(call=call)
    go = tmp_path / "go"
    procs = []
    for k in range(3):
        ready = tmp_path / f"ready-{k}"
        command = [sys.executable, "-c", script, str(ready), str(go)]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        procs.append((subprocess.Popen(command, env=_env(), **pipes), ready))
    deadline = time.monotonic() + 120
    while not all(ready.exists() for _, ready in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    results = []
    for proc, _ in procs:
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


WRITERS = {
    "calibrain": ("neurotorch.synthetic.meeg", "make_calibrain", "CaliBrain"),
    "laion-fmri": ("neurotorch.synthetic.laion_fmri", "make_laion_fmri", "LAION-fMRI"),
    "connectome": ("neurotorch.synthetic.connectome", "make_connectome_dataset", "connectome"),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(WRITERS))
def test_three_processes_write_one_synthetic_dataset(family: str, tmp_path: Path, record_property):
    module, function, what = WRITERS[family]
    out = tmp_path / "dataset"
    call = f"from {module} import {function}; {function}({str(out)!r}, size='tiny')"
    results = _three_processes(call, tmp_path)
    writers = sum(f"writing a synthetic {what} dataset" in r.stderr for r in results)
    ok = all(r.returncode == 0 and r.stdout.strip() == "ok" for r in results)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".dataset")]
    intact = ok and writers == 1 and not leftovers
    record_property("durability", "intact" if intact else "damaged")
    assert intact, ([r.stderr[-2000:] for r in results], writers, leftovers)


@pytest.mark.slow
def test_three_processes_verify_and_index_one_file(tmp_path: Path, record_property):
    """The verification record and the seek index of one file, asked for by three processes at
    once: each gets a correct answer, one record and one index are kept."""
    path = tmp_path / "betas.nii.gz"
    data = np.random.default_rng(1).standard_normal((8, 8, 8, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    call = (
        "import numpy as np; from neurotorch.io.integrity import verify_before_use; "
        "from neurotorch.io.seek_index import read_volumes; "
        "from neurotorch.io.storage import DataRoot; "
        f"verify_before_use(DataRoot({str(tmp_path)!r}), 'betas.nii.gz'); "
        f"np.save({str(tmp_path)!r} + f'/v{{os.getpid()}}.npy', read_volumes({str(path)!r}, [7]))"
    )
    results = _three_processes(call, tmp_path)
    volumes = [np.load(p) for p in tmp_path.glob("v*.npy")]
    from neurotorch.io.integrity import is_verified
    from neurotorch.io.seek_index import index_path
    from neurotorch.io.storage import DataRoot

    correct = len(volumes) == 3 and all(np.array_equal(v[0], data[..., 7]) for v in volumes)
    intact = (
        all(r.returncode == 0 for r in results)
        and correct
        and is_verified(DataRoot(tmp_path), "betas.nii.gz")
        and index_path(path).is_file()
    )
    record_property("durability", "intact" if intact else "damaged")
    assert intact, [r.stderr[-2000:] for r in results]
