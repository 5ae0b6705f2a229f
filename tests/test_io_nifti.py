"""The streaming NIfTI reader against nibabel's full load, bit for bit, and its failure modes."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from nibabel.testing import data_path as NIBABEL_DATA

from neurotorch.errors import CorruptFileError, FormatError, ParameterError, ShapeMismatchError
from neurotorch.io import nifti
from neurotorch.io.inflate import SequentialReader, available_inflaters
from neurotorch.io.nifti import iter_volumes, read_masked_betas, read_nifti_header

IMAGE_CLASSES = {1: nib.Nifti1Image, 2: nib.Nifti2Image}


def write_nifti(
    path: Path,
    raw: np.ndarray,
    *,
    version: int = 1,
    byteorder: str = "<",
    slope: float | None = None,
    inter: float | None = None,
    affine: np.ndarray | None = None,
) -> Path:
    """Write ``raw`` (stored unscaled, in its dtype) with nibabel; optionally set scl_slope/inter.

    nibabel resets the scale factors when it saves an array, so they are set afterwards by
    splicing a header that nibabel itself serialises.
    """
    klass = IMAGE_CLASSES[version]
    header = klass.header_class(endianness=byteorder)
    header.set_data_dtype(raw.dtype)
    affine = np.diag([2.0, 3.0, 4.0, 1.0]) if affine is None else affine
    nib.save(klass(raw, affine, header=header), path)
    if slope is not None or inter is not None:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            content = f.read()
        header = klass.header_class.from_fileobj(io.BytesIO(content), check=False)
        header["scl_slope"] = 1.0 if slope is None else slope
        header["scl_inter"] = 0.0 if inter is None else inter
        block = header.binaryblock
        with opener(path, "wb") as f:
            f.write(block + content[len(block) :])
    return path


def nibabel_volumes(path: Path) -> np.ndarray:
    """nibabel's full load in float32 with every axis after the third flattened (Fortran order)."""
    data = nib.load(path).get_fdata(dtype=np.float32)
    return data.reshape(data.shape[:3] + (-1,), order="F")


def assert_bits_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float32 and expected.dtype == np.float32
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


def assert_stream_equals_nibabel(path: Path, mask: np.ndarray | None) -> None:
    expected = nibabel_volumes(path)
    volumes = list(iter_volumes(path, mask))
    assert len(volumes) == expected.shape[3]
    for k, volume in enumerate(volumes):
        reference = expected[..., k]
        if mask is not None:
            reference = reference.ravel(order="C")[mask.ravel(order="C")]
        assert_bits_equal(volume, reference)


def random_raw(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        raw = rng.standard_normal(shape) * 1e3
        raw.flat[:4] = [np.nan, np.inf, -0.0, 1e-40][: raw.size]
        return raw.astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(params=["inline", "read-ahead, one core", "read-ahead, two cores"])
def pipeline(request, monkeypatch) -> str:
    """Large files are read ahead on a helper thread, which also decodes on one core and leaves
    decoding to the caller on two (`decode_ahead`); make tiny files take those paths too."""
    if request.param != "inline":
        monkeypatch.setattr(nifti, "_READ_AHEAD_MIN_BYTES", 0)
        cores = 1 if request.param.endswith("one core") else 2
        monkeypatch.setattr(nifti, "usable_cores", lambda: cores)
    return request.param


# -- synthetic betas: dtypes, scalings, compression, versions, byte orders ---------------------


@pytest.mark.parametrize(
    ("dtype", "slope", "inter"),
    [
        ("<f4", None, None),
        (">f4", 2.5, -1.0),
        ("<i2", 0.01, 3.0),
        (">i2", np.nan, 7.0),  # NaN slope: unscaled
        ("<u1", 0.0, 5.0),  # zero slope: unscaled
        ("<i4", 1.0, 0.5),
        (">u2", 3.0, 0.0),
        ("<i8", None, None),  # 64-bit integers round through float64, as in nibabel
        (">u8", 1e-3, 2.0),
        ("<f8", -0.75, 1e6),
        ("<i1", 1.5, -2.0),
        (">u4", 1.0, 0.0),
    ],
)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("version", [1, 2])
def test_stream_equals_nibabel(pipeline, tmp_path, rng, dtype, slope, inter, suffix, version):
    raw = random_raw(rng, (5, 6, 4, 7), dtype.lstrip("<>"))
    path = write_nifti(
        tmp_path / f"betas{suffix}",
        raw.astype(dtype),
        version=version,
        byteorder=dtype[0],
        slope=slope,
        inter=inter,
    )
    mask = rng.random((5, 6, 4)) < 0.4
    assert_stream_equals_nibabel(path, mask)
    assert_stream_equals_nibabel(path, None)
    expected = nibabel_volumes(path)
    betas = read_masked_betas(path, mask)
    assert betas.shape == (7, mask.sum())
    for k in range(7):
        assert_bits_equal(betas[k], expected[..., k][mask])


@pytest.mark.parametrize("dtype", ["<i8", ">u8"])
def test_64bit_integers_round_like_nibabel(tmp_path, dtype):
    """2**60 + 2**36 + 1 rounds up when cast straight to float32 but to 2**60 through float64."""
    tricky = 2**60 + 2**36 + 1
    raw = np.array([tricky, tricky + 2**37, 2**63 - 1, 12345, 0, 2**53 + 1, 7, 2**40], dtype=dtype)
    path = write_nifti(tmp_path / "ints.nii", raw.reshape(2, 2, 2, 1), byteorder=dtype[0])
    direct, via_float64 = raw.astype(np.float32), raw.astype(np.float64).astype(np.float32)
    assert direct[0] != via_float64[0]  # the case really is ambiguous
    assert_stream_equals_nibabel(path, None)


def test_nibabel_scaled_int16_betas(tmp_path, rng):
    """Float betas saved as int16 make nibabel choose its own scl_slope/scl_inter."""
    betas = rng.standard_normal((8, 9, 7, 12)).astype(np.float32) * 3 + 1
    image = nib.Nifti1Image(betas, np.eye(4))
    image.set_data_dtype(np.int16)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, path)
    assert nib.load(path).dataobj.slope != 1.0
    mask = rng.random((8, 9, 7)) < 0.5
    assert_stream_equals_nibabel(path, mask)


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in Path(NIBABEL_DATA).glob("*.nii*") if "dconn" not in p.name),
)
def test_nibabel_test_data(name):
    path = Path(NIBABEL_DATA) / name
    image = nib.load(path)
    if len(image.shape) < 3:
        pytest.skip(f"{name} has no 3-D grid")
    assert_stream_equals_nibabel(path, None)
    mask = np.zeros(image.shape[:3], dtype=bool)
    mask[::2, 1::3, :] = True
    assert_stream_equals_nibabel(path, mask)


def test_example4d_is_read_in_one_pass():
    path = Path(NIBABEL_DATA) / "example4d.nii.gz"
    expected = nibabel_volumes(path)
    mask = expected[..., 0] > np.median(expected[..., 0])
    betas = read_masked_betas(path, mask, progress=True)
    np.testing.assert_array_equal(betas, np.stack([expected[..., k][mask] for k in range(2)]))


def test_five_dimensional_image_flattens_trailing_axes(tmp_path, rng):
    raw = random_raw(rng, (3, 4, 2, 2, 3), "i2")
    path = write_nifti(tmp_path / "five.nii.gz", raw, slope=0.5, inter=1.0)
    assert read_nifti_header(path).n_volumes == 6
    assert_stream_equals_nibabel(path, rng.random((3, 4, 2)) < 0.5)


def test_three_dimensional_image_is_one_volume(tmp_path, rng):
    path = write_nifti(tmp_path / "mask.nii", random_raw(rng, (4, 5, 6), "u1"))
    assert_stream_equals_nibabel(path, None)


def test_multi_member_gzip(pipeline, tmp_path, rng):
    raw = random_raw(rng, (6, 5, 4, 5), "f4")
    plain = write_nifti(tmp_path / "betas.nii", raw, slope=2.0, inter=1.0)
    content = plain.read_bytes()
    cut = len(content) // 3
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(content[:cut]) + gzip.compress(content[cut:]))
    expected = nibabel_volumes(plain)
    for volume, k in zip(iter_volumes(path), range(5), strict=True):
        assert_bits_equal(volume, expected[..., k])


# -- header ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("form", ["sform", "qform", "none"])
def test_header_matches_nibabel(tmp_path, rng, version, form):
    affine = np.array(
        [[0.0, -2.0, 0.1, 10.0], [1.5, 0.0, 0.0, -20.0], [0.0, 0.2, 3.0, 5.0], [0, 0, 0, 1]]
    )
    klass = IMAGE_CLASSES[version]
    image = klass(random_raw(rng, (4, 5, 6, 3), "i2"), affine)
    image.header.set_sform(affine, code=1 if form == "sform" else 0)
    image.header.set_qform(affine, code=1 if form == "qform" else 0)
    image.header.set_zooms((1.5, 2.0, 3.0, 0.8))
    path = tmp_path / "header.nii.gz"
    nib.save(image, path)
    loaded = nib.load(path)
    header = read_nifti_header(path)
    assert header.version == version
    assert header.shape == loaded.shape
    assert header.dtype == loaded.header.get_data_dtype()
    assert header.zooms == pytest.approx(loaded.header.get_zooms())
    np.testing.assert_allclose(header.affine, loaded.affine, rtol=1e-6, atol=1e-6)
    assert header.vox_offset == loaded.dataobj.offset


def test_header_from_file_object(tmp_path, rng):
    path = write_nifti(tmp_path / "a.nii.gz", random_raw(rng, (3, 3, 3, 2), ">f8"), byteorder=">")
    with open(path, "rb") as f:
        header = read_nifti_header(f)
    assert header.dtype == np.dtype(">f8") and header.shape == (3, 3, 3, 2)


def test_complex_and_rgb_are_format_errors(tmp_path):
    complex_path = tmp_path / "complex.nii"
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.complex64), np.eye(4)), complex_path)
    with pytest.raises(FormatError, match=r"complex\.nii.*complex64"):
        read_nifti_header(complex_path)
    rgb = np.zeros((2, 2, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb_path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), rgb_path)
    with pytest.raises(FormatError, match="RGB24"):
        list(iter_volumes(rgb_path))


@pytest.mark.skipif(np.finfo(np.longdouble).nmant == 112, reason="long double is binary128 here")
def test_float128_without_binary128_is_a_format_error(tmp_path):
    path = tmp_path / "quad.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 2), np.float64), np.eye(4)), path)
    content = path.read_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(content), check=False)
    header["datatype"], header["bitpix"] = 1536, 128
    path.write_bytes(header.binaryblock + content[348:])
    with pytest.raises(FormatError, match="float128"):
        read_nifti_header(path)


def test_not_a_nifti_file(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_bytes(b"hello world, certainly no NIfTI header here" * 20)
    with pytest.raises(FormatError, match="notes.nii"):
        read_nifti_header(path)


# -- sources -----------------------------------------------------------------------------------


class _Unseekable(io.RawIOBase):
    """A forward-only stream, like a pipe or an HTTP body."""

    def __init__(self, data: bytes):
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._inner.readinto(buffer)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_file_objects(pipeline, tmp_path, rng, suffix):
    raw = random_raw(rng, (4, 3, 5, 6), "i2")
    path = write_nifti(tmp_path / f"b{suffix}", raw, slope=0.25, inter=-3.0)
    mask = rng.random((4, 3, 5)) < 0.5
    expected = read_masked_betas(path, mask)
    with open(path, "rb") as f:
        assert_bits_equal(read_masked_betas(f, mask), expected)
        assert not f.closed
    assert_bits_equal(read_masked_betas(_Unseekable(path.read_bytes()), mask), expected)
    streamed = np.stack(list(iter_volumes(_Unseekable(path.read_bytes()), mask)))
    assert_bits_equal(streamed, expected)
    reference = nibabel_volumes(path)
    assert_bits_equal(expected[2], reference[..., 2][mask])


def test_selected_volumes_in_any_order(pipeline, tmp_path, rng):
    path = write_nifti(tmp_path / "b.nii.gz", random_raw(rng, (3, 4, 5, 9), "f4"))
    mask = rng.random((3, 4, 5)) < 0.5
    expected = nibabel_volumes(path)
    chosen = [7, 2, -1, 2]
    betas = read_masked_betas(path, mask, volumes=chosen)
    for row, k in enumerate([7, 2, 8, 2]):
        assert_bits_equal(betas[row], expected[..., k][mask])
    assert read_masked_betas(path, mask, volumes=[]).shape == (0, mask.sum())
    with pytest.raises(IndexError, match="9 volumes"):
        read_masked_betas(path, mask, volumes=[9])


def test_mask_none_takes_every_voxel_in_c_order(pipeline, tmp_path, rng):
    path = write_nifti(tmp_path / "b.nii", random_raw(rng, (3, 4, 5, 2), "u2"), slope=2.0)
    expected = nibabel_volumes(path)
    betas = read_masked_betas(path, None)
    assert_bits_equal(betas, np.stack([expected[..., k].ravel(order="C") for k in range(2)]))


@pytest.mark.parametrize("inflater", available_inflaters())
def test_every_inflater_decodes_the_same(tmp_path, rng, inflater):
    path = write_nifti(tmp_path / "b.nii.gz", random_raw(rng, (5, 5, 5, 3), "f4"))
    with SequentialReader(path, inflater=inflater) as reader:
        assert reader.inflater == inflater
        content = reader.read_exact(352 + 5 * 5 * 5 * 3 * 4)
        reader.finish()
    assert content == gzip.decompress(path.read_bytes())


@pytest.mark.parametrize("inflater", available_inflaters())
def test_every_inflater_fills_the_callers_buffer_in_place(tmp_path, rng, inflater, monkeypatch):
    # the readinto a gzip file object inherits reads a new bytes object and copies it over
    path = write_nifti(tmp_path / "b.nii.gz", random_raw(rng, (5, 5, 5, 3), "f4"))
    with SequentialReader(path, inflater=inflater) as reader:

        def no_copy(size=-1):
            raise AssertionError("inflated into a temporary bytes object, then copied")

        monkeypatch.setattr(reader._stream, "read", no_copy)
        content = reader.read_exact(352 + 5 * 5 * 5 * 3 * 4)
        reader.finish()
    assert content == gzip.decompress(path.read_bytes())


def test_stopping_early_releases_the_file(pipeline, tmp_path, rng):
    path = write_nifti(tmp_path / "b.nii.gz", random_raw(rng, (4, 4, 4, 20), "f4"))

    def open_on_path() -> int:
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve()))

    def readers() -> list[threading.Thread]:  # not tqdm's monitor, started by a first bar
        return [t for t in threading.enumerate() if t.name == "neurotorch-read-ahead"]

    volumes = iter_volumes(path)
    next(volumes)
    assert open_on_path() == 1
    assert len(readers()) == (0 if pipeline == "inline" else 2 if "two" in pipeline else 1)
    volumes.close()  # joins the inflating thread and closes the file
    assert open_on_path() == 0
    assert readers() == []


READERS_LEFT_UNFINISHED = {
    "sequential": "from neurotorch.io.nifti import iter_volumes as read\n"
    "volumes = read(PATH, cores=CORES)",
    "seek index": "from neurotorch.io.seek_index import iter_volume_range as read\n"
    "volumes = read(PATH, 2, 24, threads=CORES)",
}


@pytest.fixture(scope="module")
def noise_session(tmp_path_factory) -> Path:
    """24 volumes of 64³ float32 noise, gzipped: 24 MB, enough to be read ahead on threads."""
    folder = tmp_path_factory.mktemp("noise")
    raw = np.random.default_rng(7).standard_normal((64, 64, 64, 24)).astype(np.float32)
    nib.save(nib.Nifti1Image(raw, np.eye(4)), folder / "noise.nii")
    path = folder / "noise.nii.gz"
    path.write_bytes(gzip.compress((folder / "noise.nii").read_bytes(), compresslevel=1))
    return path


@pytest.mark.parametrize("cores", [1, 2])
@pytest.mark.parametrize("reader", sorted(READERS_LEFT_UNFINISHED))
def test_a_script_that_exits_mid_file_exits_cleanly(noise_session, reader, cores):
    """``next(iter(...))`` and exit, the first thing a user tries: the read-ahead threads are
    still inflating, and a daemon thread frozen at interpreter shutdown inside a file read made
    the final close abort Python (exit 134, "Fatal Python error: _enter_buffered_busy"; every
    run of this file before the fix), or rapidgzip's threads end it with ``terminate``."""
    script = READERS_LEFT_UNFINISHED[reader].replace("PATH", repr(str(noise_session)))
    script = script.replace("CORES", str(cores)) + "\nnext(volumes)\nprint('read one')\n"
    cache = noise_session.parent / "cache"
    env = dict(os.environ, NEUROTORCH_CACHE=str(cache), NEUROTORCH_PROGRESS="0")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "read one\n"), done.stderr[-2000:]
    assert "Fatal Python error" not in done.stderr


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cores", [0, -1, 2.5, True, "2"])
def test_a_core_count_that_is_not_a_positive_integer_is_named(tmp_path, rng, cores):
    path = write_nifti(tmp_path / "b.nii.gz", random_raw(rng, (4, 4, 4, 3), "f4"))
    with pytest.raises(ParameterError, match="cores"):
        next(iter_volumes(path, cores=cores))


def test_the_default_cores_are_those_the_process_may_run_on(monkeypatch):
    monkeypatch.setattr(nifti.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(nifti.os, "cpu_count", lambda: 64)
    assert nifti.usable_cores() == 1  # one core granted on a 64-core machine


def test_mask_shape_mismatch_names_file_and_shapes(tmp_path, rng):
    path = write_nifti(tmp_path / "grid.nii.gz", random_raw(rng, (4, 5, 6, 2), "f4"))
    with pytest.raises(ShapeMismatchError, match=r"\(4, 5, 7\).*grid\.nii\.gz.*\(4, 5, 6\)"):
        read_masked_betas(path, np.ones((4, 5, 7), dtype=bool))
    with pytest.raises(ShapeMismatchError):
        next(iter_volumes(path, np.ones((5, 4, 6), dtype=bool)))
    with pytest.raises(FormatError, match="boolean"):
        read_masked_betas(path, np.ones((4, 5, 6), dtype=np.uint8))


@pytest.fixture
def gz_betas(tmp_path, rng) -> Path:
    return write_nifti(tmp_path / "sub-01_betas.nii.gz", random_raw(rng, (6, 7, 8, 10), "f4"))


def _read_through(path, inflater: str, size: int) -> None:
    """Inflate exactly the ``size`` bytes the intact file holds, then check its trailer."""
    with SequentialReader(path, inflater=inflater) as reader:
        reader.skip(size)
        reader.finish()


@pytest.mark.parametrize("inflater", available_inflaters())
@pytest.mark.parametrize("keep", [0.3, 0.999])
def test_truncated_gzip_is_corrupt(pipeline, tmp_path, gz_betas, inflater, keep):
    content = gz_betas.read_bytes()
    _read_through(gz_betas, inflater, len(gzip.decompress(content)))  # the intact file reads
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(content[: int(len(content) * keep)])
    with pytest.raises(CorruptFileError, match="truncated.nii.gz"):
        _read_through(path, inflater, len(gzip.decompress(content)))
    with pytest.raises(CorruptFileError, match="truncated.nii.gz"):
        read_masked_betas(path, None)
    with pytest.raises(CorruptFileError, match="truncated.nii.gz"):
        list(iter_volumes(path))


@pytest.mark.parametrize("inflater", available_inflaters())
@pytest.mark.parametrize("where", ["crc", "length", "data"])
def test_checksum_failures_are_corrupt(pipeline, tmp_path, gz_betas, inflater, where):
    content = bytearray(gz_betas.read_bytes())
    position = {"crc": -8, "length": -3, "data": len(content) // 2}[where]
    content[position] ^= 0x5A
    path = tmp_path / "damaged.nii.gz"
    path.write_bytes(bytes(content))
    size = len(gzip.decompress(gz_betas.read_bytes()))
    _read_through(gz_betas, inflater, size)  # the intact file reads
    with pytest.raises(CorruptFileError, match="damaged.nii.gz"):
        _read_through(path, inflater, size)
    with pytest.raises(CorruptFileError, match="damaged.nii.gz"):
        read_masked_betas(path, None)
    with pytest.raises(CorruptFileError, match="damaged.nii.gz"):
        list(iter_volumes(path))


def test_truncated_plain_nifti_is_corrupt(tmp_path, rng):
    path = write_nifti(tmp_path / "short.nii", random_raw(rng, (4, 4, 4, 3), "f4"))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CorruptFileError, match="short.nii"):
        read_masked_betas(path, None)


# -- property: random valid images -------------------------------------------------------------

_DTYPES = ["u1", "i1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"]
_SCALES = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from([0.0, float("nan"), 1.0, 0.5, -2.5, 1e-3, 3.0e4]),
        st.sampled_from([0.0, 1.5, -100.0, 1e-7]),
    ),
    st.tuples(
        st.floats(-1e3, 1e3, allow_nan=False, width=32),
        st.floats(-1e3, 1e3, allow_nan=False, width=32),
    ),
)


@st.composite
def nifti_cases(draw):
    grid = tuple(draw(st.lists(st.integers(1, 5), min_size=3, max_size=3)))
    extra = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    dtype = np.dtype(draw(st.sampled_from(_DTYPES))).newbyteorder(draw(st.sampled_from("<>")))
    raw = draw(hnp.arrays(dtype, grid + extra, elements=_elements(dtype)))
    mask = draw(st.none() | hnp.arrays(np.bool_, grid))
    return {
        "raw": raw,
        "mask": mask,
        "scale": draw(_SCALES),
        "version": draw(st.sampled_from([1, 2])),
        "suffix": draw(st.sampled_from([".nii", ".nii.gz"])),
    }


def _elements(dtype: np.dtype):
    if dtype.kind == "f":
        return st.floats(width=8 * dtype.itemsize, allow_nan=True, allow_infinity=True)
    return None


@pytest.mark.filterwarnings(
    "ignore:overflow encountered in cast:RuntimeWarning"
)  # → ±inf, as nibabel
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=nifti_cases())
def test_property_stream_equals_nibabel(case):
    with tempfile.TemporaryDirectory() as tmp:
        slope, inter = case["scale"] if case["scale"] else (None, None)
        raw = case["raw"]
        path = write_nifti(
            Path(tmp) / f"case{case['suffix']}",
            raw,
            version=case["version"],
            byteorder=raw.dtype.byteorder if raw.dtype.byteorder in "<>" else "<",
            slope=slope,
            inter=inter,
        )
        assert_stream_equals_nibabel(path, case["mask"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_iterator_refuses_to_resume_after_fork(pipeline, tmp_path, rng):
    path = write_nifti(tmp_path / "b.nii.gz", random_raw(rng, (4, 4, 4, 5), "f4"))
    volumes = iter_volumes(path)
    next(volumes)
    pid = os.fork()
    if pid == 0:  # child: resuming must fail loudly instead of waiting forever
        try:
            next(volumes)
        except RuntimeError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(list(volumes)) == 4  # the parent carries on
