"""The maps of a lesion network mapping run: access, thresholded maps, overlaps, tables and files."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import pandas as pd

from neurotorch._options import check_number, check_option
from neurotorch.connectome import layout
from neurotorch.connectome._summary_table import SummaryTable
from neurotorch.connectome.grid import mask_world_coordinates
from neurotorch.connectome.outputs import OutputFolder, output_folder, write_image
from neurotorch.errors import ParameterError

MapKind = Literal["meanz", "r", "t", "p", "q", "pfwe"]
MAP_KINDS: tuple[MapKind, ...] = ("meanz", "r", "t", "p", "q", "pfwe")
P_VALUE_KINDS = ("p", "q", "pfwe")  # written 1 outside the brain mask: never significant there
# names that become file names: no folder separators, no leading dot
_FILE_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_alpha(alpha: float) -> float:
    """``alpha`` if it is a level in (0, 1); raises `ParameterError` otherwise."""
    return check_number("alpha", alpha, minimum=0, maximum=1, open_minimum=True, open_maximum=True)


def _check_t_threshold(threshold: float) -> float:
    return check_number("t_threshold", threshold, minimum=0, open_minimum=True)


def _check_file_name_parts(what: str, names: list[str]) -> None:
    odd = [name for name in names if not _FILE_NAME_PART.match(str(name))]
    if odd:
        raise ParameterError(
            f"{what} {odd[:3]} cannot name files: use letters, digits and . _ + - only, "
            "starting with a letter or digit."
        )


@dataclass(repr=False)
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

    def __repr__(self) -> str:
        shown = ", ".join(self.names[:3]) + (", ..." if len(self.names) > 3 else "")
        permutations = (
            f", {len(self.max_t_null)} sign-flip permutations"
            if self.max_t_null is not None
            else ""
        )
        return (
            f"NetworkMapResult({len(self.names)} lesions [{shown}], {self.n_subjects} subjects, "
            f"{len(self.mask_indices)} voxels of a {tuple(self.mask_shape)} grid, "
            f"space={self.space!r}, maps {'/'.join(self.kinds)}{permutations})"
        )

    @property
    def kinds(self) -> list[MapKind]:
        """The maps this result holds (``"pfwe"`` only with permutations)."""
        return [kind for kind in MAP_KINDS if kind != "pfwe" or self.p_fwe is not None]

    @property
    def r(self) -> np.ndarray:
        """tanh of the mean Fisher z: the correlation map, as Lacuna's ``correlation_map``."""
        return np.tanh(self.mean_z)

    def row(self, lesion: int | str) -> int:
        """The row of a lesion given by row number or name."""
        if isinstance(lesion, str):
            return self.names.index(check_option("lesion", lesion, self.names))
        if not -len(self.names) <= int(lesion) < len(self.names):
            raise ParameterError(f"Lesion {lesion} out of range for {len(self.names)} lesions.")
        return int(lesion)

    def map(self, kind: MapKind, lesion: int | str) -> np.ndarray:
        """One (n_voxels,) map: ``kind`` in ``"meanz", "r", "t", "p", "q", "pfwe"``."""
        check_option("kind", kind, MAP_KINDS)
        if kind == "pfwe" and self.p_fwe is None:
            raise ParameterError("No FWER map: run network_map with n_permutations > 0.")
        maps = {"meanz": self.mean_z, "t": self.t, "p": self.p, "q": self.q, "pfwe": self.p_fwe}
        row = self.row(lesion)
        if kind == "r":
            return self.r[row]
        values = maps[kind]
        assert values is not None, "the pfwe map was checked above"
        return values[row]

    def significant(
        self, lesion: int | str, alpha: float | None = None, t_threshold: float | None = None
    ) -> np.ndarray:
        """Boolean (n_voxels,) map: q < ``alpha`` (FDR), or |t| > ``t_threshold`` (as Lacuna)."""
        if (alpha is None) == (t_threshold is None):
            raise ParameterError("Give exactly one of alpha (FDR) and t_threshold.")
        if alpha is not None:
            return self.map("q", lesion) < check_alpha(alpha)
        assert t_threshold is not None, "exactly one of alpha and t_threshold"
        return np.abs(self.map("t", lesion)) > _check_t_threshold(t_threshold)

    def significant_fwe(self, lesion: int | str, alpha: float) -> np.ndarray:
        """Boolean (n_voxels,) map: sign-flip max-|t| FWER p < ``alpha``."""
        return self.map("pfwe", lesion) < check_alpha(alpha)

    def overlap(self, alpha: float | None = None, t_threshold: float | None = None) -> np.ndarray:
        """(n_voxels,) number of lesions whose map is significant at each voxel (see `significant`):
        the group network map."""
        return np.sum(
            [
                self.significant(k, alpha=alpha, t_threshold=t_threshold)
                for k in range(len(self.names))
            ],
            axis=0,
        )

    def lesion_overlap(self) -> np.ndarray:
        """(n_voxels,) number of lesions covering each voxel."""
        return self.lesion_masks.sum(axis=0)

    def _scatter(self, values: np.ndarray, outside: float = 0.0) -> np.ndarray:
        values = np.asarray(values)
        dtype = np.uint8 if values.dtype == bool else np.float32
        out = np.full(self.mask_shape, outside, dtype=dtype)
        out[tuple(self.mask_indices.T)] = values
        return out

    def volume(self, kind: MapKind, lesion: int | str) -> np.ndarray:
        """One map scattered into the 3-D mask grid (0 outside the mask)."""
        return self._scatter(self.map(kind, lesion))

    def to_nifti(
        self, kind: MapKind, lesion: int | str, path: str | os.PathLike | None = None
    ) -> nib.Nifti1Image:
        """One map as a NIfTI image on the connectome grid: outside the brain mask 0, and 1 for
        the p values (``p``, ``q``, ``pfwe``), so that a threshold such as q < 0.05 selects no
        voxel there.

        Parameters
        ----------
        kind, lesion
            The map (see `map`) and the lesion (row or name).
        path
            Also write the image there (``.nii`` or ``.nii.gz``), atomically: the file is
            complete or absent; a full disk raises `neurotorch.errors.OutputWriteError` naming it.
        """
        outside = 1.0 if kind in P_VALUE_KINDS else 0.0
        image = nib.Nifti1Image(self._scatter(self.map(kind, lesion), outside), self.affine)
        if path is not None:
            write_image(image, path)
        return image

    def values_to_nifti(self, values: np.ndarray) -> nib.Nifti1Image:
        """(n_voxels,) values (a boolean map, an overlap count, ...) as a NIfTI image; booleans
        as uint8."""
        return nib.Nifti1Image(self._scatter(values), self.affine)

    def summary(self, alpha: float = 0.05, t_threshold: float | None = None) -> SummaryTable:
        """One row per lesion: size, the peak t outside the lesion and where it lies (mm), the t
        and r ranges, and the number of significant voxels.

        The peak is the voxel of largest |t| outside the lesion (the lesion correlates with
        itself). Voxel counts: q < ``alpha`` (FDR), |t| > ``t_threshold`` if given, FWER p <
        ``alpha`` if permutations were run. Printing the table shows every column.
        """
        alpha = check_alpha(alpha)
        outside = np.where(self.lesion_masks, -1.0, np.abs(self.t.astype(np.float64)))
        peak = np.argmax(outside, axis=1)
        peak_mm = mask_world_coordinates(self.mask_indices[peak], self.affine)
        table = SummaryTable(
            {
                "lesion": self.names,
                "n_subjects": self.n_subjects,
                "n_lesion_voxels": self.lesion_voxels,
                "n_seed_voxels": self.seed_voxels,
                "lesion_volume_mm3": self.lesion_volumes_mm3,
                "peak_t": self.t[np.arange(len(self.names)), peak],
                "peak_x_mm": peak_mm[:, 0],
                "peak_y_mm": peak_mm[:, 1],
                "peak_z_mm": peak_mm[:, 2],
                f"n_voxels_q<{alpha:g}": np.sum(self.q < alpha, axis=1),
                "max_t": self.t.max(axis=1),
                "min_t": self.t.min(axis=1),
                "max_r": self.r.max(axis=1),
                "min_r": self.r.min(axis=1),
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
        *,
        alpha: float = 0.05,
        t_threshold: float | None = None,
        table_format: Literal["csv", "tsv"] = "csv",
        tables: Mapping[str, pd.DataFrame] | None = None,
        figure: Callable[[NetworkMapResult, int, Path], object] | None = None,
        overwrite: bool = False,
    ) -> list[Path]:
        """Write the maps, binary maps, group maps, tables and ``provenance.json`` to a folder.

        Per lesion: ``<lesion>_desc-<kind>_map.nii.gz`` for every map (``pfwe`` only with
        permutations), ``<lesion>_desc-fdr_mask.nii.gz`` (q < ``alpha``),
        ``<lesion>_desc-tthreshold_mask.nii.gz`` (|t| > ``t_threshold``, if given) and
        ``<lesion>_desc-fwe_mask.nii.gz`` (FWER p < ``alpha``, with permutations). For the group:
        ``group_desc-lesionoverlap_map.nii.gz`` (lesions per voxel) and
        ``group_desc-fdroverlap_map.nii.gz`` (lesions with q < ``alpha`` per voxel). Then
        ``summary.csv`` (or ``.tsv``), each of ``tables`` as ``<key>.csv``, one
        ``<lesion>_figure.png`` per lesion if ``figure`` is given, and ``provenance.json``:
        inputs, parameters, package versions and the files written.

        The folder is written whole, next to ``out_dir``, and appears at ``out_dir`` complete or
        not at all. ``out_dir`` must be absent, empty, or a previous output of neurotorch (which
        only ``overwrite=True`` replaces); a folder holding anything else is refused.

        Parameters
        ----------
        out_dir
            The output folder.
        alpha
            Level of the FDR (and FWER) masks and counts, in (0, 1).
        t_threshold
            Also write |t| > ``t_threshold`` masks (Lacuna's thresholded map).
        table_format
            ``"csv"`` or ``"tsv"``.
        tables
            Extra tables by name, e.g. the parcel tables of `neurotorch.connectome.Atlas`.
        figure
            Draws one lesion's figure: ``figure(result, lesion_row, path)``, e.g.
            `neurotorch.plotting.connectome.plot_network_map`.
        overwrite
            Replace a previous neurotorch output at ``out_dir``.

        Returns
        -------
        list of Path
            The files written, at their final place.

        Raises
        ------
        DatasetExistsError
            ``out_dir`` holds files neurotorch did not write, or a previous output without
            ``overwrite``.
        OutputWriteError
            A file could not be written (e.g. the disk is full); ``out_dir`` is left as it was.
        """
        alpha = check_alpha(alpha)
        if t_threshold is not None:
            _check_t_threshold(t_threshold)
        check_option("table_format", table_format, layout.TABLE_FORMATS)
        tables = dict(tables or {})
        _check_file_name_parts("Lesion names", self.names)
        _check_file_name_parts("Table names", list(tables))
        with output_folder(out_dir, overwrite=overwrite, what="lesion network maps") as folder:
            self._write_images(folder, alpha=alpha, t_threshold=t_threshold)
            sep = layout.TABLE_FORMATS[table_format]
            for key, table in {
                layout.SUMMARY_TABLE: self.summary(alpha, t_threshold),
                **tables,
            }.items():
                with folder.file(layout.table_file_name(key, table_format)) as tmp:
                    tmp.write_text(table.to_csv(sep=sep, index=False))
            if figure is not None:
                for k, name in enumerate(self.names):
                    figure(self, k, folder.target(layout.figure_file_name(name)))
            record = {
                **self.provenance,
                "outputs": {
                    "alpha": alpha,
                    "t_threshold": t_threshold,
                    "files": list(folder.files),
                },
            }
            with folder.file(layout.PROVENANCE_FILE) as tmp:
                tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
        return folder.final_paths()

    def _write_images(
        self, folder: OutputFolder, *, alpha: float, t_threshold: float | None
    ) -> None:
        """Every per-lesion map and mask and the group maps, into ``folder``."""

        def save(image: nib.Nifti1Image, name: str) -> None:
            with folder.file(name) as tmp:
                nib.save(image, tmp)

        for name in self.names:
            for kind in self.kinds:
                save(self.to_nifti(kind, name), layout.map_file_name(name, kind))
            masks = {"fdr": self.significant(name, alpha=alpha)}
            if t_threshold is not None:
                masks["tthreshold"] = self.significant(name, t_threshold=t_threshold)
            if self.p_fwe is not None:
                masks["fwe"] = self.significant_fwe(name, alpha)
            for desc, mask in masks.items():
                save(self.values_to_nifti(mask), layout.mask_file_name(name, desc))
        group = {"lesionoverlap": self.lesion_overlap(), "fdroverlap": self.overlap(alpha=alpha)}
        for desc, counts in group.items():
            save(self.values_to_nifti(counts.astype(np.float32)), layout.group_map_file_name(desc))
