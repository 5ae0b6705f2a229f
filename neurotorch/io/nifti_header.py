"""NIfTI-1 and NIfTI-2 single-file headers: parsing, data types, affine and intensity scaling.

The values returned agree with nibabel's reading of the same file: the affine is nibabel's
``img.affine`` (sform if its code is set, else qform, else the centred Analyze affine), and the
effective scaling follows nibabel's ``get_slope_inter`` (a slope of 0 or NaN means no scaling).
Header fields that nibabel repairs when it loads a file are repaired the same way: a ``pixdim[0]``
(qfac) other than ±1 counts as 1, zero voxel sizes in ``pixdim[1:4]`` as 1 and negative ones as
their absolute value, and an sform or qform code outside 0..5 as 0 (unset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from neurotorch.errors import FormatError

NIFTI1_HEADER_SIZE = 348
NIFTI2_HEADER_SIZE = 540
#: bytes of header plus the 4-byte extension flag that precede data in a single ``.nii`` file
MIN_VOX_OFFSET = {1: NIFTI1_HEADER_SIZE + 4, 2: NIFTI2_HEADER_SIZE + 4}

_NIFTI1_FIELDS = np.dtype(
    [
        ("sizeof_hdr", "i4"),
        ("_analyze", "V36"),
        ("dim", "i2", (8,)),
        ("intent_p", "f4", (3,)),
        ("intent_code", "i2"),
        ("datatype", "i2"),
        ("bitpix", "i2"),
        ("slice_start", "i2"),
        ("pixdim", "f4", (8,)),
        ("vox_offset", "f4"),
        ("scl_slope", "f4"),
        ("scl_inter", "f4"),
        ("_timing_and_descrip", "V132"),
        ("qform_code", "i2"),
        ("sform_code", "i2"),
        ("quatern", "f4", (3,)),
        ("qoffset", "f4", (3,)),
        ("srow", "f4", (3, 4)),
        ("intent_name", "V16"),
        ("magic", "S4"),
    ]
)

_NIFTI2_FIELDS = np.dtype(
    [
        ("sizeof_hdr", "i4"),
        ("magic", "S8"),
        ("datatype", "i2"),
        ("bitpix", "i2"),
        ("dim", "i8", (8,)),
        ("intent_p", "f8", (3,)),
        ("pixdim", "f8", (8,)),
        ("vox_offset", "i8"),
        ("scl_slope", "f8"),
        ("scl_inter", "f8"),
        ("_timing_and_descrip", "V152"),
        ("qform_code", "i4"),
        ("sform_code", "i4"),
        ("quatern", "f8", (3,)),
        ("qoffset", "f8", (3,)),
        ("srow", "f8", (3, 4)),
        ("_tail", "V44"),
    ]
)

#: NIFTI_XFORM_UNKNOWN .. NIFTI_XFORM_TEMPLATE_OTHER; other codes are read as 0, as nibabel does
XFORM_CODES = range(6)

assert _NIFTI1_FIELDS.itemsize == NIFTI1_HEADER_SIZE
assert _NIFTI2_FIELDS.itemsize == NIFTI2_HEADER_SIZE

_NUMERIC_DATATYPES: dict[int, str] = {
    2: "u1",
    4: "i2",
    8: "i4",
    16: "f4",
    64: "f8",
    256: "i1",
    512: "u2",
    768: "u4",
    1024: "i8",
    1280: "u8",
}
if np.finfo(np.longdouble).nmant == 112:  # IEEE binary128 long double (as nibabel requires)
    _NUMERIC_DATATYPES[1536] = "g"

_UNSUPPORTED_DATATYPES: dict[int, str] = {
    0: "none",
    1: "binary",
    32: "complex64",
    128: "RGB24",
    255: "all",
    1536: "float128",
    1792: "complex128",
    2048: "complex256",
    2304: "RGBA32",
}


@dataclass(frozen=True, eq=False)
class NiftiHeader:
    """What a streaming reader needs from a NIfTI header.

    Attributes
    ----------
    shape
        Array shape as nibabel reports it (``img.shape``), spatial axes first.
    dtype
        On-disk numpy dtype including its byte order (e.g. ``>i2``).
    affine
        4×4 voxel-to-world matrix in mm, equal to nibabel's ``img.affine``.
    zooms
        Voxel sizes per axis (``pixdim[1:ndim+1]``), as nibabel's ``header.get_zooms()``.
    scl_slope, scl_inter
        The raw scaling fields; see `scaling` for what is applied.
    vox_offset
        Byte offset of the data from the start of the (decompressed) file.
    version
        1 for NIfTI-1, 2 for NIfTI-2.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    affine: np.ndarray
    zooms: tuple[float, ...]
    scl_slope: float
    scl_inter: float
    vox_offset: int
    version: int

    @property
    def grid(self) -> tuple[int, int, int]:
        """The 3-D voxel grid (first three axes)."""
        return (self.shape[0], self.shape[1], self.shape[2])

    @property
    def n_volumes(self) -> int:
        """Number of 3-D volumes: the product of the axes after the third (1 for a 3-D image)."""
        return math.prod(self.shape[3:])

    @property
    def voxels_per_volume(self) -> int:
        return math.prod(self.grid)

    @property
    def volume_nbytes(self) -> int:
        """Bytes one volume occupies on disk."""
        return self.voxels_per_volume * self.dtype.itemsize

    @cached_property
    def scaling(self) -> tuple[float, float] | None:
        """``(slope, inter)`` that reading applies, or None when values are read unscaled.

        As in nibabel, a slope of 0 or a non-finite slope disables scaling, and a slope of 1
        with an intercept of 0 is no scaling at all.
        """
        slope, inter = float(self.scl_slope), float(self.scl_inter)
        if slope == 0 or not np.isfinite(slope) or (slope, inter) == (1.0, 0.0):
            return None
        return slope, inter


def header_size_and_byteorder(first4: bytes) -> tuple[int, Literal["<", ">"]] | None:
    """Recognise ``sizeof_hdr`` (348 or 540) in either byte order; None if neither."""
    orders: tuple[Literal["<", ">"], ...] = ("<", ">")
    for order in orders:
        size = int(np.frombuffer(first4, dtype=f"{order}i4", count=1)[0])
        if size in (NIFTI1_HEADER_SIZE, NIFTI2_HEADER_SIZE):
            return size, order
    return None


def parse_nifti_header(raw: bytes, name: str) -> NiftiHeader:
    """Parse the leading 348 (NIfTI-1) or 540 (NIfTI-2) bytes of a single-file NIfTI image.

    Parameters
    ----------
    raw
        At least the header bytes (more is ignored).
    name
        File name used in error messages.

    Raises
    ------
    FormatError
        Not a single-file NIfTI-1/2 image, an invalid header, or a data type that is not a real
        number (complex, RGB, RGBA, binary).
    """
    detected = header_size_and_byteorder(raw[:4]) if len(raw) >= 4 else None
    if detected is None:
        raise FormatError(
            f"{name} is not a NIfTI file: sizeof_hdr is neither 348 (NIfTI-1) nor 540 (NIfTI-2). "
            "Check the path; Analyze .hdr/.img pairs and other formats must be converted to .nii."
        )
    size, order = detected
    if len(raw) < size:
        raise FormatError(
            f"{name} ends inside its {size}-byte NIfTI header; the file is truncated."
        )
    version = 1 if size == NIFTI1_HEADER_SIZE else 2
    fields = np.frombuffer(
        raw, dtype=(_NIFTI1_FIELDS if version == 1 else _NIFTI2_FIELDS).newbyteorder(order), count=1
    )[0]
    _check_magic(fields["magic"], version, name)

    dim = [int(d) for d in fields["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dim[1 : ndim + 1]):
        raise FormatError(
            f"{name} has an invalid NIfTI dim field {dim}: dim[0] must be 1..7 and every used "
            "dimension positive."
        )
    shape = tuple(dim[1 : ndim + 1])

    dtype = np.dtype(_datatype(int(fields["datatype"]), name)).newbyteorder(order)
    vox_offset = int(fields["vox_offset"])
    if vox_offset < MIN_VOX_OFFSET[version]:
        raise FormatError(
            f"{name} has vox_offset {vox_offset}, below the {MIN_VOX_OFFSET[version]} bytes a "
            f"single-file NIfTI-{version} header occupies; the header is damaged."
        )
    slope, inter = float(fields["scl_slope"]), float(fields["scl_inter"])
    if slope != 0 and np.isfinite(slope) and not np.isfinite(inter):
        raise FormatError(
            f"{name} has a valid scl_slope ({slope}) but a non-finite scl_inter ({inter}); "
            "the intensities cannot be scaled. Fix the header (e.g. set scl_inter to 0)."
        )
    pixdim = _repaired_pixdim([float(p) for p in fields["pixdim"]])
    return NiftiHeader(
        shape=shape,
        dtype=dtype,
        affine=_best_affine(fields, shape, pixdim),
        zooms=tuple(pixdim[1 : ndim + 1]),
        scl_slope=slope,
        scl_inter=inter,
        vox_offset=vox_offset,
        version=version,
    )


def _check_magic(magic: bytes, version: int, name: str) -> None:
    if version == 1:
        ok, pair = magic == b"n+1", magic == b"ni1"
    else:
        ok, pair = magic[:4] == b"n+2\x00", magic[:4] == b"ni2\x00"
    if pair:
        raise FormatError(
            f"{name} is the header of a NIfTI .hdr/.img pair; only single-file .nii/.nii.gz images "
            "are streamed. Convert it with nibabel (nib.save(nib.load(path), 'out.nii.gz'))."
        )
    if not ok:
        raise FormatError(f"{name} has NIfTI-{version} header size but bad magic {magic!r}.")


def _datatype(code: int, name: str) -> str:
    if code in _NUMERIC_DATATYPES:
        return _NUMERIC_DATATYPES[code]
    label = _UNSUPPORTED_DATATYPES.get(code, f"unknown code {code}")
    raise FormatError(
        f"{name} stores {label} voxels (NIfTI datatype {code}); neurotorch reads real-valued "
        "images only (int8..uint64, float32, float64). Convert complex or colour data to real "
        "channels with nibabel first."
    )


def _repaired_pixdim(pixdim: list[float]) -> list[float]:
    """``pixdim`` with nibabel's load-time repairs: qfac ±1 (else 1), voxel sizes positive."""
    qfac = pixdim[0] if pixdim[0] in (-1.0, 1.0) else 1.0
    sizes = [abs(p) if p != 0 else 1.0 for p in pixdim[1:4]]
    return [qfac, *sizes, *pixdim[4:]]


def _xform_code(fields: np.void, which: str) -> int:
    code = int(fields[which])
    return code if code in XFORM_CODES else 0


def _best_affine(fields: np.void, shape: tuple[int, ...], pixdim: list[float]) -> np.ndarray:
    """sform if its code is set, else qform if its code is set, else the centred base affine.

    ``pixdim`` is already repaired (see `_repaired_pixdim`)."""
    affine = np.eye(4)
    if _xform_code(fields, "sform_code") != 0:
        affine[:3, :] = np.asarray(fields["srow"], dtype=np.float64)
        return affine
    if _xform_code(fields, "qform_code") != 0:
        zooms = np.array(pixdim[1:4])
        zooms[2] *= pixdim[0]  # qfac: -1 flips the third axis
        affine[:3, :3] = _quaternion_rotation(np.asarray(fields["quatern"], np.float64)) * zooms
        affine[:3, 3] = np.asarray(fields["qoffset"], dtype=np.float64)
        return affine
    return _centred_affine(shape, pixdim)


def _quaternion_rotation(bcd: np.ndarray) -> np.ndarray:
    """Rotation matrix of the unit quaternion (a, b, c, d) with a = sqrt(1 - b² - c² - d²) ≥ 0."""
    b, c, d = bcd
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    norm = a * a + b * b + c * c + d * d
    if norm < np.finfo(np.float64).eps:
        return np.eye(3)
    s = 2.0 / norm
    return np.array(
        [
            [1 - s * (c * c + d * d), s * (b * c - a * d), s * (b * d + a * c)],
            [s * (b * c + a * d), 1 - s * (b * b + d * d), s * (c * d - a * b)],
            [s * (b * d - a * c), s * (c * d + a * b), 1 - s * (b * b + c * c)],
        ]
    )


def _centred_affine(shape: tuple[int, ...], pixdim: list[float]) -> np.ndarray:
    """Analyze-style affine: voxel sizes on the diagonal, x flipped, origin at the grid centre."""
    spatial = (list(shape[:3]) + [1, 1, 1])[:3]
    zooms = (list(pixdim[1 : len(shape) + 1][:3]) + [1.0, 1.0, 1.0])[:3]
    zooms[0] = -zooms[0]
    affine = np.diag(zooms + [1.0])
    affine[:3, 3] = -(np.array(spatial, dtype=np.float64) - 1) / 2.0 * np.array(zooms)
    return affine
