"""Full-pass integrity checks (`neurotorch.io.integrity`) and the ``neurotorch verify`` command.

Each damaged file is made by hand (flipped or cut bytes) and must come out ``"bad"``; a sound file
of the same kind must pass. The record of verified files must spare a second full pass and must
not outlive a change to the file.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import zipfile
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from neurotorch.cli import main
from neurotorch.errors import CorruptFileError
from neurotorch.io import integrity
from neurotorch.io.integrity import check_file, is_verified, verify_before_use
from neurotorch.io.storage import DataRoot

pytest_plugins = ["s3_server"]


def flip(path: Path, offset: int, n: int = 1) -> None:
    data = bytearray(path.read_bytes())
    for k in range(n):
        data[offset + k] ^= 0xFF
    path.write_bytes(bytes(data))


def write_betas(path: Path, n_volumes: int = 7) -> Path:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((5, 4, 3, n_volumes)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def write_h5(path: Path, fletcher32: bool) -> tuple[Path, int]:
    """An HDF5 file with one chunked float dataset; returns the path and the file offset of its
    only chunk (where a flipped byte damages data, not metadata)."""
    values = np.arange(4000, dtype=np.float64).reshape(40, 100)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=values, chunks=(40, 100), fletcher32=fletcher32)
        f.attrs["note"] = "test"
    with h5py.File(path, "r") as f:
        offset = f["x"].id.get_chunk_info(0).byte_offset
    return path, offset


def status(folder: Path, name: str) -> str:
    return check_file(DataRoot(folder), name).status


def test_sound_files_pass_with_their_kind_of_check(tmp_path):
    write_betas(tmp_path / "betas.nii.gz")
    write_betas(tmp_path / "betas.nii")
    write_h5(tmp_path / "checked.h5", fletcher32=True)
    write_h5(tmp_path / "plain.h5", fletcher32=False)
    np.savez(tmp_path / "arrays.npz", a=np.arange(10))
    np.save(tmp_path / "array.npy", np.arange(10))
    (tmp_path / "table.tsv").write_text("a\tb\n1\t2\n")
    (tmp_path / "split.json").write_text('{"a": 1}')
    (tmp_path / "readme.txt").write_text("hi")
    found = {r.path: r.status for r in integrity.check_files(DataRoot(tmp_path), progress=False)}
    assert found == {
        "array.npy": "no checksum",
        "arrays.npz": "verified",
        "betas.nii": "no checksum",
        "betas.nii.gz": "verified",
        "checked.h5": "verified",
        "plain.h5": "no checksum",
        "readme.txt": "skipped",
        "split.json": "no checksum",
        "table.tsv": "no checksum",
    }


@pytest.mark.parametrize("where", [0.3, 0.75, -8, -2])  # inside the deflate data; CRC; ISIZE
def test_gzip_damage_anywhere_is_found(tmp_path, where):
    path = write_betas(tmp_path / "betas.nii.gz")
    size = path.stat().st_size
    flip(path, int(size * where) if where > 0 else size + where)
    result = check_file(DataRoot(tmp_path), path.name)
    assert result.status == "bad" and path.name in result.detail
    assert isinstance(result.error, CorruptFileError)


def test_recompressed_truncated_nifti_is_incomplete(tmp_path):
    """A valid gzip stream of a cut NIfTI: the CRC matches, the header's size does not."""
    path = write_betas(tmp_path / "betas.nii.gz")
    content = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(content[:-100]))
    result = check_file(DataRoot(tmp_path), path.name)
    assert result.status == "bad" and "needs" in result.detail


def test_plain_gz_that_is_not_gzip(tmp_path):
    (tmp_path / "x.tsv.gz").write_bytes(b"not compressed")
    assert status(tmp_path, "x.tsv.gz") == "bad"


def test_hdf5_fletcher32_catches_a_flipped_data_byte(tmp_path):
    path, offset = write_h5(tmp_path / "checked.h5", fletcher32=True)
    flip(path, offset + 17)
    assert status(tmp_path, path.name) == "bad"


def test_hdf5_without_checksum_says_so_and_cannot_see_a_flip(tmp_path):
    path, offset = write_h5(tmp_path / "plain.h5", fletcher32=False)
    flip(path, offset + 17)
    result = check_file(DataRoot(tmp_path), path.name)
    assert result.status == "no checksum" and "no fletcher32" in result.detail


def test_hdf5_truncated(tmp_path):
    path, _ = write_h5(tmp_path / "checked.h5", fletcher32=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert status(tmp_path, path.name) == "bad"


def test_npz_member_crc(tmp_path):
    path = tmp_path / "arrays.npz"
    np.savez(path, a=np.arange(1000, dtype=np.int64))
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("a.npy")
    # the member's data start after its local header (30 bytes + name + extra field)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
    flip(path, info.header_offset + 30 + int(name_len) + int(extra_len) + 500)
    assert status(tmp_path, path.name) == "bad"


def test_npy_truncated(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.arange(100))
    path.write_bytes(path.read_bytes()[:-8])
    assert status(tmp_path, path.name) == "bad"


@pytest.mark.parametrize(("name", "text"), [("t.tsv", ""), ("s.json", "{not json")])
def test_unparsable_tables(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    assert status(tmp_path, name) == "bad"


def test_a_file_is_read_in_full_once_per_version(tmp_path, monkeypatch):
    path = write_betas(tmp_path / "betas.nii.gz")
    root = DataRoot(tmp_path)
    calls = []
    real = integrity.check_file
    monkeypatch.setattr(integrity, "check_file", lambda *a: calls.append(a) or real(*a))
    verify_before_use(root, path.name)
    verify_before_use(root, path.name)
    assert len(calls) == 1 and is_verified(root, path.name)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed
    assert not is_verified(root, path.name)
    verify_before_use(root, path.name)
    assert len(calls) == 2
    verify_before_use(root, path.name, mode="off")
    assert len(calls) == 2


def test_a_damaged_file_is_never_recorded(tmp_path):
    path = write_betas(tmp_path / "betas.nii.gz")
    flip(path, path.stat().st_size // 2)
    root = DataRoot(tmp_path)
    for _ in range(2):  # the second call checks again: nothing was recorded
        with pytest.raises(CorruptFileError, match=path.name):
            verify_before_use(root, path.name)
    assert not is_verified(root, path.name)


def test_verify_command(tmp_path, capsys):
    write_betas(tmp_path / "good.nii.gz")
    bad = write_betas(tmp_path / "bad.nii.gz")
    write_h5(tmp_path / "plain.h5", fletcher32=False)
    flip(bad, bad.stat().st_size // 2)
    assert main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    bad_rows = [line for line in out.splitlines() if line.startswith("bad ")]
    assert len(bad_rows) == 1 and "bad.nii.gz" in bad_rows[0]
    summary = {line.split()[0]: line.split()[1:] for line in out.splitlines()[-4:]}
    assert summary["all"] == ["1", "1", "1", "0"]  # verified, no checksum, bad, skipped
    bad.unlink()
    assert main(["verify", str(tmp_path), "--all"]) == 0
    assert "good.nii.gz" in capsys.readouterr().out


def test_verify_command_on_one_file_and_on_a_missing_path(tmp_path, capsys):
    good = write_betas(tmp_path / "good.nii.gz")
    bad = write_betas(tmp_path / "bad.nii.gz")
    flip(bad, -8)
    assert main(["verify", str(good)]) == 0
    assert main(["verify", str(bad)]) == 1
    assert "bad.nii.gz" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_summary_table_counts_per_kind():
    results = [
        integrity.FileCheck("a.nii.gz", "nifti-gzip", "verified", ""),
        integrity.FileCheck("b.nii.gz", "nifti-gzip", "bad", ""),
        integrity.FileCheck("c.h5", "hdf5", "no checksum", ""),
    ]
    rows = [line.split() for line in integrity.summary_table(results)]
    assert rows[0] == ["kind", "verified", "no", "checksum", "bad", "skipped"]
    assert rows[1:] == [
        ["hdf5", "0", "1", "0", "0"],
        ["nifti-gzip", "1", "0", "1", "0"],
        ["all", "1", "1", "1", "0"],
    ]


def test_records_survive_json_round_trip(tmp_path):
    """A record is plain JSON naming the file and its version (readable by a person)."""
    path = write_betas(tmp_path / "betas.nii.gz")
    root = DataRoot(tmp_path)
    verify_before_use(root, path.name)
    records = list((integrity.cache_dir() / integrity.RECORD_DIR).rglob("*.json"))
    contents = [json.loads(r.read_text()) for r in records]
    mine = [c for c in contents if c["path"] == root.path(path.name)]
    assert mine and mine[0]["size"] == path.stat().st_size


def test_remote_files_are_verified_and_recorded_by_etag(moto_server, tmp_path, capsys):
    """The same checks through ``s3://``: a damaged object is found, a sound one is recorded."""
    local = tmp_path / "tree"
    local.mkdir()
    write_betas(local / "good.nii.gz")
    bad = write_betas(local / "bad.nii.gz")
    write_h5(local / "checked.h5", fletcher32=True)
    flip(bad, bad.stat().st_size // 2)
    url = moto_server.upload_tree(local, "verify-remote", prefix="data", public=True)
    root = DataRoot(url, moto_server.options())
    with pytest.raises(CorruptFileError, match="bad.nii.gz"):
        verify_before_use(root, "bad.nii.gz")
    verify_before_use(root, "good.nii.gz")
    assert is_verified(root, "good.nii.gz") and not is_verified(root, "bad.nii.gz")
    assert main(["verify", url, "--endpoint-url", moto_server.endpoint]) == 1
    out = capsys.readouterr().out
    assert "bad.nii.gz" in out and "good.nii.gz" not in out  # only bad files are listed


def test_download_checks_what_it_transferred(tiny_laion_root, tmp_path):
    """A damaged source file is named after the download and not kept; the sound ones are
    recorded."""
    from neurotorch.fmri import layout
    from neurotorch.fmri.download import download_laion_fmri

    source = Path(shutil.copytree(tiny_laion_root, tmp_path / "source"))
    betas = layout.session_betas("sub-01", "ses-01")
    flip(source / betas, (source / betas).stat().st_size // 2)
    out = tmp_path / "out"
    selection = dict(subjects=["sub-01"], sessions=["ses-01"], source=source, workers=2)
    with pytest.raises(CorruptFileError, match=Path(betas).name):
        download_laion_fmri(out, **selection)
    local = DataRoot(out)
    trials = layout.session_trials("sub-01", "ses-01")
    assert is_verified(local, trials) and not (out / betas).exists()


def test_a_store_build_records_its_source(tiny_laion_root, tmp_path):
    from neurotorch.data.fmri.store import build_store
    from neurotorch.fmri import layout

    root = DataRoot(Path(shutil.copytree(tiny_laion_root, tmp_path / "tree")))
    betas = layout.session_betas("sub-01", "ses-01")
    assert not is_verified(root, betas)
    build_store(root, "sub-01", ["ses-01"], cache_dir=tmp_path / "cache", progress=False)
    assert is_verified(root, betas)
    assert not is_verified(root, layout.session_betas("sub-01", "ses-02"))  # not built
