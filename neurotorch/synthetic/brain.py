"""The synthetic brain: grid, brain mask, ROIs, anatomy and a linear encoding model.

Signal voxels (the union of a subject's ROIs) respond linearly to the stored CLIP embedding:
``beta = baseline + amplitude * (clip @ w) + noise_sd * eps``; category ROIs respond along the
direction of their category in latent space, the others along random directions. Every other brain
voxel is baseline plus noise. ``clip @ w`` has unit variance over all images, so the attainable
correlation of a perfect model with single-trial betas is ``amplitude / sqrt(amplitude² + noise_sd²)``.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from neurotorch.fmri import layout
from neurotorch.io.atomic import atomic_path, write_text

VOXEL_MM = 1.8
_BLOCK_BYTES = 1 << 26  # temporaries of the encoding model are computed in blocks of this size
ALWAYS_PRESENT_ROIS = (
    "FFA1", "PPA", "EBA", "V1v", "V1d", "laionEVC", "laiongeneral", "VWFA1", "lobjects", "MT",
)  # fmt: skip
CATEGORY_OF_ROI_CATEGORY = {
    "face": "face", "body": "body", "place": "place", "object": "object", "character": "character",
}  # fmt: skip


def grid_affine(shape: tuple[int, int, int], voxel_mm: float = VOXEL_MM) -> np.ndarray:
    """RAS+ affine with isotropic voxels and the grid centred on the origin."""
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * voxel_mm
    return affine


def ellipsoid_mask(shape: tuple[int, int, int], fill: float = 0.9) -> np.ndarray:
    """A brain-like ellipsoid filling ``fill`` of each half-axis of the grid."""
    axes = [np.linspace(-1, 1, n) / fill for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return x**2 + y**2 + z**2 <= 1.0


def place_rois(
    brain: np.ndarray, radius: float, rng: np.random.Generator
) -> dict[tuple[str, str], np.ndarray]:
    """Spherical ROIs at random brain positions; a realistic subset of the real ROI names."""
    coords = np.argwhere(brain)
    grid = np.indices(brain.shape).reshape(3, -1).T
    rois = {}
    for category, names in layout.ROI_CATEGORIES.items():
        for name in names:
            if name not in ALWAYS_PRESENT_ROIS and rng.random() > 0.75:
                continue
            centre = coords[rng.integers(len(coords))]
            inside = (np.sum((grid - centre) ** 2, axis=1) <= radius**2).reshape(brain.shape)
            rois[(category, name)] = inside & brain
    return rois


def anatomical_images(brain: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """T1w/T2w-like int16 images: bright (T1w) or dark (T2w) brain on a dim background."""
    noise = rng.normal(0, 30, size=brain.shape)
    t1 = np.where(brain, 800.0, 60.0) + noise
    t2 = np.where(brain, 300.0, 900.0) + noise
    return {"T1w": t1.astype(np.int16), "T2w": t2.astype(np.int16)}


def upsample2(volume: np.ndarray) -> np.ndarray:
    """Each voxel into a 2×2×2 block (the full-resolution grid of the anatomical files)."""
    return volume.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)


def full_resolution_affine(affine: np.ndarray) -> np.ndarray:
    """Affine of `upsample2`'s grid: half the voxel size, centres of the sub-voxels."""
    fine = affine.copy()
    fine[:3, :3] /= 2
    fine[:3, 3] -= fine[:3, :3] @ np.full(3, 0.5)
    return fine


#: gzip level nibabel writes ``.nii.gz`` files with (``nibabel.openers.Opener``)
NIBABEL_GZIP_LEVEL = 1
#: a single-file NIfTI-1 image: 348 header bytes, 4 extension-flag bytes, then the data
NIFTI1_DATA_OFFSET = 352


def _image(data, affine: np.ndarray) -> nib.Nifti1Image:
    """A NIfTI-1 image with a mm/s unit header and sform/qform set to scanner space."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    return image


def save_nifti(data: np.ndarray, affine: np.ndarray, path) -> None:
    """Save with a mm/s unit header and sform/qform set to scanner space."""
    with atomic_path(path) as tmp:
        nib.save(_image(data, affine), tmp)


class VolumeWriter:
    """Writes the volumes of a 4-D float32 image one at a time (see `write_volumes`)."""

    def __init__(self, stream: gzip.GzipFile, grid: tuple[int, int, int], brain_index: np.ndarray):
        self._stream = stream
        self._volume = np.zeros(int(np.prod(grid)), dtype=np.float32)  # on-disk (Fortran) order
        self._offsets = np.ravel_multi_index(np.unravel_index(brain_index, grid), grid, order="F")
        self.written = 0

    def write(self, brain_values: np.ndarray) -> None:
        """Write the next volume: ``brain_values`` at the brain voxels (C order), 0 elsewhere."""
        self._volume[self._offsets] = brain_values
        self._stream.write(self._volume.data.cast("B"))
        self.written += 1


@contextmanager
def write_volumes(
    path, grid: tuple[int, int, int], n_volumes: int, affine: np.ndarray, brain_index: np.ndarray
) -> Iterator[VolumeWriter]:
    """Write a 4-D float32 ``.nii.gz`` volume by volume, in the memory of one volume.

    The file is what `save_nifti` writes for the whole 4-D array, byte for byte (nibabel's
    header, gzip level and gzip header), written atomically. Every one of the ``n_volumes``
    volumes must be written before the block ends.
    """
    header = _image(np.broadcast_to(np.float32(0), (*grid, n_volumes)), affine).header
    header.set_data_offset(NIFTI1_DATA_OFFSET)
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0  # what nibabel writes for float data
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as sink,
        gzip.GzipFile(
            filename="", mode="wb", compresslevel=NIBABEL_GZIP_LEVEL, fileobj=sink, mtime=0
        ) as stream,
    ):
        stream.write(header.binaryblock)
        stream.write(bytes(NIFTI1_DATA_OFFSET - len(header.binaryblock)))
        writer = VolumeWriter(stream, grid, brain_index)
        yield writer
        if writer.written != n_volumes:  # the header would not match the data
            raise RuntimeError(f"{path}: {writer.written} of {n_volumes} volumes were written")


@dataclass
class EncodingModel:
    """Ground truth of one subject (arrays over the brain voxels, flat C-order grid indices)."""

    brain_index: np.ndarray  # (n_brain,)
    signal_rows: np.ndarray  # (n_signal,) positions into brain_index
    weights: np.ndarray  # (n_signal, D) float32, CLIP space
    amplitude: np.ndarray  # (n_brain,) 0 for noise voxels
    noise_sd: np.ndarray  # (n_brain,)
    baseline: np.ndarray  # (n_brain,)

    @property
    def attainable_r(self) -> np.ndarray:
        return self.amplitude / np.sqrt(self.amplitude**2 + self.noise_sd**2)

    def signal(self, clip: np.ndarray) -> np.ndarray:
        """Noise-free responses (n_images, n_brain) to CLIP embeddings (n_images, D).

        The product with the weights runs in float32 (as they are stored: no float64 copy of
        them per call), the rest in float64."""
        out = np.zeros((clip.shape[0], len(self.brain_index)), dtype=np.float64)
        out[:, self.signal_rows] = clip.astype(np.float32) @ self.weights.T
        return out * self.amplitude + self.baseline


def make_encoding_model(
    brain: np.ndarray,
    rois: dict[tuple[str, str], np.ndarray],
    latent: np.ndarray,
    categories: list[str],
    clip: np.ndarray,
    clip_projection: np.ndarray,
    rng: np.random.Generator,
) -> EncodingModel:
    """Draw weights in latent space and map them into CLIP space through the CLIP projection.

    The CLIP-space weights lie in the row space of the latent→CLIP projection, so a model fitted
    on a few hundred images can recover them.
    """
    brain_index = np.flatnonzero(brain.ravel())
    position = np.full(brain.size, -1)
    position[brain_index] = np.arange(len(brain_index))
    directions = {c: latent[np.asarray(categories) == c].mean(axis=0) for c in set(categories)}
    latent_weights: dict[int, np.ndarray] = {}
    for (category, _name), mask in rois.items():
        direction = directions.get(CATEGORY_OF_ROI_CATEGORY.get(category, ""))
        for row in position[np.flatnonzero(mask.ravel())]:
            if row in latent_weights:
                continue
            random_part = np.asarray(rng.normal(size=latent.shape[1]))
            latent_weights[row] = (
                random_part if direction is None else 2 * direction + 0.5 * random_part
            )
    signal_rows = np.array(sorted(latent_weights), dtype=int)
    latent_matrix = np.stack([latent_weights[r] for r in signal_rows], axis=1)
    weights = _clip_weights(np.linalg.pinv(clip_projection), latent_matrix, clip)
    n_brain = len(brain_index)
    amplitude = np.zeros(n_brain)
    amplitude[signal_rows] = 1.0
    noise_sd = rng.uniform(0.5, 1.5, size=n_brain)
    noise_sd[signal_rows] = 1.0 / np.sqrt(rng.uniform(0.4, 2.5, size=len(signal_rows)))
    return EncodingModel(
        brain_index=brain_index,
        signal_rows=signal_rows,
        weights=weights,
        amplitude=amplitude,
        noise_sd=noise_sd,
        baseline=rng.normal(0.5, 0.5, size=n_brain),
    )


def _clip_weights(
    inverse_projection: np.ndarray, latent_matrix: np.ndarray, clip: np.ndarray
) -> np.ndarray:
    """``(n_signal, D)`` float32 CLIP-space weights, each scaled to unit response SD over the
    images; computed in blocks of voxels, so memory does not grow with images × voxels."""
    n_signal = latent_matrix.shape[1]
    weights = np.empty((n_signal, inverse_projection.shape[0]), dtype=np.float32)
    clip64 = clip.astype(np.float64)
    step = max(1, _BLOCK_BYTES // (8 * max(clip.shape[0], inverse_projection.shape[0])))
    for start in range(0, n_signal, step):
        block = inverse_projection @ latent_matrix[:, start : start + step]
        block /= (clip64 @ block).std(axis=0, keepdims=True)
        weights[start : start + step] = block.T
    return weights


def write_surface_roi(
    path_gii,
    path_label,
    vertices: np.ndarray,
    n_vertices: int,
    subject: str,
    rng: np.random.Generator,
) -> None:
    """A per-vertex 0/1 GIFTI map and the matching FreeSurfer ASCII ``.label`` file."""
    values = np.zeros(n_vertices, dtype=np.float32)
    values[vertices] = 1.0
    array = nib.gifti.GiftiDataArray(
        values, intent="NIFTI_INTENT_NONE", datatype="NIFTI_TYPE_FLOAT32"
    )
    with atomic_path(path_gii) as tmp:
        nib.save(nib.gifti.GiftiImage(darrays=[array]), tmp)
    xyz = rng.normal(size=(len(vertices), 3))
    xyz = 60 * xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
    lines = [f"#!ascii label  , from subject {subject} vox2ras=TkReg", str(len(vertices))]
    lines += [
        f"{v} {x:.3f} {y:.3f} {z:.3f} 1.0000000000"
        for v, (x, y, z) in zip(vertices, xyz, strict=True)
    ]
    write_text(path_label, "\n".join(lines) + "\n")
