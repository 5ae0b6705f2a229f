"""Functional lesion network mapping (LNM) over a connectome, in torch.

For each lesion the seed is the mean time course of its voxels; per subject, r is the Pearson
correlation of the seed with every voxel and z = arctanh(r); across subjects the map is the mean z,
its one-sample t statistic, the two-sided p value and the Benjamini-Hochberg adjusted p (q).

All lesions are computed together in one pass over the subjects: one subject's time series is
worked on at a time (while the next `READ_AHEAD` are read and inflated in threads, into buffers
allocated once), correlations and z are computed in float32 and the across-subject sums of z and
z^2 are accumulated in float64. p values use the t distribution's finite series (`two_sided_p`),
the FDR one sort per lesion (`benjamini_hochberg`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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
from neurotorch.io.atomic import atomic_path, write_text

# |r| is clipped here before arctanh so that a voxel equal to its seed stays finite
R_CLIP = 1.0 - 1e-7
MAP_KINDS = ("meanz", "t", "p", "q")
# p values are computed with the t distribution's finite series up to this many degrees of
# freedom, and with scipy below this p (see `two_sided_p`)
MAX_SERIES_DOF = 100
SERIES_P_FLOOR = 1e-6
# subjects read and inflated ahead, each in its own thread: inflating a subject takes about twice
# as long as computing its correlations on one core
READ_AHEAD = 2

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
    timeseries: torch.Tensor,
    seeds: SeedWeights,
    inplace: bool = False,
    out: torch.Tensor | None = None,
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
    out
        Optional (n_seeds, n_voxels) tensor to write the correlations into (reused across
        subjects, it saves allocating and page-faulting a large array per subject).

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
    correlation = torch.matmul(seed_series.T, centred, out=out)
    correlation /= _column_norms(centred)
    return correlation


def _column_norms(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of every column of a (t, v) tensor, summed row by row.

    Adding squared rows walks memory in order, ~8x faster than a reduction across rows.
    """
    squares = torch.zeros_like(x[0])
    for row in x:
        squares.addcmul_(row, row)
    return squares.sqrt_()


def fisher_z_(r: torch.Tensor) -> torch.Tensor:
    """arctanh(r) in place, with |r| clipped just below 1."""
    return r.clamp_(-R_CLIP, R_CLIP).atanh_()


def _tail_series_coefficients(dof: int) -> list[float]:
    """Coefficients c_k of the finite series of the t distribution with integer ``dof``.

    With x = dof / (dof + t^2) and s = |t| / sqrt(dof + t^2), P(|T| <= |t|) is
    s * sum_k c_k x^k for even ``dof`` and (2/pi) * (atan(|t| / sqrt(dof)) + s sqrt(x)
    sum_k c_k x^k) for odd ``dof`` (Abramowitz & Stegun 26.7.3-4).
    """
    even = dof % 2 == 0
    coefficients = [1.0]
    for k in range(1, (dof - 1) // 2 + (1 if even else 0)):
        ratio = (2 * k - 1) / (2 * k) if even else (2 * k) / (2 * k + 1)
        coefficients.append(coefficients[-1] * ratio)
    return coefficients


def two_sided_p(t: np.ndarray, dof: int) -> np.ndarray:
    """Two-sided p values of t statistics with integer ``dof``, float64.

    Up to `MAX_SERIES_DOF` degrees of freedom the t distribution's finite series is evaluated
    with a few vectorised passes in torch (Horner's rule); it agrees with
    ``scipy.special.stdtr`` to ~1e-9 relative while p >= `SERIES_P_FLOOR`. Smaller p values
    (where 1 - P(|T| <= |t|) would cancel) and larger ``dof`` use ``scipy.special.stdtr``.
    NaN stays NaN.
    """
    t = np.asarray(t, dtype=np.float64)
    if dof < 1 or dof > MAX_SERIES_DOF:
        return 2.0 * special.stdtr(dof, -np.abs(t))
    abs_t = torch.from_numpy(t).abs()
    x = abs_t.square().add_(dof)
    x = x.reciprocal_().mul_(dof)  # cos^2 of the angle atan(|t| / sqrt(dof))
    coefficients = _tail_series_coefficients(dof)
    series = torch.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        series.mul_(x).add_(c)
    series.mul_(torch.sub(1.0, x).sqrt_())  # times sin of the angle
    if dof % 2 == 0:
        inside = series
    else:
        inside = abs_t.div_(math.sqrt(dof)).atan_()
        if dof > 1:
            inside.add_(series.mul_(x.sqrt_()))
        inside.mul_(2.0 / math.pi)
    p = inside.neg_().add_(1.0).numpy()
    small = p < SERIES_P_FLOOR  # False for NaN
    p[small] = 2.0 * special.stdtr(dof, -np.abs(t[small]))
    return p


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p values along the last axis.

    NaN p values (voxels without variance) stay NaN and do not count as tests. Rows of a 2-D
    input are adjusted in parallel threads (numpy's sort releases the GIL).
    """
    p = np.asarray(p, dtype=np.float64)
    n_threads = min(torch.get_num_threads(), p.shape[0]) if p.ndim == 2 else 1
    if n_threads <= 1:
        return _benjamini_hochberg_rows(p)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        blocks = pool.map(_benjamini_hochberg_rows, np.array_split(p, n_threads))
        return np.concatenate(list(blocks))


def _benjamini_hochberg_rows(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p, axis=-1)  # NaN sorts last
    ranked = np.take_along_axis(p, order, axis=-1)
    n_tests = np.count_nonzero(~np.isnan(p), axis=-1, keepdims=True)
    ranked *= n_tests / np.arange(1, p.shape[-1] + 1)
    reversed_view = ranked[..., ::-1]
    np.fmin.accumulate(reversed_view, axis=-1, out=reversed_view)  # fmin: NaN never wins
    np.minimum(ranked, 1.0, out=ranked)
    adjusted = np.empty_like(ranked)
    np.put_along_axis(adjusted, order, ranked, axis=-1)
    return adjusted


@contextmanager
def _one_core_for_reading(device: torch.device) -> Iterator[None]:
    """Leave one core to the read-ahead thread while torch computes on the CPU."""
    n_threads = torch.get_num_threads()
    if device.type == "cpu" and n_threads > 1:
        torch.set_num_threads(n_threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(n_threads)


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
                with atomic_path(path) as tmp:
                    nib.save(self.to_nifti(kind, name), tmp)
                written.append(path)
        summary = out_dir / "summary.csv"
        write_text(summary, self.summary(alpha).to_csv(index=False))
        return written + [summary]


def network_map(
    lesions: LesionInput | Sequence | Mapping | LesionSet,
    connectome: str | os.PathLike | ConnectomeBatches,
    subjects: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    storage_options: dict | None = None,
) -> NetworkMapResult:
    """Functional lesion network maps of many lesions in one pass over a connectome.

    Parameters
    ----------
    lesions
        Lesion masks, see `load_lesions`, or an already loaded `LesionSet`.
    connectome
        Folder of batch files (local path or fsspec URL such as ``s3://bucket/prefix``) or a
        `ConnectomeBatches`.
    subjects
        Subject indices to use (default: all).
    device
        Torch device for the correlations (``"cuda"`` moves the per-subject work to a GPU).
    storage_options
        fsspec options when ``connectome`` is a URL.

    Returns
    -------
    NetworkMapResult
        Mean Fisher z, t, two-sided p and Benjamini-Hochberg q maps per lesion.
    """
    batches = (
        connectome
        if isinstance(connectome, ConnectomeBatches)
        else ConnectomeBatches(connectome, storage_options)
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
    # buffers reused for every subject: large fresh arrays would be page-faulted in each time
    z = torch.empty(shape, dtype=torch.float32, device=device)
    z64 = torch.empty(shape, dtype=torch.float64, device=device)
    progress = tqdm(
        total=len(subjects),
        desc="lesion network mapping",
        unit="subject",
        disable=not progress_enabled(),
    )
    with progress, _one_core_for_reading(device):
        for _, series in batches.iter_subjects(subjects, prefetch=READ_AHEAD, reuse_buffers=True):
            x = torch.from_numpy(series).to(device)
            z64.copy_(fisher_z_(seed_correlations(x, seeds, inplace=True, out=z)))
            total.add_(z64)  # accumulated in float64
            total_sq.addcmul_(z64, z64)
            progress.update()

    n_subjects = len(subjects)
    mean = total.div_(n_subjects).cpu()
    squared_deviations = total_sq.addcmul_(total, total, value=-n_subjects).clamp_(min=0).cpu()
    standard_error = squared_deviations.div_((n_subjects - 1) * n_subjects).sqrt_()
    t = (mean / standard_error).numpy()
    p = two_sided_p(t, n_subjects - 1)
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
