"""`FMRIInformedSensors`: a betas dataset whose trials get M/EEG sensor data ``L s + noise``,
with sources ``s`` read from the fMRI betas at the leadfield's source positions."""

from __future__ import annotations

import os
from collections.abc import Sized
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch.utils.data import Dataset

from neurotorch._options import check_int, check_number
from neurotorch.errors import ParameterError
from neurotorch.io.storage import DataRoot
from neurotorch.meeg import layout
from neurotorch.meeg.leadfield import LeadfieldData
from neurotorch.meeg.simulation import item_generator

if TYPE_CHECKING:
    from neurotorch.data.fmri.betas import BetasDataset


def mask_voxel_coords_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (mm) coordinates of a 3-D mask's True voxels, in C order (the voxel-array order)."""
    ijk = np.argwhere(np.asarray(mask, dtype=bool))
    return ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def _check_one_subject(betas_dataset: Any, subject: str) -> None:
    """Refuse a betas dataset whose subjects are not exactly ``subject``."""
    subjects = list(getattr(betas_dataset, "subjects", [subject]))
    if subjects == [subject]:
        return
    if len(subjects) > 1:
        raise ParameterError(
            f"FMRIInformedSensors.from_laion_fmri maps every trial through {subject}'s voxel grid, "
            f"head transform and leadfield, but the betas dataset holds {len(subjects)} subjects "
            f"({', '.join(subjects)}): the other subjects' trials would get sensors from the wrong "
            "head. Build one BetasDataset and one FMRIInformedSensors per subject (and "
            "concatenate them with torch.utils.data.ConcatDataset if needed)."
        )
    raise ParameterError(
        f"FMRIInformedSensors.from_laion_fmri was asked for subject={subject!r}, but the betas "
        f"dataset holds {subjects[0]!r}; pass subject={subjects[0]!r} (each subject's trials need "
        "its own voxel grid, head transform and leadfield)."
    )


class FMRIInformedSensors(Dataset):
    """A betas dataset whose trials also carry leadfield-simulated sensor data.

    For trial ``i`` the source amplitudes ``s`` (nAm) are that trial's betas sampled at the
    leadfield's source positions: each source (head frame, m) is mapped to T1w mm by
    ``head_to_t1w`` and takes the beta of the nearest masked voxel, times ``nam_per_unit``.
    **Sources outside the mask** -- farther than ``max_distance_mm`` from every masked voxel
    centre (default: half a voxel diagonal, i.e. the source's own voxel is not in the mask) -- get
    amplitude 0; ``in_mask`` tells which. Sensors: ``y = L s + eta * eps`` with
    ``||eta eps|| / ||L s|| = (1 - alpha) / alpha`` and ``eps`` drawn from ``(seed, i)``.

    Parameters
    ----------
    betas_dataset
        Map-style dataset of dicts with ``betas`` (n_voxels,) float32.
    voxel_coords_mm
        ``(n_voxels, 3)`` T1w world coordinates (mm) of the betas' voxels, in the betas' order
        (see `mask_voxel_coords_mm`).
    leadfield
        A fixed-orientation leadfield with ``src_coords``.
    head_to_t1w
        4x4 affine from head coordinates (m) to T1w world coordinates (mm).
    alpha
        SNR in (0, 1].
    seed
        Base seed of the sensor noise.
    max_distance_mm
        Farthest a source may lie from a masked voxel centre and still be inside.
    nam_per_unit
        Source amplitude (nAm) per beta unit.

    Items are the wrapped items plus ``sensors`` (M,) and ``sources`` (N,) float32 tensors.
    """

    def __init__(
        self,
        betas_dataset: Dataset,
        voxel_coords_mm: np.ndarray,
        leadfield: LeadfieldData,
        head_to_t1w: np.ndarray,
        alpha: float = 0.5,
        seed: int = 0,
        max_distance_mm: float | None = None,
        nam_per_unit: float = 1.0,
    ):
        from scipy.spatial import cKDTree

        if leadfield.orientation_type != "fixed" or leadfield.src_coords is None:
            raise ParameterError(
                "FMRIInformedSensors needs a fixed-orientation leadfield with src_coords; got a "
                f"{leadfield.orientation_type} one"
                + (" without positions." if leadfield.src_coords is None else ".")
            )
        alpha = check_number("alpha", alpha, minimum=0.0, maximum=1.0, open_minimum=True)
        seed = check_int("seed", seed, minimum=0)
        coords = np.asarray(voxel_coords_mm, dtype=np.float64)
        transform = np.asarray(head_to_t1w, dtype=np.float64)
        src_mm = leadfield.src_coords @ transform[:3, :3].T + transform[:3, 3]
        tree = cKDTree(coords)
        if max_distance_mm is None:
            spacing = np.median(tree.query(coords[: min(len(coords), 2000)], k=2)[0][:, 1])
            max_distance_mm = 0.5 * np.sqrt(3.0) * spacing + 1e-6
        distance, nearest = tree.query(src_mm)
        self.in_mask = distance <= max_distance_mm
        if not self.in_mask.any():
            raise ParameterError(
                "No leadfield source falls inside the betas' mask; check head_to_t1w (head metres -> "
                "T1w millimetres) and voxel_coords_mm."
            )
        self.betas_dataset = betas_dataset
        self.voxel_index = torch.as_tensor(nearest, dtype=torch.long)
        self.source_weight = torch.as_tensor(
            self.in_mask * float(nam_per_unit), dtype=torch.float32
        )
        self.leadfield = torch.as_tensor(leadfield.leadfield, dtype=torch.float32)
        self.alpha = float(alpha)
        self.seed = seed

    @classmethod
    def from_laion_fmri(
        cls,
        betas_dataset: BetasDataset,
        fmri_root: str | os.PathLike,
        subject: str = "sub-01",
        alpha: float = 0.5,
        seed: int = 0,
        storage_options: dict | None = None,
        **kwargs: Any,
    ) -> FMRIInformedSensors:
        """Pair a LAION-fMRI `neurotorch.data.fmri.betas.BetasDataset` with the subject's leadfield.

        Reads the fixed leadfield and ``<subject>_head-to-T1w.txt`` from
        ``<fmri_root>/derivatives/meeg/`` (see `neurotorch.synthetic.meeg.write_subject_leadfields`)
        and the voxel grid's affine from the subject's anatomical brain mask; the voxel order is
        ``betas_dataset.voxel_mask(subject)`` in C order. ``fmri_root`` may be an fsspec URL
        (with ``storage_options``). ``kwargs`` go to the constructor.

        ``betas_dataset`` must hold ``subject`` alone: every subject has its own voxel grid, head
        transform and leadfield, so a dataset of several subjects raises `ParameterError` (make
        one `FMRIInformedSensors` per subject and concatenate them).
        """
        import nibabel as nib

        from neurotorch.fmri import layout as fmri_layout
        from neurotorch.meeg.leadfield import load_leadfield_npz, read_transform

        subject = fmri_layout.subject_id(subject)
        _check_one_subject(betas_dataset, subject)
        root = DataRoot(fmri_root, storage_options)
        meeg_dir, options = layout.FMRI_MEEG_DIR, root.storage_options
        leadfield = load_leadfield_npz(
            root.path(meeg_dir, layout.leadfield_file(subject, "fixed")), storage_options=options
        )
        transform = read_transform(root.path(meeg_dir, layout.head_to_t1w_name(subject)), options)
        mask = cast(
            nib.Nifti1Image, nib.load(root.local_path(fmri_layout.anatomical_brain_mask(subject)))
        )
        affine = mask.affine
        coords = mask_voxel_coords_mm(betas_dataset.voxel_mask(subject), affine)
        return cls(
            betas_dataset,
            coords,
            leadfield,
            head_to_t1w=transform,
            alpha=alpha,
            seed=seed,
            **kwargs,
        )

    def __len__(self) -> int:
        return len(cast(Sized, self.betas_dataset))  # a map-style dataset

    def __repr__(self) -> str:
        return (
            f"FMRIInformedSensors({len(self)} trials of {self.betas_dataset!r}; "
            f"{self.leadfield.shape[0]} sensors x {self.leadfield.shape[1]} sources, "
            f"{int(self.in_mask.sum())} inside the mask; alpha={self.alpha}, seed={self.seed})"
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.betas_dataset[index])
        betas = torch.as_tensor(item["betas"], dtype=torch.float32)
        sources = betas[self.voxel_index] * self.source_weight
        clean = self.leadfield @ sources
        eps = torch.randn(clean.shape, generator=item_generator(self.seed, index))
        eta = 0.0
        if self.alpha < 1.0 and clean.norm() > 0:
            eta = (1.0 - self.alpha) / self.alpha * clean.double().norm() / eps.double().norm()
        item["sensors"] = clean + float(eta) * eps
        item["sources"] = sources
        return item
