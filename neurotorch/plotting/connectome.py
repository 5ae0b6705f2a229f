"""Lesion network maps on slices of the connectome's brain mask.

::

    from neurotorch.connectome import network_map
    from neurotorch.plotting import connectome as connectome_plots

    result = network_map("lesions/", "batches/")
    connectome_plots.plot_network_map(result, 0, "lesion-00_t.png", kind="t")
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neurotorch.connectome.result import NetworkMapResult
from neurotorch.errors import ShapeMismatchError
from neurotorch.plotting.figure import new_figure, save_png

PathLike = str | os.PathLike
VIEWS = (("sagittal", 0), ("coronal", 1), ("axial", 2))
KIND_LABELS = {
    "meanz": "mean Fisher z",
    "r": "r",
    "t": "t",
    "p": "p",
    "q": "q (FDR)",
    "pfwe": "p (FWER)",
}


def _lesion_volume(result: NetworkMapResult, lesion_mask: np.ndarray) -> np.ndarray:
    """A lesion as a 3-D boolean volume on the connectome grid (from a volume or per-voxel values)."""
    mask = np.asarray(lesion_mask)
    if mask.shape == tuple(result.mask_shape):
        return mask.astype(bool)
    if mask.shape == (len(result.mask_indices),):
        volume = np.zeros(result.mask_shape, dtype=bool)
        volume[tuple(result.mask_indices.T)] = mask.astype(bool)
        return volume
    raise ShapeMismatchError(
        f"lesion_mask has shape {mask.shape}; give the connectome grid {tuple(result.mask_shape)} "
        f"or one value per voxel ({len(result.mask_indices)},)."
    )


def plot_network_map(
    result: NetworkMapResult,
    lesion: int | str,
    path: PathLike,
    kind: str = "t",
    threshold: float | None = None,
    lesion_mask: np.ndarray | None = None,
    cut: tuple[int, int, int] | None = None,
) -> Path:
    """One lesion's network map on three orthogonal slices of the brain mask.

    Parameters
    ----------
    result
        Output of `neurotorch.connectome.network_map`.
    lesion
        Row or name of the lesion.
    path
        Where the PNG goes.
    kind
        ``"meanz"``, ``"t"`` (diverging colours, symmetric range) or ``"p"``/``"q"`` (shown as
        ``-log10``).
    threshold
        Hide voxels whose |value| (``-log10`` value for p/q) is below it; default show all.
    lesion_mask
        Optional lesion on the connectome grid — a 3-D boolean volume or one value per voxel
        (``(n_voxels,)``, as in `neurotorch.connectome.LesionSet.masks`) — outlined in black.
    cut
        Voxel (i, j, k) where the slices cross; default the voxel of the largest |value|
        (outside the lesion when ``lesion_mask`` is given: the lesion correlates with itself).
    """
    values = np.asarray(result.map(kind, lesion), dtype=np.float64)
    signed = kind in ("meanz", "r", "t")
    if not signed:
        values = -np.log10(np.clip(values, 1e-300, 1.0))
    values = np.where(np.isfinite(values), values, 0.0)
    voxels = tuple(result.mask_indices.T)
    volume = np.full(result.mask_shape, np.nan)
    volume[voxels] = values
    brain = np.zeros(result.mask_shape, dtype=bool)
    brain[voxels] = True
    lesion_volume = None if lesion_mask is None else _lesion_volume(result, lesion_mask)
    if cut is None:  # the strongest voxel, outside the lesion when it is known
        remote = values if lesion_volume is None else np.where(lesion_volume[voxels], 0.0, values)
        cut = tuple(int(i) for i in result.mask_indices[int(np.argmax(np.abs(remote)))])
    shown = (
        np.where(np.abs(volume) >= threshold, volume, np.nan) if threshold is not None else volume
    )
    limit = (
        float(np.percentile(np.abs(values), 99)) or 1.0
    )  # the lesion itself would dominate the max
    colour_range = (
        dict(vmin=-limit, vmax=limit, cmap="RdBu_r")
        if signed
        else dict(vmin=0, vmax=limit, cmap="hot")
    )

    fig, axes = new_figure(3, panel_size=(3.6, 3.6))
    for ax, (view, axis) in zip(axes, VIEWS, strict=True):
        ax.imshow(
            np.take(brain, cut[axis], axis=axis).T, cmap="gray", vmin=0, vmax=2.5, origin="lower"
        )
        image = ax.imshow(np.take(shown, cut[axis], axis=axis).T, origin="lower", interpolation="nearest",
                          **colour_range)  # fmt: skip
        if lesion_volume is not None:
            outline = np.take(lesion_volume.astype(float), cut[axis], axis=axis).T
            if outline.any():
                ax.contour(outline, levels=[0.5], colors="black", linewidths=1.2)
        ax.set(title=f"{view} {cut[axis]}", xticks=[], yticks=[])
    label = KIND_LABELS[kind] if signed else f"-log10 {KIND_LABELS[kind]}"
    fig.colorbar(image, ax=axes, shrink=0.8, label=label)
    name = result.names[lesion] if isinstance(lesion, int | np.integer) else lesion
    fig.suptitle(f"{name}: {label} map, {result.n_subjects} subjects")
    return save_png(fig, path)


__all__ = ["plot_network_map"]
