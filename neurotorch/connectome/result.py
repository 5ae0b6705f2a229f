"""The maps of a lesion network mapping run: access, thresholded maps, overlaps, tables and files."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from neurotorch.connectome.grid import mask_world_coordinates
from neurotorch.errors import ParameterError
from neurotorch.io.atomic import atomic_path, write_text

MAP_KINDS = ("meanz", "r", "t", "p", "q", "pfwe")
TABLE_SEPARATORS = {"csv": ",", "tsv": "\t"}


def check_alpha(alpha: float) -> float:
    """``alpha`` if it is a level in (0, 1); raises `ParameterError` otherwise."""
    if not 0.0 < alpha < 1.0:
        raise ParameterError(f"alpha must be in (0, 1), got {alpha}; e.g. 0.05.")
    return float(alpha)


def _check_t_threshold(threshold: float) -> float:
    if not threshold > 0 or not np.isfinite(threshold):
        raise ParameterError(f"t_threshold must be a positive number, got {threshold}.")
    return float(threshold)


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
    seed_voxels: np.ndarray  # (n_lesions,) voxels averaged into the seed (PINI: a subset)
    lesion_volumes_mm3: np.ndarray
    lesion_masks: np.ndarray  # (n_lesions, n_voxels) bool, the lesions on the connectome's voxels
    mask_indices: np.ndarray
    affine: np.ndarray
    mask_shape: tuple[int, int, int]
    space: str = "unknown"
    p_fwe: np.ndarray | None = None  # (n_lesions, n_voxels) sign-flip max-|t| FWER p
    max_t_null: np.ndarray | None = None  # (n_permutations, n_lesions)
    provenance: dict = field(default_factory=dict)

    @property
    def r(self) -> np.ndarray:
        """tanh of the mean Fisher z: the correlation map, as Lacuna's ``correlation_map``."""
        return np.tanh(self.mean_z)

    def _row(self, lesion: int | str) -> int:
        if isinstance(lesion, str):
            if lesion not in self.names:
                raise ParameterError(f"No lesion {lesion!r}; the lesions are {self.names}.")
            return self.names.index(lesion)
        if not -len(self.names) <= int(lesion) < len(self.names):
            raise ParameterError(f"Lesion {lesion} out of range for {len(self.names)} lesions.")
        return int(lesion)

    def map(self, kind: str, lesion: int | str) -> np.ndarray:
        """One (n_voxels,) map: ``kind`` in ``"meanz", "r", "t", "p", "q", "pfwe"``."""
        if kind not in MAP_KINDS:
            raise ParameterError(f"Unknown map {kind!r}; choose from {MAP_KINDS}.")
        if kind == "pfwe" and self.p_fwe is None:
            raise ParameterError("No FWER map: run network_map with n_permutations > 0.")
        maps = {"meanz": self.mean_z, "t": self.t, "p": self.p, "q": self.q, "pfwe": self.p_fwe}
        row = self._row(lesion)
        return self.r[row] if kind == "r" else maps[kind][row]

    def significant(
        self, lesion: int | str, alpha: float | None = None, t_threshold: float | None = None
    ) -> np.ndarray:
        """Boolean (n_voxels,) map: q < ``alpha`` (FDR), or |t| > ``t_threshold`` (as Lacuna)."""
        if (alpha is None) == (t_threshold is None):
            raise ParameterError("Give exactly one of alpha (FDR) and t_threshold.")
        if alpha is not None:
            return self.map("q", lesion) < check_alpha(alpha)
        return np.abs(self.map("t", lesion)) > _check_t_threshold(t_threshold)

    def significant_fwe(self, lesion: int | str, alpha: float) -> np.ndarray:
        """Boolean (n_voxels,) map: sign-flip max-|t| FWER p < ``alpha``."""
        return self.map("pfwe", lesion) < check_alpha(alpha)

    def overlap(self, alpha: float | None = None, t_threshold: float | None = None) -> np.ndarray:
        """(n_voxels,) number of lesions whose map is significant at each voxel (see `significant`):
        the group network map."""
        return np.sum(
            [self.significant(k, alpha, t_threshold) for k in range(len(self.names))], axis=0
        )

    def lesion_overlap(self) -> np.ndarray:
        """(n_voxels,) number of lesions covering each voxel."""
        return self.lesion_masks.sum(axis=0)

    def _scatter(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        out = np.zeros(self.mask_shape, dtype=np.uint8 if values.dtype == bool else np.float32)
        out[tuple(self.mask_indices.T)] = values
        return out

    def volume(self, kind: str, lesion: int | str) -> np.ndarray:
        """One map scattered into the 3-D mask grid (0 outside the mask)."""
        return self._scatter(self.map(kind, lesion))

    def to_nifti(self, kind: str, lesion: int | str) -> nib.Nifti1Image:
        """One map as a NIfTI image on the connectome grid."""
        return self.values_to_nifti(self.map(kind, lesion))

    def values_to_nifti(self, values: np.ndarray) -> nib.Nifti1Image:
        """(n_voxels,) values (a boolean map, an overlap count, ...) as a NIfTI image; booleans
        as uint8."""
        return nib.Nifti1Image(self._scatter(values), self.affine)

    def summary(self, alpha: float = 0.05, t_threshold: float | None = None) -> pd.DataFrame:
        """One row per lesion: size, r and t ranges, the peak |t| outside the lesion and where,
        significant voxels.

        Voxel counts: q < ``alpha`` (FDR), |t| > ``t_threshold`` if given, FWER p < ``alpha``
        if permutations were run.
        """
        alpha = check_alpha(alpha)
        peak = np.argmax(np.where(self.lesion_masks, 0.0, np.abs(self.t)), axis=1)
        peak_mm = mask_world_coordinates(self.mask_indices[peak], self.affine)
        table = pd.DataFrame(
            {
                "lesion": self.names,
                "n_lesion_voxels": self.lesion_voxels,
                "n_seed_voxels": self.seed_voxels,
                "lesion_volume_mm3": self.lesion_volumes_mm3,
                "n_subjects": self.n_subjects,
                "max_r": self.r.max(axis=1),
                "min_r": self.r.min(axis=1),
                "max_t": self.t.max(axis=1),
                "min_t": self.t.min(axis=1),
                "peak_x_mm": peak_mm[:, 0],
                "peak_y_mm": peak_mm[:, 1],
                "peak_z_mm": peak_mm[:, 2],
                f"n_voxels_q<{alpha:g}": np.sum(self.q < alpha, axis=1),
            }
        )
        if t_threshold is not None:
            above = np.abs(self.t) > _check_t_threshold(t_threshold)
            table[f"n_voxels_|t|>{t_threshold:g}"] = above.sum(axis=1)
        if self.p_fwe is not None:
            table[f"n_voxels_pfwe<{alpha:g}"] = np.sum(self.p_fwe < alpha, axis=1)
        return table

    def save(
        self,
        out_dir: str | os.PathLike,
        alpha: float = 0.05,
        t_threshold: float | None = None,
        table_format: str = "csv",
        tables: dict[str, pd.DataFrame] | None = None,
    ) -> list[Path]:
        """Write the maps, binary maps, group maps, tables and ``provenance.json``.

        Per lesion: ``<lesion>_desc-<kind>_map.nii.gz`` for every map (``pfwe`` only with
        permutations), ``<lesion>_desc-fdr_mask.nii.gz`` (q < ``alpha``),
        ``<lesion>_desc-tthreshold_mask.nii.gz`` (|t| > ``t_threshold``, if given) and
        ``<lesion>_desc-fwe_mask.nii.gz`` (FWER p < ``alpha``, with permutations). For the group:
        ``group_desc-lesionoverlap_map.nii.gz`` (lesions per voxel) and
        ``group_desc-fdroverlap_map.nii.gz`` (lesions with q < ``alpha`` per voxel). Then
        ``summary.csv`` (or ``.tsv``), each of ``tables`` as ``<key>.csv`` (e.g. the parcel
        tables of `neurotorch.connectome.Atlas`) and ``provenance.json``: inputs, parameters,
        package versions and the files written. Every file appears complete or not at all.
        """
        alpha = check_alpha(alpha)
        if table_format not in TABLE_SEPARATORS:
            raise ParameterError(f"table_format must be 'csv' or 'tsv', got {table_format!r}.")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        kinds = [k for k in MAP_KINDS if k != "pfwe" or self.p_fwe is not None]
        written = []

        def save_image(image: nib.Nifti1Image, name: str) -> None:
            with atomic_path(out_dir / name) as tmp:
                nib.save(image, tmp)
            written.append(out_dir / name)

        for name in self.names:
            for kind in kinds:
                save_image(self.to_nifti(kind, name), f"{name}_desc-{kind}_map.nii.gz")
            masks = {"fdr": self.significant(name, alpha=alpha)}
            if t_threshold is not None:
                masks["tthreshold"] = self.significant(name, t_threshold=t_threshold)
            if self.p_fwe is not None:
                masks["fwe"] = self.significant_fwe(name, alpha)
            for desc, mask in masks.items():
                save_image(self.values_to_nifti(mask), f"{name}_desc-{desc}_mask.nii.gz")
        group = {"lesionoverlap": self.lesion_overlap(), "fdroverlap": self.overlap(alpha=alpha)}
        for desc, counts in group.items():
            save_image(
                self.values_to_nifti(counts.astype(np.float32)), f"group_desc-{desc}_map.nii.gz"
            )
        sep = TABLE_SEPARATORS[table_format]
        for key, table in {"summary": self.summary(alpha, t_threshold), **(tables or {})}.items():
            path = out_dir / f"{key}.{table_format}"
            written.append(write_text(path, table.to_csv(sep=sep, index=False)))
        record = {
            **self.provenance,
            "outputs": {
                "alpha": alpha,
                "t_threshold": t_threshold,
                "files": [p.name for p in written],
            },
        }
        provenance = out_dir / "provenance.json"
        written.append(write_text(provenance, json.dumps(record, indent=2, default=str) + "\n"))
        return written
