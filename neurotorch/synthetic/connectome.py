"""A synthetic connectome with planted networks and lesions inside them.

The brain mask is nilearn's bundled MNI152 2 mm brain mask when nilearn is installed (an ellipsoid
otherwise), optionally subsampled to a coarser grid. nilearn's MNI152 template is the asymmetric
ICBM152 2009 template, release a, so the batches declare the space ``MNI152NLin2009aAsym``
(TemplateFlow's name); the ellipsoid is in no template space and is labelled
``synthetic-ellipsoid``. Each planted network is a pair of mirrored
spheres (left and right hemisphere) whose voxels share one latent time course per subject; every
other voxel is noise. Lesions are small spheres placed inside a network. Ground truth (network
labels per voxel, lesion -> network) lies under ``_groundtruth/``.

Layout of ``root``::

    batches/gsp1000_chunk_000.h5 ...     the connectome (Lacuna layout)
    mask.nii.gz                          the brain mask
    lesions/lesion-<k>_net-<n>_mask.nii.gz
    _groundtruth/networks.nii.gz         0 = no network, 1..n = network
    _groundtruth/lesions.csv             lesion, network, n_voxels
    _groundtruth/parameters.json         the generator's parameters, written last
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from neurotorch._options import check_int, check_number, check_option
from neurotorch.connectome import layout
from neurotorch.connectome.layout import (
    BATCH_DIR,
    COMPLETE_FILE,
    LESION_DIR,
    LESIONS_TABLE,
    MASK_FILE,
    NETWORKS_FILE,
)
from neurotorch.connectome.outputs import write_image
from neurotorch.connectome.writer import write_batch
from neurotorch.errors import ParameterError
from neurotorch.io.atomic import write_text
from neurotorch.synthetic._once import write_dataset_once

__all__ = [
    "BATCH_DIR",
    "COMPLETE_FILE",
    "LESIONS_TABLE",
    "LESION_DIR",
    "MASK_FILE",
    "NETWORKS_FILE",
    "SIZES",
    "brain_mask",
    "make_connectome",
    "make_connectome_dataset",
]

SIZES = {
    "tiny": dict(n_subjects=6, n_timepoints=40, voxel_mm=8, subjects_per_chunk=3),
    "small": dict(n_subjects=20, n_timepoints=100, voxel_mm=4, subjects_per_chunk=5),
    "bench": dict(n_subjects=10, n_timepoints=100, voxel_mm=2, subjects_per_chunk=5),
}


NILEARN_SPACE = "MNI152NLin2009aAsym"  # nilearn's MNI152 template: ICBM152 2009a asymmetric
ELLIPSOID_SPACE = "synthetic-ellipsoid"


def brain_mask(voxel_mm: int = 2) -> tuple[nib.Nifti1Image, str]:
    """(mask, space): the MNI152 2 mm brain mask (nilearn's bundled copy, else an ellipsoid),
    subsampled to ``voxel_mm``."""
    if check_int("voxel_mm", voxel_mm, minimum=2) % 2:
        raise ParameterError(
            f"voxel_mm must be an even number of mm (2, 4, 8, ...), got {voxel_mm}."
        )
    try:
        from nilearn.datasets import load_mni152_brain_mask

        img = load_mni152_brain_mask(resolution=2)
        data = np.asarray(img.dataobj) > 0
        affine, space = img.affine, NILEARN_SPACE
    except ImportError:
        shape = (91, 109, 91)
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
        data = np.sum((grid / np.array([0.78, 0.95, 0.8])[:, None, None, None]) ** 2, axis=0) <= 1
        affine = np.array([[2.0, 0, 0, -90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
        space = ELLIPSOID_SPACE
    step = voxel_mm // 2
    affine = affine.copy()
    affine[:3, :3] *= step
    return nib.Nifti1Image(data[::step, ::step, ::step].astype(np.uint8), affine), space


def _plant_networks(mask: np.ndarray, n_networks: int, rng: np.random.Generator) -> np.ndarray:
    """Label volume: each network is two mirrored spheres covering ~8 % of the mask together."""
    coords = np.argwhere(mask)
    labels = np.zeros(len(coords), dtype=np.int16)
    centre_x = (coords[:, 0].min() + coords[:, 0].max()) / 2
    radius = (0.045 * len(coords) * 3 / (4 * np.pi)) ** (1 / 3)
    for net in range(1, n_networks + 1):
        for _ in range(1000):
            c = coords[rng.integers(len(coords))].astype(float)
            if abs(c[0] - centre_x) < radius * 1.5:
                continue
            mirror = c.copy()
            mirror[0] = 2 * centre_x - c[0]
            blob = np.zeros(len(coords), dtype=bool)
            for centre in (c, mirror):
                blob |= np.sum((coords - centre) ** 2, axis=1) <= radius**2
            if blob.sum() > 0.06 * len(coords) and not labels[blob].any():
                labels[blob] = net
                break
        else:
            raise ParameterError(
                f"Could not place {n_networks} planted networks without overlap in this mask; "
                "use fewer networks (n_networks) or a finer grid (voxel_mm)."
            )
    volume = np.zeros(mask.shape, dtype=np.int16)
    volume[tuple(coords.T)] = labels
    return volume


def make_connectome(
    root: str | os.PathLike,
    n_subjects: int = 6,
    n_timepoints: int = 40,
    voxel_mm: int = 8,
    n_networks: int = 3,
    lesions_per_network: int = 2,
    subjects_per_chunk: int = 3,
    signal: float = 1.0,
    noise: float = 1.0,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic connectome with planted networks and lesions.

    Parameters
    ----------
    root
        Output folder (see the module docstring for its layout).
    n_subjects, n_timepoints
        Subjects and timepoints per subject.
    voxel_mm
        Grid spacing: 2 is the full MNI152 2 mm mask (~235k voxels), 4 ~29k, 8 ~3.7k.
    n_networks, lesions_per_network
        Planted networks and lesions placed inside each.
    subjects_per_chunk
        Subjects per batch file.
    signal, noise
        Standard deviation of the shared network time course and of the voxel noise.
    seed
        Seed of every random choice.
    overwrite
        Replace a synthetic dataset at ``root`` written with other parameters (see
        `neurotorch.synthetic._once.write_dataset_once`). Without it, a dataset written with the
        same parameters is reused.

    Returns
    -------
    Path
        ``root``.
    """
    root = Path(root)
    params: dict[str, Any] = dict(
        n_subjects=check_int("n_subjects", n_subjects, minimum=2),
        n_timepoints=check_int("n_timepoints", n_timepoints, minimum=3),
        voxel_mm=voxel_mm,
        n_networks=check_int("n_networks", n_networks, minimum=1),
        lesions_per_network=check_int("lesions_per_network", lesions_per_network, minimum=1),
        subjects_per_chunk=check_int("subjects_per_chunk", subjects_per_chunk, minimum=1),
        signal=check_number("signal", signal, minimum=0),
        noise=check_number("noise", noise, minimum=0, open_minimum=True),
        seed=check_int("seed", seed),
    )
    return write_dataset_once(
        root,
        params,
        COMPLETE_FILE,
        write=lambda folder: _write_connectome(folder, **params),
        what="connectome",
        overwrite=overwrite,
    )


def _write_connectome(
    root: Path,
    *,
    n_subjects: int,
    n_timepoints: int,
    voxel_mm: int,
    n_networks: int,
    lesions_per_network: int,
    subjects_per_chunk: int,
    signal: float,
    noise: float,
    seed: int,
) -> dict:
    """Write every file of the dataset into the (empty) folder ``root``."""
    (root / BATCH_DIR).mkdir(parents=True)
    (root / LESION_DIR).mkdir()
    (root / "_groundtruth").mkdir()
    rng = np.random.default_rng(seed)

    mask_img, space = brain_mask(voxel_mm)
    mask = np.asarray(mask_img.dataobj) > 0
    write_image(mask_img, root / MASK_FILE)
    labels = _plant_networks(mask, n_networks, rng)
    write_image(nib.Nifti1Image(labels, mask_img.affine), root / NETWORKS_FILE)

    rows: list[dict[str, Any]] = []
    lesion_radius = max(1.0, 4.0 / voxel_mm)
    for net in range(1, n_networks + 1):
        members = np.argwhere(labels == net)
        for _ in range(lesions_per_network):
            centre = members[rng.integers(len(members))]
            lesion = np.zeros(mask.shape, dtype=bool)
            near = members[np.sum((members - centre) ** 2, axis=1) <= lesion_radius**2]
            lesion[tuple(near.T)] = True
            file_name = layout.synthetic_lesion_file_name(f"lesion-{len(rows):02d}_net-{net}")
            write_image(
                nib.Nifti1Image(lesion.astype(np.uint8), mask_img.affine),
                root / LESION_DIR / file_name,
            )
            name = file_name.removesuffix(".nii.gz")  # the name network_map gives the lesion
            rows.append({"lesion": name, "network": net, "n_voxels": int(lesion.sum())})
    write_text(root / LESIONS_TABLE, pd.DataFrame(rows).to_csv(index=False))

    mask_indices = np.argwhere(mask)
    voxel_network = labels[mask].astype(np.int64)
    in_network = voxel_network > 0

    def subject_series(subject: int) -> np.ndarray:
        sub_rng = np.random.default_rng([seed, subject])
        latent = signal * sub_rng.standard_normal((n_timepoints, n_networks + 1), dtype=np.float32)
        data = noise * sub_rng.standard_normal((n_timepoints, len(mask_indices)), dtype=np.float32)
        data[:, in_network] += latent[:, voxel_network[in_network]]
        return data

    for batch, start in enumerate(range(0, n_subjects, subjects_per_chunk)):
        stop = min(start + subjects_per_chunk, n_subjects)
        write_batch(
            root / BATCH_DIR / layout.batch_file_name(batch),
            (subject_series(s) for s in range(start, stop)),
            [f"sub-{s:04d}" for s in range(start, stop)],
            mask_indices=mask_indices,
            mask_affine=mask_img.affine,
            mask_shape=mask.shape,
            n_timepoints=n_timepoints,
            space=space,
            description=f"synthetic connectome, {n_networks} planted networks, seed {seed}",
            source="neurotorch.synthetic.connectome",
        )
    return {}


def make_connectome_dataset(
    out: str | os.PathLike, size: str = "small", seed: int = 0, overwrite: bool = False
) -> Path:
    """`make_connectome` with a size preset (``tiny``, ``small`` or ``bench``), for ``neurotorch synth``."""
    return make_connectome(
        out, seed=seed, overwrite=overwrite, **SIZES[check_option("size", size, SIZES)]
    )
