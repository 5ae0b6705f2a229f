"""Functional lesion network mapping (LNM) over a connectome, in torch.

For each lesion the seed is the mean time course of its voxels; per subject, r is the Pearson
correlation of the seed with every voxel and z = arctanh(r); across subjects the map is the mean z,
its one-sample t statistic, the two-sided p value and the Benjamini-Hochberg adjusted p (q).

All lesions are computed together in one pass over the subjects: one subject's time series is in
memory at a time (plus the next one, read ahead in a thread), correlations and z are computed in
float32 and the across-subject sums of z and z^2 are accumulated in float64.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from scipy import special
from tqdm.auto import tqdm

from neurotorch.config import progress_enabled
from neurotorch.connectome.batches import ConnectomeBatches
from neurotorch.connectome.grid import mask_world_coordinates, sample_at_mask
from neurotorch.errors import ShapeMismatchError

# |r| is clipped here before arctanh so that a voxel equal to its seed stays finite
R_CLIP = 1.0 - 1e-7
MAP_KINDS = ("meanz", "t", "p", "q")

LesionInput = str | os.PathLike | nib.spatialimages.SpatialImage | np.ndarray


@dataclass
class LesionSet:
    """Lesions on the connectome's voxels."""

    names: list[str]
    masks: np.ndarray  # (n_lesions, n_voxels) bool
    volumes_mm3: np.ndarray  # (n_lesions,) lesion volume in its own image


def _lesion_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not files:
        raise FileNotFoundError(f"No .nii/.nii.gz lesion masks in {folder}.")
    return files


def _lesion_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        name = name.removesuffix(suffix)
    return name


def _as_named_inputs(lesions: LesionInput | Sequence | Mapping) -> list[tuple[str, LesionInput]]:
    if isinstance(lesions, Mapping):
        return [(str(k), v) for k, v in lesions.items()]
    if isinstance(lesions, (str, os.PathLike)):
        path = Path(lesions)
        files = _lesion_files(path) if path.is_dir() else [path]
        return [(_lesion_name(f), f) for f in files]
    if isinstance(lesions, (nib.spatialimages.SpatialImage, np.ndarray)):
        lesions = [lesions]
    named = []
    for i, item in enumerate(lesions):
        if isinstance(item, (str, os.PathLike)):
            named.append((_lesion_name(Path(item)), item))
        else:
            named.append((f"lesion-{i:03d}", item))
    return named


def load_lesions(
    lesions: LesionInput | Sequence | Mapping, connectome: ConnectomeBatches
) -> LesionSet:
    """Bring lesion masks onto the connectome's voxels.

    Parameters
    ----------
    lesions
        A folder of NIfTI masks, a file, an image, a list of these, or a mapping name -> mask. A
        NIfTI mask on any grid is brought to RAS+ (after checking its header cannot flip left and
        right) and sampled nearest-neighbour at the connectome's voxels. A numpy array is taken to
        be on the connectome's grid already: 3-D of the mask's shape or 1-D over its voxels.
    connectome
        The connectome whose mask and affine define the target grid.

    Raises
    ------
    ShapeMismatchError
        An array does not match the grid, or a lesion has no voxel inside the brain mask (usually
        a wrong affine or space).
    OrientationMismatchError
        A lesion file's qform and sform disagree on orientation.
    """
    names, masks, volumes = [], [], []
    voxel_mm3 = abs(np.linalg.det(connectome.affine[:3, :3]))
    world = mask_world_coordinates(connectome.mask_indices, connectome.affine)
    for name, item in _as_named_inputs(lesions):
        if isinstance(item, np.ndarray):
            if item.shape == connectome.mask_shape:
                values = item[tuple(connectome.mask_indices.T)]
                volume = float(np.count_nonzero(item)) * voxel_mm3
            elif item.shape == (connectome.n_voxels,):
                values, volume = item, float(np.count_nonzero(item)) * voxel_mm3
            else:
                raise ShapeMismatchError(
                    f"Lesion {name!r} has shape {item.shape}; an array must have the mask shape "
                    f"{connectome.mask_shape} or ({connectome.n_voxels},). Pass a NIfTI image to "
                    "resample from another grid."
                )
        else:
            img = (
                item
                if isinstance(item, nib.spatialimages.SpatialImage)
                else nib.load(os.fspath(item))
            )
            values = sample_at_mask(
                img, connectome.mask_indices, connectome.affine, name, world=world
            )
            volume = float(np.count_nonzero(np.asarray(img.dataobj))) * abs(
                np.linalg.det(img.affine[:3, :3])
            )
        mask = np.asarray(values) > 0
        if not mask.any():
            raise ShapeMismatchError(
                f"Lesion {name!r} has no voxel inside the connectome's brain mask; check that it is "
                f"in the connectome's space ({connectome.space}) and that its affine is right."
            )
        names.append(name)
        masks.append(mask)
        volumes.append(volume)
    return LesionSet(names, np.stack(masks), np.asarray(volumes))


@dataclass
class SeedWeights:
    """How seeds are formed from voxels: seed k = timeseries[:, index] @ weights[:, k].

    Only lesion voxels are touched, so building the seeds costs nothing next to the correlations.
    """

    index: torch.Tensor  # (n_seed_voxels,) voxel columns used by any seed
    weights: torch.Tensor  # (n_seed_voxels, n_seeds)

    @classmethod
    def from_masks(
        cls, masks: np.ndarray, device: str | torch.device = "cpu", dtype=torch.float32
    ) -> SeedWeights:
        """Mean-of-voxels seeds from (n_seeds, n_voxels) boolean masks."""
        masks = np.asarray(masks, dtype=bool)
        index = np.flatnonzero(masks.any(axis=0))
        weights = masks[:, index].T / masks.sum(axis=1)
        return cls(
            torch.from_numpy(index).to(device),
            torch.from_numpy(weights).to(device=device, dtype=dtype),
        )


def seed_correlations(
    timeseries: torch.Tensor, seeds: SeedWeights, inplace: bool = False
) -> torch.Tensor:
    """Pearson r of each seed time course with every voxel, for one subject.

    Parameters
    ----------
    timeseries
        (n_timepoints, n_voxels) float tensor.
    seeds
        Which voxels average into which seed, see `SeedWeights.from_masks`.
    inplace
        Centre ``timeseries`` in place instead of in a copy (for callers that own the tensor).

    Returns
    -------
    torch.Tensor
        (n_seeds, n_voxels) correlations; NaN where a voxel or a seed has zero variance.
    """
    n_timepoints = timeseries.shape[0]
    mean = timeseries.new_full((1, n_timepoints), 1.0 / n_timepoints) @ timeseries  # BLAS gemv
    centred = timeseries.sub_(mean) if inplace else timeseries - mean
    seed_series = centred[:, seeds.index] @ seeds.weights
    seed_series -= seed_series.mean(dim=0, keepdim=True)
    seed_series /= torch.linalg.vector_norm(seed_series, dim=0)
    correlation = seed_series.T @ centred
    correlation /= torch.einsum("tv,tv->v", centred, centred).sqrt_()
    return correlation


def fisher_z_(r: torch.Tensor) -> torch.Tensor:
    """arctanh(r) in place, with |r| clipped just below 1."""
    return r.clamp_(-R_CLIP, R_CLIP).atanh_()


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p values along the last axis.

    NaN p values (voxels without variance) stay NaN and do not count as tests.
    """
    p_t = torch.as_tensor(np.asarray(p, dtype=np.float64))
    sorted_p, order = torch.sort(p_t, dim=-1)  # NaN sorts last
    n_tests = (~torch.isnan(p_t)).sum(dim=-1, keepdim=True)
    ranks = torch.arange(1, p_t.shape[-1] + 1, dtype=torch.float64)
    scaled = (sorted_p * n_tests / ranks).nan_to_num_(nan=torch.inf)
    adjusted = scaled.flip(-1).cummin(dim=-1).values.flip(-1).clamp_(max=1.0)
    adjusted[torch.isnan(sorted_p)] = torch.nan
    return torch.empty_like(adjusted).scatter_(-1, order, adjusted).numpy()


@dataclass
class NetworkMapResult:
    """Lesion network maps on the connectome's voxels, one row per lesion."""

    names: list[str]
    mean_z: np.ndarray  # (n_lesions, n_voxels) float32
    t: np.ndarray  # (n_lesions, n_voxels) float32
    p: np.ndarray  # (n_lesions, n_voxels) float64, two-sided
    q: np.ndarray  # (n_lesions, n_voxels) float64, Benjamini-Hochberg adjusted
    n_subjects: int
    lesion_voxels: np.ndarray  # (n_lesions,) lesion voxels inside the brain mask
    lesion_volumes_mm3: np.ndarray
    mask_indices: np.ndarray
    affine: np.ndarray
    mask_shape: tuple[int, int, int]

    def map(self, kind: str, lesion: int | str) -> np.ndarray:
        """One (n_voxels,) map: ``kind`` in ``"meanz", "t", "p", "q"``."""
        if kind not in MAP_KINDS:
            raise ValueError(f"Unknown map {kind!r}; choose from {MAP_KINDS}.")
        row = self.names.index(lesion) if isinstance(lesion, str) else int(lesion)
        return {"meanz": self.mean_z, "t": self.t, "p": self.p, "q": self.q}[kind][row]

    def volume(self, kind: str, lesion: int | str) -> np.ndarray:
        """One map scattered into the 3-D mask grid (0 outside the mask)."""
        values = self.map(kind, lesion)
        out = np.zeros(self.mask_shape, dtype=np.float32)
        out[tuple(self.mask_indices.T)] = values
        return out

    def to_nifti(self, kind: str, lesion: int | str) -> nib.Nifti1Image:
        """One map as a NIfTI image on the connectome grid."""
        return nib.Nifti1Image(self.volume(kind, lesion), self.affine)

    def summary(self, alpha: float = 0.05) -> pd.DataFrame:
        """One row per lesion: size, peak t and where, voxels significant at FDR ``alpha``."""
        t = np.where(np.isnan(self.t), 0.0, self.t)
        peak = np.argmax(np.abs(t), axis=1)
        peak_mm = mask_world_coordinates(self.mask_indices[peak], self.affine)
        return pd.DataFrame(
            {
                "lesion": self.names,
                "n_lesion_voxels": self.lesion_voxels,
                "lesion_volume_mm3": self.lesion_volumes_mm3,
                "n_subjects": self.n_subjects,
                "max_t": np.nanmax(self.t, axis=1),
                "min_t": np.nanmin(self.t, axis=1),
                "peak_x_mm": peak_mm[:, 0],
                "peak_y_mm": peak_mm[:, 1],
                "peak_z_mm": peak_mm[:, 2],
                f"n_voxels_q<{alpha:g}": np.sum(self.q < alpha, axis=1),
            }
        )

    def save(self, out_dir: str | os.PathLike, alpha: float = 0.05) -> list[Path]:
        """Write ``<lesion>_desc-<kind>_map.nii.gz`` per lesion and map, and ``summary.csv``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in self.names:
            for kind in MAP_KINDS:
                path = out_dir / f"{name}_desc-{kind}_map.nii.gz"
                tmp = path.with_name(f".{path.name}.tmp.nii.gz")
                nib.save(self.to_nifti(kind, name), tmp)
                os.replace(tmp, path)
                written.append(path)
        summary = out_dir / "summary.csv"
        self.summary(alpha).to_csv(summary, index=False)
        return written + [summary]


def network_map(
    lesions: LesionInput | Sequence | Mapping | LesionSet,
    connectome: str | os.PathLike | ConnectomeBatches,
    subjects: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
) -> NetworkMapResult:
    """Functional lesion network maps of many lesions in one pass over a connectome.

    Parameters
    ----------
    lesions
        Lesion masks, see `load_lesions`, or an already loaded `LesionSet`.
    connectome
        Folder of batch files or a `ConnectomeBatches`.
    subjects
        Subject indices to use (default: all).
    device
        Torch device for the correlations (``"cuda"`` moves the per-subject work to a GPU).

    Returns
    -------
    NetworkMapResult
        Mean Fisher z, t, two-sided p and Benjamini-Hochberg q maps per lesion.
    """
    batches = (
        connectome if isinstance(connectome, ConnectomeBatches) else ConnectomeBatches(connectome)
    )
    lesion_set = lesions if isinstance(lesions, LesionSet) else load_lesions(lesions, batches)
    subjects = list(range(batches.n_subjects)) if subjects is None else list(subjects)
    if len(subjects) < 2:
        raise ValueError(f"Lesion network mapping needs at least 2 subjects, got {len(subjects)}.")
    device = torch.device(device)
    seeds = SeedWeights.from_masks(lesion_set.masks, device)

    shape = (len(lesion_set.names), batches.n_voxels)
    total = torch.zeros(shape, dtype=torch.float64, device=device)
    total_sq = torch.zeros(shape, dtype=torch.float64, device=device)
    for _, series in tqdm(
        batches.iter_subjects(subjects, prefetch=True),
        total=len(subjects),
        desc="lesion network mapping",
        unit="subject",
        disable=not progress_enabled(),
    ):
        x = torch.from_numpy(series).to(device)
        z = fisher_z_(seed_correlations(x, seeds, inplace=True)).double()
        total.add_(z)
        total_sq.addcmul_(z, z)

    n_subjects = len(subjects)
    mean = total.div_(n_subjects).cpu()
    squared_deviations = total_sq.addcmul_(total, total, value=-n_subjects).clamp_(min=0).cpu()
    standard_error = squared_deviations.div_((n_subjects - 1) * n_subjects).sqrt_()
    t = (mean / standard_error).numpy()
    p = special.stdtr(n_subjects - 1, -np.abs(t))
    p *= 2.0
    return NetworkMapResult(
        names=list(lesion_set.names),
        mean_z=mean.numpy().astype(np.float32),
        t=t.astype(np.float32),
        p=p,
        q=benjamini_hochberg(p),
        n_subjects=n_subjects,
        lesion_voxels=lesion_set.masks.sum(axis=1),
        lesion_volumes_mm3=lesion_set.volumes_mm3,
        mask_indices=batches.mask_indices,
        affine=batches.affine,
        mask_shape=batches.mask_shape,
    )
