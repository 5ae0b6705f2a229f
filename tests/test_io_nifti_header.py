"""The NIfTI header parser and volume decoder against nibabel, on headers drawn by hypothesis.

Each case writes the raw bytes of a single-file NIfTI-1 or NIfTI-2 image by hand (nibabel's header
class serialises the fields, nothing is repaired on the way), in either byte order, with or without
gzip, header extensions or padding before the data, sform + qform, qform only or neither,
``pixdim[0]`` (qfac) 0, 1 or -1, zero or negative voxel sizes, invalid xform codes, and
``scl_slope``/``scl_inter`` on integer and float data. nibabel loads the same bytes; every voxel
(bit for bit, ``get_fdata(dtype=float32)``), the affine, the zooms and the shape must agree.
"""

from __future__ import annotations

import gzip
import logging
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from neurotorch.io.nifti import iter_volumes, read_nifti_header

HEADER_CLASSES = {1: nib.Nifti1Header, 2: nib.Nifti2Header}
HEADER_SIZES = {1: 348, 2: 540}
DTYPES = ("u1", "i1", "i2", "u2", "i4", "f4", "f8")
#: NIfTI stores quaternions in float32 and nibabel turns them into a rotation in float32: every
#: rotation entry is exact to a few float32 ulps of 1 (the drawn quaternions keep a >= 0.1, so
#: recovering a = sqrt(1 - b² - c² - d²) is well conditioned).
ROTATION_ULPS = 16 * np.finfo(np.float32).eps


@st.composite
def quaternions(draw) -> tuple[float, float, float]:
    """(b, c, d) of a unit quaternion whose a = sqrt(1 - b² - c² - d²) is at least 0.1."""
    a = draw(st.floats(0.1, 1.0))
    direction = np.array([draw(st.floats(-1, 1)) for _ in range(3)])
    norm = np.linalg.norm(direction)
    if norm < 1e-3:
        return 0.0, 0.0, 0.0
    return tuple(float(v) for v in direction / norm * np.sqrt(1 - a * a) * 0.999)


def scalings():
    """None, or (slope, inter): awkward values that round differently in float32 and float64,
    plus nibabel's "unscaled" slopes 0 and NaN."""
    awkward = st.floats(-50, 50, allow_subnormal=False).filter(lambda v: abs(v) > 1e-3)
    return st.one_of(
        st.none(),
        st.tuples(awkward, awkward),
        st.tuples(st.sampled_from([0.0, np.nan]), awkward),
    )


@st.composite
def nifti_cases(draw) -> dict:
    version = draw(st.sampled_from([1, 2]))
    order = draw(st.sampled_from("<>"))
    dtype = np.dtype(draw(st.sampled_from(DTYPES))).newbyteorder(order)
    shape = tuple(draw(st.integers(1, 4)) for _ in range(3)) + (draw(st.integers(1, 3)),)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype.kind == "f":
        raw = (rng.standard_normal(shape) * 100).astype(dtype)
    else:
        info = np.iinfo(dtype)
        raw = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    sizes = [draw(st.sampled_from([0.0, -1.5, 0.8, 1.0, 2.0, 3.3])) for _ in range(3)]
    return {
        "version": version,
        "raw": raw,
        "form": draw(st.sampled_from(["both", "qform", "sform", "neither", "bad-codes"])),
        "qfac": draw(st.sampled_from([0.0, 1.0, -1.0])),
        "pixdim": [*sizes, draw(st.sampled_from([0.0, 1.6]))],
        "quaternion": draw(quaternions()),
        "offset": [draw(st.floats(-100, 100, width=32)) for _ in range(3)],
        "srow": draw(st.lists(st.floats(-5, 5, width=32), min_size=12, max_size=12)),
        "scaling": draw(scalings()),
        "extensions": draw(st.lists(st.integers(1, 40), max_size=2)),
        "padding": draw(st.sampled_from([0, 16, 48])),
        "gzip": draw(st.booleans()),
    }


def nifti_bytes(case: dict) -> bytes:
    """The file content of ``case``, header fields set as drawn (nothing repaired)."""
    raw, version = case["raw"], case["version"]
    header = HEADER_CLASSES[version](endianness=raw.dtype.byteorder)
    header.set_data_shape(raw.shape)
    header.set_data_dtype(raw.dtype)
    header["pixdim"][:5] = [case["qfac"], *case["pixdim"]]
    codes = {"both": (1, 2), "qform": (1, 0), "sform": (0, 2), "neither": (0, 0)}
    header["qform_code"], header["sform_code"] = codes.get(case["form"], (9, 7))
    header["quatern_b"], header["quatern_c"], header["quatern_d"] = case["quaternion"]
    header["qoffset_x"], header["qoffset_y"], header["qoffset_z"] = case["offset"]
    for k, axis in enumerate("xyz"):
        header[f"srow_{axis}"] = case["srow"][4 * k : 4 * k + 4]
    slope, inter = case["scaling"] or (1.0, 0.0)
    header["scl_slope"], header["scl_inter"] = slope, inter
    extensions = b""
    for size in case["extensions"]:  # esize (a multiple of 16, its own 8 bytes included), ecode
        content = b"c" * size
        esize = -(-(size + 8) // 16) * 16
        ext_header = np.array([esize, 6], dtype=np.dtype("i4").newbyteorder(raw.dtype.byteorder))
        extensions += ext_header.tobytes() + content.ljust(esize - 8, b"\0")
    flag = b"\1\0\0\0" if extensions else b"\0\0\0\0"
    gap = extensions or b"\0" * case["padding"]  # nibabel reads extensions up to vox_offset
    header["vox_offset"] = HEADER_SIZES[version] + 4 + len(gap)
    content = header.binaryblock + flag + gap + raw.tobytes(order="F")
    return gzip.compress(content, compresslevel=1) if case["gzip"] else content


def _pinned_case(dtype: str, form: str, qfac: float, scaling) -> dict:
    """A fixed case, so that what the search may miss on a given run is always tried."""
    raw = (np.random.default_rng(1).standard_normal((3, 2, 2, 2)) * 100).astype(dtype)
    return {
        "version": 1, "raw": raw, "form": form, "qfac": qfac, "pixdim": [0.8, 1.0, 2.0, 1.6],
        "quaternion": (0.1, 0.2, 0.3), "offset": [1.0, -2.0, 3.0], "srow": [1.0] * 12,
        "scaling": scaling, "extensions": [], "padding": 0, "gzip": False,
    }  # fmt: skip


@pytest.mark.slow
@settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(case=nifti_cases())
@example(case=_pinned_case("<f4", "both", 1.0, (0.3, 1 / 7)))  # scaling of float data in float64
@example(case=_pinned_case("<i2", "qform", -1.0, None))  # qfac -1 flips the third axis
def test_header_and_voxels_equal_nibabel(case):
    suffix = ".nii.gz" if case["gzip"] else ".nii"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"image{suffix}"
        path.write_bytes(nifti_bytes(case))
        logging.getLogger("nibabel.global").disabled = True  # its notes on repaired fields
        image = nib.load(path)
        expected = image.get_fdata(dtype=np.float32)
        header = read_nifti_header(path)
        volumes = np.stack(list(iter_volumes(path)), axis=-1)

    assert header.shape == image.shape
    assert header.zooms == tuple(float(z) for z in image.header.get_zooms())
    zooms = np.abs(np.asarray(image.header.get_zooms()[:3]))
    np.testing.assert_allclose(
        header.affine, image.affine, rtol=0, atol=ROTATION_ULPS * zooms.max()
    )
    assert volumes.shape == expected.shape
    np.testing.assert_array_equal(volumes.view(np.uint32), expected.view(np.uint32))
