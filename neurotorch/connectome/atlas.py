"""An atlas: a label image plus a table naming its labels, for parcel summaries of maps and lesions.

Any 3-D integer label image works, with a labels table in one of these forms:

* ``.tsv`` / ``.csv`` with a header holding an ``index`` column and a ``name`` column;
* ``.txt`` / ``.lut`` without header, one ``<index> <name>`` per line (FSL/Lacuna style);
* a mapping ``{index: name}``.

Label 0 is background. Every label of the image must be named in the table; table entries absent
from the image are reported with 0 voxels.

Parcel summaries of a map follow one of two conventions (`Atlas.aggregate`, ``convention``):

* ``"neurotorch"`` (default): a statistic over the parcel's voxels inside the connectome's brain
  mask, where the map is defined; ``percent`` is 100 x the share of those voxels where the map
  is non-zero (for a binary map: the share of the parcel it covers).
* ``"lacuna"``: as Lacuna's ``ParcelAggregation`` computes it (nilearn's ``NiftiLabelsMasker``
  on the saved map): the map is a volume with 0 outside the brain mask and a statistic runs
  over all the parcel's voxels of the grid, those zeros included; ``percent`` is 100 x the mean.

``sum`` is the same under both. For a map that is 0 nowhere inside the mask, a parcel that lies
entirely inside the mask gets the same mean and median under both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import nibabel as nib
import numpy as np
import pandas as pd

from neurotorch._options import as_names, check_option
from neurotorch.connectome.grid import canonical, mask_world_coordinates, sample_at_world
from neurotorch.connectome.lesions import LesionInput, binary_mask, named_lesion_inputs
from neurotorch.connectome.parcellation import REDUCTIONS, Parcellation, Reduction
from neurotorch.connectome.result import MapKind, NetworkMapResult
from neurotorch.errors import (
    DataNotDownloadedError,
    FormatError,
    ParameterError,
    ShapeMismatchError,
)
from neurotorch.io.nibabel_read import read_nifti_image

LABEL_COLUMNS = ("index", "name")
CONVENTIONS = ("neurotorch", "lacuna")
Convention = Literal["neurotorch", "lacuna"]


def _read_label_table(labels: str | os.PathLike | Mapping) -> pd.DataFrame:
    if isinstance(labels, Mapping):
        table = pd.DataFrame({"index": list(labels), "name": [str(v) for v in labels.values()]})
        source = "the labels mapping"
    else:
        path = Path(labels)
        source = str(path)
        if not path.is_file():
            raise DataNotDownloadedError(f"No atlas labels table at {path}.")
        try:
            if path.suffix in (".tsv", ".csv"):
                table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
            else:
                table = pd.read_csv(
                    path, sep=r"\s+", header=None, names=list(LABEL_COLUMNS), usecols=[0, 1]
                )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
            raise FormatError(f"{path} is not a readable labels table ({exc}).") from exc
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise FormatError(
            f"{source} lacks the column(s) {missing}; a labels table needs 'index' and 'name'."
        )
    index = pd.to_numeric(table["index"], errors="coerce")
    if index.isna().any() or not np.all(index == np.round(index)):
        raise FormatError(f"{source}: every 'index' must be an integer label.")
    table = pd.DataFrame({"index": index.astype(np.int64), "name": table["name"].astype(str)})
    if table["index"].duplicated().any():
        duplicated = sorted(set(table["index"][table["index"].duplicated()]))
        raise FormatError(f"{source} names the label(s) {duplicated} more than once.")
    return table[table["index"] != 0].sort_values("index").reset_index(drop=True)


@dataclass(frozen=True)
class Atlas:
    """A 3-D integer label image (RAS+) and the names of its labels."""

    image: nib.spatialimages.SpatialImage
    labels: pd.DataFrame  # columns index, name; background 0 excluded
    source: str

    @classmethod
    def from_files(
        cls,
        image: str | os.PathLike | nib.spatialimages.SpatialImage,
        labels: str | os.PathLike | Mapping,
    ) -> Atlas:
        """Read an atlas image and its labels table (see the module docstring for the forms).

        Raises
        ------
        FormatError
            The image is not 3-D integer labels, the table is malformed, or the image holds
            labels the table does not name.
        CorruptFileError
            The image file is truncated or damaged.
        """
        if isinstance(image, nib.spatialimages.SpatialImage):
            img, source = image, image.get_filename() or "<atlas image>"
        else:
            img, source = read_nifti_image(image)[1], os.fspath(image)
        img = canonical(img, source)
        data = np.asarray(img.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3 or not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise FormatError(f"{source} is not a 3-D image of integer labels.")
        if not np.any(data):
            raise FormatError(f"{source} labels no voxel (it is all 0, the background).")
        table = _read_label_table(labels)
        unnamed = sorted(set(np.unique(data).astype(np.int64)) - set(table["index"]) - {0})
        if unnamed:
            raise FormatError(
                f"{source} holds labels {unnamed[:10]} that the labels table does not name; "
                "use the table that belongs to this atlas."
            )
        return cls(nib.Nifti1Image(data.astype(np.int32), img.affine), table, source)

    @property
    def label_volume(self) -> np.ndarray:
        return np.asarray(self.image.dataobj)

    def parcellation(
        self, mask_indices: np.ndarray, affine: np.ndarray, space: str = "unknown"
    ) -> Parcellation:
        """Parcel label of each connectome voxel (nearest neighbour), as a `Parcellation`.

        Raises
        ------
        ShapeMismatchError
            No connectome voxel lies in a parcel (the atlas is in another space, or its affine
            is wrong).
        """
        world = mask_world_coordinates(mask_indices, affine)
        labels = sample_at_world(self.image, world, self.source).astype(np.int64)
        if not labels.any():
            raise ShapeMismatchError(
                f"The atlas {self.source} labels no voxel of the connectome's brain mask (space "
                f"{space}; brain from {np.round(world.min(axis=0), 1).tolist()} to "
                f"{np.round(world.max(axis=0), 1).tolist()} mm, atlas from "
                f"{_extent_mm(self.image)}); the atlas is in another space or its affine is "
                "wrong. Use an atlas registered to the connectome's template."
            )
        return Parcellation(labels)

    def _table(self, labels: np.ndarray, counts: np.ndarray, values: np.ndarray) -> pd.DataFrame:
        """Every named parcel with its voxel count and value (NaN where it has no voxel)."""
        found = pd.DataFrame({"index": labels, "n_voxels": counts, "value": values})
        table = self.labels.merge(found, on="index", how="left")
        table["n_voxels"] = table["n_voxels"].fillna(0).astype(np.int64)
        return table

    def aggregate(
        self,
        result: NetworkMapResult,
        kinds: str | tuple[str, ...] = ("r", "t"),
        how: Reduction = "mean",
        convention: Convention = "neurotorch",
    ) -> pd.DataFrame:
        """Parcel summaries of lesion network maps, one row per lesion, map and parcel.

        Parameters
        ----------
        result
            Output of `neurotorch.connectome.network_map`.
        kinds
            Maps to summarise (see `NetworkMapResult.map`): one name or several.
        how
            ``"mean"``, ``"sum"``, ``"median"`` or ``"percent"``.
        convention
            ``"neurotorch"``: over the parcel's voxels inside the brain mask, ``percent`` = 100 x
            the share of them where the map is non-zero; ``"lacuna"``: over all the parcel's
            voxels of the grid, 0 outside the brain mask, ``percent`` = 100 x the mean (Lacuna's
            numbers). See the module docstring.

        Returns
        -------
        pandas.DataFrame
            Columns ``lesion, map, aggregation, index, name, n_voxels, value``; ``n_voxels``
            counts the voxels the statistic ran over (NaN value for a parcel without any).

        Raises
        ------
        ShapeMismatchError
            The atlas labels no voxel of the connectome's brain mask.
        """
        chosen = cast("list[MapKind]", as_names("kinds", kinds))
        for kind in chosen:
            check_option("kinds", kind, result.kinds)
        check_option("how", how, REDUCTIONS)
        check_option("convention", convention, CONVENTIONS)
        parcels = self.parcellation(result.mask_indices, result.affine, result.space)
        lacuna = convention == "lacuna"
        if lacuna:  # every voxel of the grid, the map 0 outside the brain mask (the saved map)
            grid = np.argwhere(np.ones(result.mask_shape, dtype=bool))  # C order, as ravel()
            world = mask_world_coordinates(grid, result.affine)
            parcels = Parcellation(sample_at_world(self.image, world, self.source).astype(np.int64))
        rows = []
        for kind in chosen:
            values = np.stack(
                [
                    result.volume(kind, k).ravel() if lacuna else result.map(kind, k)
                    for k in range(len(result.names))
                ]
            )
            if lacuna and how == "percent":
                reduced = 100.0 * parcels.reduce(values, "mean")
            else:
                reduced = parcels.reduce(values, how)
            for k, lesion in enumerate(result.names):
                table = self._table(parcels.labels, parcels.voxel_counts, reduced[k])
                rows.append(table.assign(lesion=lesion, map=kind, aggregation=how))
        columns = ["lesion", "map", "aggregation", "index", "name", "n_voxels", "value"]
        return pd.concat(rows, ignore_index=True)[columns]

    def regional_damage(self, lesions: LesionInput, threshold: float | None = None) -> pd.DataFrame:
        """Lesioned share of every parcel, on the atlas grid, one row per lesion and parcel.

        Each lesion mask is sampled nearest-neighbour at the atlas voxel centres (exactly its
        voxels when both share a grid). Columns: ``n_voxels`` of the parcel,
        ``n_lesioned_voxels``, ``percent_damaged`` and ``lesioned_volume_mm3``.

        Parameters
        ----------
        lesions
            Lesion masks as `neurotorch.connectome.load_lesions` takes them.
        threshold
            Binarise the masks as value > ``threshold``; without it they must be 0/1.
        """
        labels = self.label_volume
        labelled = np.argwhere(labels != 0)
        voxel_labels = labels[tuple(labelled.T)]
        world = mask_world_coordinates(labelled, self.image.affine)
        parcels = Parcellation(voxel_labels)
        voxel_mm3 = abs(np.linalg.det(self.image.affine[:3, :3]))
        rows = []
        for name, item in named_lesion_inputs(lesions):
            if isinstance(item, np.ndarray):
                raise ParameterError(
                    f"Lesion {name!r} is an array; regional damage needs an image or a file "
                    "(its grid tells where it lies on the atlas)."
                )
            if isinstance(item, nib.spatialimages.SpatialImage):
                own, img = np.asarray(item.dataobj), item
            else:
                own, img = read_nifti_image(item)
            binary_mask(own, name, threshold)  # the whole mask must be binary
            mask = binary_mask(sample_at_world(img, world, name), name, threshold)
            lesioned = parcels.reduce(mask, "sum")
            table = self._table(parcels.labels, parcels.voxel_counts, lesioned)
            table = table.rename(columns={"value": "n_lesioned_voxels"})
            table["n_lesioned_voxels"] = table["n_lesioned_voxels"].fillna(0).astype(np.int64)
            with np.errstate(invalid="ignore", divide="ignore"):
                table["percent_damaged"] = 100.0 * table["n_lesioned_voxels"] / table["n_voxels"]
            table["lesioned_volume_mm3"] = table["n_lesioned_voxels"] * voxel_mm3
            rows.append(table.assign(lesion=name))
        table = pd.concat(rows, ignore_index=True)
        return table[["lesion", *table.columns.drop("lesion")]]


def _extent_mm(image: nib.spatialimages.SpatialImage) -> str:
    """ "<min> to <max> mm" of an image's labelled voxels (world coordinates)."""
    voxels = np.argwhere(np.asarray(image.dataobj) != 0)
    world = mask_world_coordinates(voxels, image.affine)
    low, high = np.round(world.min(axis=0), 1).tolist(), np.round(world.max(axis=0), 1).tolist()
    return f"{low} to {high} mm"
