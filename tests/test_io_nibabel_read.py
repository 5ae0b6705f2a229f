"""`read_nifti_image` (gzip CRC verified, then nibabel) against nibabel's own load of the same file."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from neurotorch.errors import FormatError
from neurotorch.io.nibabel_read import read_nifti_image


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_equals_nibabel(tmp_path, klass, byteorder, suffix):
    rng = np.random.default_rng(0)
    data = rng.integers(-300, 300, size=(5, 6, 4, 3)).astype(f"{byteorder}i2")
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    affine[:3, 3] = [-4.0, 7.5, 2.0]
    image = klass(data, affine)
    image.header.set_slope_inter(0.25, -3.0)
    path = tmp_path / f"image{suffix}"
    nib.save(image, path)
    expected = nib.load(path)
    got, got_image = read_nifti_image(path)
    np.testing.assert_array_equal(got, np.asarray(expected.dataobj))
    assert got.dtype == np.asarray(expected.dataobj).dtype
    np.testing.assert_array_equal(got_image.affine, expected.affine)
    assert type(got_image) is type(expected)


def test_not_a_nifti_file(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_bytes(b"this is not an image" * 30)
    with pytest.raises(FormatError, match="notes.nii"):
        read_nifti_image(path)
