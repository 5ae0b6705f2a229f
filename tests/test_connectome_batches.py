"""Connectome batch files: both mask_indices layouts, consistency checks, conversion from NIfTI."""

from __future__ import annotations

import pickle

import h5py
import nibabel as nib
import numpy as np
import pytest

from neurotorch.connectome import ConnectomeBatches, convert_timeseries
from neurotorch.connectome.checksum import fletcher32_matches, with_fletcher32
from neurotorch.connectome.writer import write_batch
from neurotorch.errors import (
    CorruptFileError,
    DatasetExistsError,
    FormatError,
    OrientationMismatchError,
    ShapeMismatchError,
    SpaceMismatchError,
)

SHAPE = (6, 7, 5)
AFFINE = np.array([[3.0, 0, 0, -9], [0, 3, 0, -10], [0, 0, 3, -6], [0, 0, 0, 1]])


def _mask():
    mask = np.zeros(SHAPE, dtype=bool)
    mask[1:5, 1:6, 1:4] = True
    mask[2, 3, 2] = False
    return mask


def _series(rng, n_timepoints=12):
    return rng.standard_normal(SHAPE + (n_timepoints,)).astype(np.float32)


def _write(path, subjects, mask, n_timepoints=12, affine=AFFINE, indices_layout="rows"):
    idx = np.argwhere(mask)
    return write_batch(
        path,
        (s[tuple(idx.T)].T for s in subjects),
        [f"{path.stem}-s{i}" for i in range(len(subjects))],  # ids unique across files
        idx,
        affine,
        mask.shape,
        n_timepoints,
        indices_layout=indices_layout,
    )


@pytest.mark.parametrize("indices_layout", ["rows", "columns"])
def test_both_index_layouts_read_like_nibabel(tmp_path, indices_layout):
    rng = np.random.default_rng(0)
    mask = _mask()
    subjects = [_series(rng) for _ in range(5)]
    _write(tmp_path / "x_chunk_000.h5", subjects[:3], mask, indices_layout=indices_layout)
    _write(tmp_path / "x_chunk_001.h5", subjects[3:], mask, indices_layout=indices_layout)
    with h5py.File(tmp_path / "x_chunk_000.h5") as f:
        stored = f["mask_indices"].shape
        assert stored == ((mask.sum(), 3) if indices_layout == "rows" else (3, mask.sum()))
    batches = ConnectomeBatches(tmp_path)
    assert (batches.n_subjects, batches.n_timepoints, batches.n_voxels) == (5, 12, mask.sum())
    np.testing.assert_array_equal(batches.mask, mask)
    np.testing.assert_array_equal(batches.affine, AFFINE)
    for s, series in enumerate(subjects):
        np.testing.assert_array_equal(batches.read_subject(s), series[mask].T)
    volume = batches.to_volume(batches.read_subject(4))
    np.testing.assert_array_equal(volume[:, mask], subjects[4][mask].T)
    clone = pickle.loads(pickle.dumps(batches))
    np.testing.assert_array_equal(clone.read_subject(2), subjects[2][mask].T)


def test_inconsistent_batch_files_raise(tmp_path):
    rng = np.random.default_rng(1)
    mask = _mask()
    other_mask = mask.copy()
    other_mask[1, 1, 1] = False
    other_affine = AFFINE.copy()
    other_affine[0, 3] += 1.5
    second_file = {
        "mask": dict(subjects=[_series(rng)], mask=other_mask),
        "timepoints": dict(subjects=[_series(rng, 10)], mask=mask, n_timepoints=10),
        "affine": dict(subjects=[_series(rng)], mask=mask, affine=other_affine),
    }
    for name, kwargs in second_file.items():
        folder = tmp_path / name
        folder.mkdir()
        _write(folder / "x_chunk_000.h5", [_series(rng)], mask)
        _write(folder / "x_chunk_001.h5", **kwargs)
        with pytest.raises(ShapeMismatchError, match="x_chunk_001.h5"):
            ConnectomeBatches(folder)


def test_malformed_files_raise(tmp_path):
    rng = np.random.default_rng(2)
    mask = _mask()
    path = _write(tmp_path / "x_chunk_000.h5", [_series(rng)], mask)
    with h5py.File(path, "a") as f:
        f.attrs["n_subjects"] = 7
    with pytest.raises(FormatError, match="n_subjects"):
        ConnectomeBatches(path)
    with h5py.File(path, "a") as f:
        f.attrs["n_subjects"] = 1
        del f["mask_affine"]
    with pytest.raises(FormatError, match="mask_affine"):
        ConnectomeBatches(path)
    with h5py.File(path, "a") as f:
        f.create_dataset("mask_affine", data=AFFINE)
        offset = f["timeseries"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as f:  # damage the deflate stream of subject 0
        f.seek(offset + 10)
        f.write(b"\xff" * 64)
    with pytest.raises(CorruptFileError, match="x_chunk_000.h5"):
        ConnectomeBatches(path).read_subject(0)
    garbage = tmp_path / "y_chunk_000.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(CorruptFileError, match="y_chunk_000.h5"):
        ConnectomeBatches(garbage)


def _save(tmp_path, name, data, affine):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_convert_reorients_and_matches_nibabel(tmp_path):
    rng = np.random.default_rng(3)
    mask = _mask()
    series = [_series(rng) for _ in range(3)]
    mask_path = _save(tmp_path, "mask.nii.gz", mask.astype(np.uint8), AFFINE)
    # subject 1 is stored left-right flipped (LAS) with a truthful affine
    las = AFFINE.copy()
    las[0, 0] *= -1
    las[0, 3] = AFFINE[0, 3] + AFFINE[0, 0] * (SHAPE[0] - 1)
    paths = [
        _save(tmp_path, "sub-a.nii.gz", series[0], AFFINE),
        _save(tmp_path, "sub-b.nii.gz", series[1][::-1].copy(), las),
        _save(tmp_path, "sub-c.nii.gz", series[2], AFFINE),
    ]
    out = convert_timeseries(paths, mask_path, tmp_path / "out", subjects_per_chunk=2)
    assert [p.name for p in out] == ["gsp1000_chunk_000.h5", "gsp1000_chunk_001.h5"]
    batches = ConnectomeBatches(tmp_path / "out")
    assert batches.subject_ids == ["sub-a", "sub-b", "sub-c"]
    for s in range(3):
        expected = nib.load(paths[s]).get_fdata()
        if s == 1:
            expected = expected[::-1]
        np.testing.assert_allclose(batches.read_subject(s), expected[mask].T, rtol=1e-6)
    # resuming leaves complete batch files untouched
    before = [p.stat().st_mtime_ns for p in out]
    convert_timeseries(paths, mask_path, tmp_path / "out", subjects_per_chunk=2)
    assert [p.stat().st_mtime_ns for p in out] == before
    # converting fewer subjects there would leave sub-c's file in the connectome: refused
    with pytest.raises(DatasetExistsError, match="gsp1000_chunk_001.h5"):
        convert_timeseries(paths[:2], mask_path, tmp_path / "out", subjects_per_chunk=2)
    assert [p.stat().st_mtime_ns for p in out] == before
    assert ConnectomeBatches(tmp_path / "out").subject_ids == ["sub-a", "sub-b", "sub-c"]
    with pytest.raises(OrientationMismatchError):
        convert_timeseries(
            paths, mask_path, tmp_path / "strict", subjects_per_chunk=2, reorient=False
        )


def test_convert_mismatches_raise(tmp_path):
    rng = np.random.default_rng(4)
    mask_path = _save(tmp_path, "mask.nii.gz", _mask().astype(np.uint8), AFFINE)
    good = _save(tmp_path, "good.nii.gz", _series(rng), AFFINE)
    shifted = AFFINE.copy()
    shifted[:3, 3] += 3.0
    cases = {
        "grid": _save(tmp_path, "grid.nii.gz", _series(rng), shifted),
        "shape": _save(
            tmp_path, "shape.nii.gz", rng.standard_normal((5, 7, 5, 12)).astype(np.float32), AFFINE
        ),
        "timepoints": _save(tmp_path, "short.nii.gz", _series(rng, 9), AFFINE),
    }
    for name, bad in cases.items():
        with pytest.raises(ShapeMismatchError, match=bad.name):
            convert_timeseries([good, bad], mask_path, tmp_path / name)
        assert not any((tmp_path / name).glob("*.h5")), "no partial batch file may remain"


@pytest.mark.parametrize(
    ("filters", "direct"),
    [
        ({}, True),  # as written by neurotorch: deflate + Fletcher-32
        ({"fletcher32": True}, True),  # the same, checksums computed by HDF5
        ({"fletcher32": False}, True),  # plain deflate (Lacuna's converters)
        ({"shuffle": True}, False),
        ({"compression": None}, False),
        ("checksum-then-deflate", False),  # valid, but the checksum covers the raw bytes
    ],
)
def test_direct_inflate_and_h5py_fallback_read_like_h5py(tmp_path, filters, direct):
    """Deflate chunks (checksummed or not) are inflated directly; other pipelines go via h5py."""
    rng = np.random.default_rng(6)
    mask = _mask()
    path = _write(tmp_path / "x_chunk_000.h5", [_series(rng) for _ in range(3)], mask)
    if filters:  # rewrite the time series with another filter pipeline
        with h5py.File(path, "a") as f:
            data = f["timeseries"][()]
            del f["timeseries"]
            if filters == "checksum-then-deflate":
                _create_checksummed_before_deflate(f, data)
            else:
                options = {"compression": "gzip", **filters}
                f.create_dataset("timeseries", data=data, chunks=(1,) + data.shape[1:], **options)
    with h5py.File(path) as f:
        expected = f["timeseries"][()]
    batches = ConnectomeBatches(path)
    raw_reads = []
    read_raw_chunk = batches._raw_chunk
    batches._raw_chunk = lambda *args: raw_reads.append(args) or read_raw_chunk(*args)
    buffer = np.empty(expected.shape[1:], dtype=np.float32)
    for s in range(3):
        assert batches.read_subject(s, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, expected[s])
    streamed = [x.copy() for _, x in batches.iter_subjects(prefetch=True, reuse_buffers=True)]
    np.testing.assert_array_equal(np.stack(streamed), expected)
    assert len(raw_reads) == (6 if direct else 0), "only deflate chunks are read raw"


def _create_checksummed_before_deflate(f: h5py.File, data: np.ndarray) -> None:
    """``timeseries`` with Fletcher-32 first in its pipeline, then deflate (h5py's high-level API
    always puts the checksum last)."""
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_chunk((1,) + data.shape[1:])
    plist.set_fletcher32()
    plist.set_deflate(4)
    space = h5py.h5s.create_simple(data.shape)
    h5py.h5d.create(f.id, b"timeseries", h5py.h5t.IEEE_F32LE, space, dcpl=plist).write(
        h5py.h5s.ALL, h5py.h5s.ALL, data
    )


@pytest.mark.parametrize("n_bytes", [1, 2, 3, 31, 32, 33, 4097, 300_001])
@pytest.mark.parametrize("content", ["random", "zeros", "ones"])
def test_fletcher32_matches_hdf5(tmp_path, n_bytes, content):
    """The checksum neurotorch writes and verifies is the one HDF5 computes for the chunk."""
    rng = np.random.default_rng(n_bytes)
    data = {
        "random": rng.integers(0, 256, n_bytes),
        "zeros": np.zeros(n_bytes),
        "ones": np.full(n_bytes, 255),
    }[content]
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("x", data=data.astype(np.uint8), chunks=(n_bytes,), fletcher32=True)
    with h5py.File(tmp_path / "f.h5") as f:
        stored = f["x"].id.read_direct_chunk((0,))[1]
    assert with_fletcher32(stored[:-4]) == stored
    assert fletcher32_matches(stored)
    damaged = bytearray(stored)
    damaged[len(stored) // 2] ^= 0x10
    assert not fletcher32_matches(bytes(damaged))


def _flip_byte(path, subject, position):
    """Flip one bit of a byte of a subject's stored chunk; ``position`` counts from its start."""
    with h5py.File(path) as f:
        info = f["timeseries"].id.get_chunk_info_by_coord((subject, 0, 0))
    offset = info.byte_offset + (position % info.size)
    with open(path, "r+b") as raw:
        raw.seek(offset)
        byte = raw.read(1)[0]
        raw.seek(offset)
        raw.write(bytes([byte ^ 0x04]))


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("where", ["data", "checksum"])
def test_flipped_byte_in_batch_file_raises(tmp_path, compress, where):
    """A flipped byte anywhere in a subject's chunk, the checksum itself included, is named."""
    rng = np.random.default_rng(7)
    mask = _mask()
    subjects = [_series(rng) for _ in range(3)]
    idx = np.argwhere(mask)
    path = write_batch(
        tmp_path / "x_chunk_000.h5",
        (s[tuple(idx.T)].T for s in subjects),
        ["a", "b", "c"],
        idx,
        AFFINE,
        mask.shape,
        12,
        compress=compress,
    )
    _flip_byte(path, 1, {"data": 57, "checksum": -2}[where])
    batches = ConnectomeBatches(path)
    assert batches.headers[0].checksummed
    np.testing.assert_array_equal(batches.read_subject(0), subjects[0][mask].T)
    with pytest.raises(CorruptFileError, match="x_chunk_000.h5"):
        batches.read_subject(1)
    np.testing.assert_array_equal(batches.read_subject(2), subjects[2][mask].T)


def _write_like_lacuna_converter(path, subjects, mask, affine):
    """A batch file as lacuna.utils.create_connectome_batches writes it (documented layout)."""
    where = np.where(mask)
    with h5py.File(path, "w") as f:
        series = f.create_dataset(
            "timeseries",
            shape=(len(subjects), subjects[0].shape[-1], len(where[0])),
            dtype=np.float32,
            chunks=(1, subjects[0].shape[-1], len(where[0])),
            compression="gzip",
            compression_opts=1,
        )
        f.create_dataset("mask_indices", data=np.vstack(where))
        f.create_dataset("mask_affine", data=affine)
        f.attrs["n_subjects"] = len(subjects)
        f.attrs["n_timepoints"] = subjects[0].shape[-1]
        f.attrs["n_voxels"] = len(where[0])
        f.attrs["mask_shape"] = mask.shape
        for row, data in enumerate(subjects):
            series[row] = data.astype(np.float64)[where].T


def test_lacuna_second_converter_layout(tmp_path):
    """``connectome_batch_NNN.h5``, (3, n) indices, no space: read; space from the caller."""
    rng = np.random.default_rng(8)
    mask = _mask()
    subjects = [_series(rng) for _ in range(5)]
    for k, chunk in enumerate([subjects[:2], subjects[2:]]):
        _write_like_lacuna_converter(tmp_path / f"connectome_batch_{k:03d}.h5", chunk, mask, AFFINE)
    batches = ConnectomeBatches(tmp_path)
    assert batches.space == "unknown"
    assert (batches.n_subjects, batches.n_voxels) == (5, mask.sum())
    np.testing.assert_array_equal(batches.mask, mask)
    for s, series in enumerate(subjects):
        np.testing.assert_array_equal(batches.read_subject(s), series[mask].T)
    assert ConnectomeBatches(tmp_path, space="MNI152NLin6Asym").space == "MNI152NLin6Asym"


def test_declared_space_must_match_the_given_one(tmp_path):
    rng = np.random.default_rng(9)
    path = _write(tmp_path / "x_chunk_000.h5", [_series(rng)], _mask())
    assert ConnectomeBatches(path, space="MNI152NLin6Asym").space == "MNI152NLin6Asym"
    with pytest.raises(SpaceMismatchError, match="x_chunk_000.h5"):
        ConnectomeBatches(path, space="MNI152NLin2009cAsym")


def test_flipped_byte_in_mask_indices_raises(tmp_path):
    """The metadata datasets are checksummed too: a damaged mask is named, not served."""
    rng = np.random.default_rng(10)
    path = _write(tmp_path / "x_chunk_000.h5", [_series(rng)], _mask())
    with h5py.File(path) as f:
        offset = f["mask_indices"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as raw:
        raw.seek(offset + 5)
        byte = raw.read(1)[0]
        raw.seek(offset + 5)
        raw.write(bytes([byte ^ 0x01]))
    with pytest.raises(CorruptFileError, match="x_chunk_000.h5"):
        ConnectomeBatches(path)
