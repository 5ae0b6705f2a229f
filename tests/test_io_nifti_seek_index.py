"""Random access to volumes through a saved gzip seek index, against nibabel's full load (and
the one-core inflate from the index's points against the standard library's gzip)."""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurotorch.errors import (
    CorruptFileError,
    MissingDependencyError,
    ParameterError,
    ShapeMismatchError,
)
from neurotorch.io import index_points, seek_index
from neurotorch.io.index_points import IndexPoints, PointReader, UnreadableIndex
from neurotorch.io.seek_index import build_index, index_path, iter_volume_range, read_volumes

BACKENDS = ["rapidgzip", "indexed_gzip"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NEUROTORCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NEUROTORCH_PROGRESS", "0")
    return tmp_path / "cache"


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch) -> str:
    pytest.importorskip(request.param)
    monkeypatch.setattr(seek_index, "index_backend", lambda: request.param)
    return request.param


@pytest.fixture
def scaled_betas(tmp_path) -> Path:
    """int16 betas with the scale factors nibabel picks for float data."""
    rng = np.random.default_rng(7)
    image = nib.Nifti1Image(rng.standard_normal((9, 8, 7, 25)).astype(np.float32), np.eye(4))
    image.set_data_dtype(np.int16)
    path = tmp_path / "sub-01_ses-01_betas.nii.gz"
    nib.save(image, path)
    return path


def test_volumes_equal_nibabel(scaled_betas, backend, cache):
    expected = nib.load(scaled_betas).get_fdata(dtype=np.float32)
    mask = expected[..., 0] > 0
    chosen = [24, 3, -2, 3]
    masked = read_volumes(scaled_betas, chosen, mask)
    full = read_volumes(scaled_betas, chosen)
    for row, k in enumerate([24, 3, 23, 3]):
        np.testing.assert_array_equal(masked[row], expected[..., k][mask])
        np.testing.assert_array_equal(full[row], expected[..., k])
    assert masked.dtype == full.dtype == np.float32
    saved = index_path(scaled_betas, backend)
    assert saved.parent == cache / "gzip-index" and saved.exists()
    assert not list(saved.parent.glob("*.tmp*"))


@pytest.mark.parametrize("threads", [1, 2])  # decoded on the helper thread / on the caller
def test_a_range_of_volumes_equals_nibabel(scaled_betas, backend, threads):
    expected = nib.load(scaled_betas).get_fdata(dtype=np.float32)
    mask = expected[..., 0] > 0
    build_index(scaled_betas)
    got = list(iter_volume_range(scaled_betas, 4, 21, mask=mask, threads=threads))
    assert [volume for volume, _ in got] == list(range(4, 21))
    for volume, values in got:  # each a new array: none overwritten by a later volume
        np.testing.assert_array_equal(values, expected[..., volume][mask])


@pytest.mark.parametrize("threads", [0, 1.5, "4"])
def test_a_thread_count_that_is_not_a_positive_integer_is_named(scaled_betas, threads):
    with pytest.raises(ParameterError, match="threads"):
        next(iter_volume_range(scaled_betas, 0, 2, threads=threads))


def test_index_is_built_once_and_reused(scaled_betas, backend, monkeypatch):
    first = build_index(scaled_betas)
    stamp = first.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("the saved index should have been reused")

    monkeypatch.setattr(seek_index, "_build", fail)
    read_volumes(scaled_betas, [5])
    assert build_index(scaled_betas) == first and first.stat().st_mtime_ns == stamp


def test_changed_file_gets_a_new_index(scaled_betas):
    before = index_path(scaled_betas)
    os.utime(scaled_betas, ns=(10**18, 10**18))
    assert index_path(scaled_betas) != before


def test_unreadable_index_is_rebuilt(scaled_betas, backend):
    saved = build_index(scaled_betas)
    saved.write_bytes(b"not an index")
    expected = nib.load(scaled_betas).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(read_volumes(scaled_betas, [11])[0], expected[..., 11])


def test_plain_nifti_needs_no_index(tmp_path, cache):
    data = np.arange(4 * 5 * 6 * 3, dtype=">f8").reshape(4, 5, 6, 3)
    path = tmp_path / "plain.nii"
    nib.save(nib.Nifti2Image(data, np.eye(4)), path)
    np.testing.assert_array_equal(read_volumes(path, [2])[0], data[..., 2].astype(np.float32))
    assert not (cache / "gzip-index").exists()


@pytest.mark.parametrize("damage", ["truncate", "crc"])
def test_corrupt_file_leaves_no_index(scaled_betas, backend, cache, damage):
    content = bytearray(scaled_betas.read_bytes())
    if damage == "truncate":
        content = content[: len(content) * 2 // 3]
    else:
        content[-8] ^= 0xFF
    scaled_betas.write_bytes(bytes(content))
    with pytest.raises(CorruptFileError, match="sub-01_ses-01_betas.nii.gz"):
        read_volumes(scaled_betas, [0])
    leftovers = [p.name for p in (cache / "gzip-index").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_mask_mismatch(scaled_betas):
    with pytest.raises(ShapeMismatchError, match=r"\(9, 8, 6\)"):
        read_volumes(scaled_betas, [0], np.ones((9, 8, 6), dtype=bool))


def test_without_a_seek_backend_the_error_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("rapidgzip", "indexed_gzip") else real(name, *a),
    )
    with pytest.raises(MissingDependencyError, match=r"neurotorch\[fast\]"):
        seek_index.index_backend()


@pytest.fixture
def betas(tmp_path) -> Path:
    """160 volumes of sparse noise (8.8 MB, 4 MB gzipped): index points inside the file, with
    windows, some of them inside a byte."""
    rng = np.random.default_rng(1)
    data = rng.standard_normal((24, 24, 24, 160)).astype(np.float32)
    data[data < 0.3] = 0
    path = tmp_path / "sub-01_ses-01_betas.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


@pytest.mark.parametrize("chunk", [None, 4099])  # compressed bytes per read: carried across
def test_content_from_every_point_equals_gzip(betas, backend, chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(index_points, "_CHUNK", chunk)
    index = IndexPoints(build_index(betas))
    points = index.points
    inside = points[(points["content"] > 0) & (points["content"] < index.content_size)]
    # the cases the reader exists for: a window to prime, a block that starts inside a byte
    assert inside["window"].all() and (inside["bits"] > 0).any(), points
    content = gzip.decompress(betas.read_bytes())
    assert index.content_size == len(content)
    for start in [int(p) + shift for p in points["content"] for shift in (0, 12_345)]:
        with PointReader(str(betas), index) as reader:
            assert reader.seek(min(start, len(content))) == min(start, len(content))
            got = bytearray(300_000)
            n = reader.readinto(got)
        expected = content[start : start + len(got)]
        assert n == len(expected) and got[:n] == expected, start


def test_invalid_deflate_data_at_a_point_is_a_corrupt_file(betas, tmp_path):
    index = IndexPoints(build_index(betas))
    point = index.points[(index.points["window"] == 1) & (index.points["bits"] > 0)][0]
    damaged = bytearray(betas.read_bytes())
    start = int(point["compressed"]) - 1  # the block's header starts in this byte's top bits
    damaged[start : start + 16] = b"\xff" * 16  # block type 3: does not exist
    copy = tmp_path / "damaged.nii.gz"
    copy.write_bytes(bytes(damaged))
    with PointReader(str(copy), index) as reader:
        reader.seek(int(point["content"]))
        with pytest.raises(CorruptFileError, match="damaged.nii.gz is corrupt"):
            reader.readinto(bytearray(1000))


def test_a_range_on_one_thread_is_inflated_by_isal_and_equals_nibabel(betas, backend, monkeypatch):
    expected = nib.load(betas).get_fdata(dtype=np.float32)
    mask = expected[..., 0] > 0
    build_index(betas)

    def no_backend(*args, **kwargs):
        raise AssertionError("one thread reads with isal from the index points")

    monkeypatch.setattr(seek_index, "_open_backend", no_backend)
    for start, stop in [(1, 4), (57, 61), (100, 160)]:
        got = list(iter_volume_range(betas, start, stop, mask=mask, threads=1))
        assert [volume for volume, _ in got] == list(range(start, stop))
        for volume, values in got:
            np.testing.assert_array_equal(values, expected[..., volume][mask])


def test_an_index_of_another_format_is_read_by_its_backend(betas, backend, monkeypatch):
    expected = nib.load(betas).get_fdata(dtype=np.float32)

    def other_format(path):
        raise UnreadableIndex(f"{path} is of another format")

    monkeypatch.setattr(seek_index, "IndexPoints", other_format)
    got = dict(iter_volume_range(betas, 90, 93, threads=1))
    for volume in (90, 91, 92):
        np.testing.assert_array_equal(got[volume], expected[..., volume])


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"NOTGZ" + b[5:],
        lambda b: b[:5] + b"\x02" + b[6:],
        lambda b: b[:-1],
        lambda b: b[:20],
    ],
    ids=["another format", "another version", "a window cut short", "no whole header"],
)
def test_an_index_that_is_not_gzidx_v1_is_unreadable(betas, damage, tmp_path):
    copy = tmp_path / "copy.idx"
    copy.write_bytes(damage(build_index(betas).read_bytes()))
    with pytest.raises(UnreadableIndex):
        IndexPoints(copy)
