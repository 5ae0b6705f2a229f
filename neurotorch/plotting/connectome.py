"""Lesion network maps drawn with nilearn: in mm, with left and right marked, over an anatomy.

::

    from neurotorch.connectome import network_map
    from neurotorch.plotting.connectome import plot_network_map

    result = network_map("lesions/", "batches/")
    plot_network_map(result, 0, "lesion-00_t.png", kind="t")  # orthogonal slices
    plot_network_map(result, 0, "lesion-00_glass.png", style="glass")  # glass brain

The underlay is nilearn's bundled MNI152 template (shipped with nilearn, no download) when the
connectome is in an MNI152 space (``space`` starting with ``MNI152``); otherwise the connectome's
own brain mask, so the brain outline is always shown. Slices are labelled by their world
coordinate (mm) and the display is neurological (left on the left, marked ``L`` and ``R``).

nilearn is imported on first use; without it the functions raise
`neurotorch.errors.MissingDependencyError` naming the extra to install
(``pip install "neurotorch[plot]"``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from neurotorch._options import check_option
from neurotorch.connectome.result import MAP_KINDS, MapKind, NetworkMapResult
from neurotorch.errors import MissingDependencyError, ShapeMismatchError
from neurotorch.plotting.figure import new_figure, save_png

PathLike = str | os.PathLike
STYLES = ("slices", "glass")
SIGNED_KINDS = ("meanz", "r", "t")
KIND_LABELS = {
    "meanz": "mean Fisher z",
    "r": "r",
    "t": "t",
    "p": "p",
    "q": "q (FDR)",
    "pfwe": "p (FWER)",
}
TEMPLATE_SPACE_PREFIX = "MNI152"  # spaces drawn over nilearn's MNI152 template


def require_nilearn() -> None:
    """Raise `MissingDependencyError` now if nilearn is missing (before long work that ends in
    figures)."""
    _nilearn()


def _nilearn() -> tuple[Any, Any]:
    """nilearn's ``plotting`` and ``datasets`` modules, or a named error saying how to get them."""
    try:
        from nilearn import datasets, plotting
    except ImportError as exc:
        raise MissingDependencyError(
            "Network-map figures are drawn with nilearn, which is not installed; install it with "
            "pip install 'neurotorch[plot]' (or pip install nilearn)."
        ) from exc
    return plotting, datasets


@functools.lru_cache(maxsize=1)
def mni152_template() -> nib.Nifti1Image:
    """nilearn's bundled MNI152 T1 template (2 mm), loaded once."""
    return _nilearn()[1].load_mni152_template(resolution=2)


def underlay(result: NetworkMapResult) -> tuple[nib.Nifti1Image, str]:
    """(anatomical background, what it is): the MNI152 template for an MNI152 space, else the
    connectome's brain mask."""
    if result.space.startswith(TEMPLATE_SPACE_PREFIX):
        return mni152_template(), "MNI152 template"
    mask = np.zeros(result.mask_shape, dtype=np.float32)
    mask[tuple(result.mask_indices.T)] = 1.0
    return nib.Nifti1Image(mask, result.affine), "brain mask"


def _lesion_image(result: NetworkMapResult, lesion_mask: np.ndarray) -> nib.Nifti1Image:
    """A lesion as a 3-D 0/1 image on the connectome grid (from a volume or per-voxel values)."""
    mask = np.asarray(lesion_mask)
    if mask.shape == (len(result.mask_indices),):
        return result.values_to_nifti(mask.astype(bool))
    if mask.shape == tuple(result.mask_shape):
        return nib.Nifti1Image(mask.astype(np.uint8), result.affine)
    raise ShapeMismatchError(
        f"lesion_mask has shape {mask.shape}; give the connectome grid {tuple(result.mask_shape)} "
        f"or one value per voxel ({len(result.mask_indices)},)."
    )


def _shown_values(result: NetworkMapResult, kind: MapKind, row: int) -> tuple[np.ndarray, float]:
    """(finite values to draw, colour limit): -log10 for p maps; the limit is the 99th percentile
    of |value| outside the lesion (the lesion correlates with itself and would dominate)."""
    values = np.asarray(result.map(kind, row), dtype=np.float64)
    if kind not in SIGNED_KINDS:
        values = -np.log10(np.clip(values, 1e-300, 1.0))
    outside = np.abs(values[~result.lesion_masks[row]])
    outside = outside[np.isfinite(outside)]
    limit = float(np.percentile(outside, 99)) if outside.size else 1.0
    limit = limit if limit > 0 else 1.0
    return np.clip(np.nan_to_num(values, nan=0.0), -limit, limit), limit


def peak_mm(result: NetworkMapResult, row: int, kind: MapKind = "t") -> tuple[float, float, float]:
    """World coordinates (mm) of the strongest voxel of a map outside the lesion."""
    values = np.abs(np.asarray(result.map(kind, row), dtype=np.float64))
    if kind not in SIGNED_KINDS:
        values = -np.log10(np.clip(values, 1e-300, 1.0))
    values = np.where(result.lesion_masks[row] | ~np.isfinite(values), -1.0, values)
    voxel = result.mask_indices[int(np.argmax(values))]
    x, y, z = (float(c) for c in nib.affines.apply_affine(result.affine, voxel))
    return x, y, z


def plot_network_map(
    result: NetworkMapResult,
    lesion: int | str,
    path: PathLike,
    kind: MapKind = "t",
    *,
    threshold: float | None = None,
    lesion_mask: np.ndarray | None = None,
    cut_mm: tuple[float, float, float] | None = None,
    style: Literal["slices", "glass"] = "slices",
) -> Path:
    """One lesion's network map, drawn with nilearn over an anatomical underlay.

    Parameters
    ----------
    result
        Output of `neurotorch.connectome.network_map`.
    lesion
        Row or name of the lesion.
    path
        Where the PNG goes (written atomically).
    kind
        ``"t"``, ``"meanz"``, ``"r"`` (diverging colours, symmetric range) or ``"p"``, ``"q"``,
        ``"pfwe"`` (shown as ``-log10``).
    threshold
        Hide voxels whose |value| (``-log10`` value for p maps) is below it; default: show all.
    lesion_mask
        The lesion to outline in black: a 3-D volume on the connectome grid or one value per
        voxel; default: the lesion as the result holds it.
    cut_mm
        World coordinates (x, y, z) in mm where the slices cross; default: the strongest voxel
        outside the lesion.
    style
        ``"slices"``: three orthogonal slices (nilearn's ``plot_stat_map``); ``"glass"``: a
        glass brain (``plot_glass_brain``, meaningful in MNI152 spaces).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    MissingDependencyError
        nilearn is not installed.
    """
    check_option("kind", kind, MAP_KINDS)
    check_option("style", style, STYLES)
    plotting, _ = _nilearn()
    row = result.row(lesion)
    name = result.names[row]
    values, limit = _shown_values(result, kind, row)
    stat_map = result.values_to_nifti(values.astype(np.float32))
    background, background_name = underlay(result)
    signed = kind in SIGNED_KINDS
    label = KIND_LABELS[kind] if signed else f"-log10 {KIND_LABELS[kind]}"
    title = f"{name}: {label}, {result.n_subjects} subjects, {result.space} ({background_name})"
    fig, (ax,) = new_figure(1, panel_size=(11.0, 4.2))
    common = dict(
        figure=fig,
        axes=ax,
        title=title,
        colorbar=True,
        threshold=threshold if threshold is not None else 1e-6,
        vmax=limit,
        cmap="RdBu_r" if signed else "hot",
        annotate=True,
    )
    if style == "glass":
        display = plotting.plot_glass_brain(
            stat_map, plot_abs=not signed, symmetric_cbar=signed, **common
        )
    else:
        display = plotting.plot_stat_map(
            stat_map,
            bg_img=background,
            cut_coords=cut_mm if cut_mm is not None else peak_mm(result, row, kind),
            display_mode="ortho",
            symmetric_cbar=signed,
            draw_cross=True,
            **common,
        )
    lesion_image = _lesion_image(
        result, result.lesion_masks[row] if lesion_mask is None else lesion_mask
    )
    if np.any(np.asarray(lesion_image.dataobj)):
        display.add_contours(lesion_image, levels=[0.5], colors="black", linewidths=1.2)
    return save_png(fig, path)


__all__ = ["mni152_template", "peak_mm", "plot_network_map", "require_nilearn", "underlay"]
