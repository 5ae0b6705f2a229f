"""Quality-control figures of a LAION-fMRI tree: noise ceilings, brain maps on the T1w, splits.

Brain maps (`plot_roi_overlay`, `plot_voxel_map`) are drawn with nilearn (the ``plot`` extra) in
the subject's scanner coordinates in mm, with L/R marked and the subject's T1w as underlay where
the dataset has one.

Every function reads what it needs through the `neurotorch.fmri` readers, saves one PNG and
returns its path::

    from neurotorch.fmri import load_subject
    from neurotorch.plotting import fmri as fmri_plots

    sub = load_subject("sub-01", data_dir=root)
    fmri_plots.plot_noise_ceilings(sub, "nc.png")
    fmri_plots.plot_roi_overlay(sub, ["face", "V1v"], "rois.png")
    fmri_plots.plot_voxel_map(sub, voxel_table["voxel"], test_r, "r.png")  # any per-voxel value
    fmri_plots.plot_split_projection(root, "tau", "shared", "tau.png")
    fmri_plots.plot_splits(splits, names, clip, "splits.png")  # splits from make_splits
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from neurotorch.errors import (
    DataNotDownloadedError,
    MissingDependencyError,
    ShapeMismatchError,
    SplitError,
)
from neurotorch.fmri import layout
from neurotorch.fmri.masks import nonzero_mask, read_brain_mask, read_volume
from neurotorch.fmri.rois import RoiQuery, available_rois, resolve_roi_query
from neurotorch.fmri.split_makers import nearest_train_distance, normalise_rows
from neurotorch.fmri.splits import load_all_splits, load_split, split_family
from neurotorch.fmri.stimuli import load_stimuli
from neurotorch.fmri.subject import Subject
from neurotorch.io.storage import DataRoot
from neurotorch.plotting.figure import new_figure, save_png

PathLike = str | os.PathLike
SPLIT_COLOURS = {"train": "0.65", "test": "tab:blue", "OOD": "tab:red"}


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def plot_noise_ceilings(
    subject: Subject,
    path: PathLike,
    roi: RoiQuery | None = None,
    mask_source: str = "anatomical",
    bins: int = 40,
) -> Path:
    """Histograms of a subject's noise ceilings (percent) over the selected voxels.

    Left: one curve per session (the per-session maps). Right: the subject-level maps that are
    present (``Noiseceiling4rep``, ``Noiseceiling12rep``, ``NoiseceilingAllrep``). Voxels with
    a NaN ceiling (outside the GLM mask) are left out; each legend entry gives the median.

    Parameters
    ----------
    subject
        A `neurotorch.fmri.Subject`.
    path
        Where the PNG goes.
    roi
        ROI query narrowing the voxels (name, category, ``"all"`` or a list); default the brain.
    mask_source
        Brain mask defining the voxels: ``"anatomical"`` or ``"rsquare"``.
    bins
        Histogram bins over 0–100 %.
    """
    sessions = subject.get_sessions()
    # several sessions: a map per session; one desc: one map
    per_session = cast(
        dict[str, np.ndarray],
        subject.get_noise_ceiling(session=sessions, roi=roi, mask_source=mask_source),
    )
    per_subject = {
        desc: cast(
            np.ndarray, subject.get_noise_ceiling(desc=desc, roi=roi, mask_source=mask_source)
        )
        for desc in layout.SUBJECT_NOISE_CEILINGS
        if subject.root.exists(layout.subject_noise_ceiling(subject.subject_id, desc))
    }
    edges = np.linspace(0.0, 100.0, bins + 1)
    fig, (left, right) = new_figure(2)
    for ax, maps, title in (
        (left, per_session, "per session"),
        (right, per_subject, "subject level"),
    ):
        for label, values in maps.items():
            values = _finite(values)
            ax.hist(
                values,
                bins=edges.tolist(),
                histtype="step",
                lw=1.5,
                label=f"{label} (median {np.median(values):.1f} %)" if values.size else label,
            )
        ax.set(xlabel="noise ceiling (%)", ylabel="voxels", title=f"{subject.subject_id}: {title}")
        if maps:
            ax.legend(fontsize="small")
    where = "brain" if roi is None else f"ROI {roi}"
    fig.suptitle(f"Noise ceilings, {where} ({mask_source} mask)")
    return save_png(fig, path)


def _nilearn_plotting():
    """nilearn's plotting module, or `MissingDependencyError` naming the extra that installs it."""
    try:
        from nilearn import plotting
    except ImportError as err:
        raise MissingDependencyError(
            "Brain maps are drawn with nilearn, which is not installed: pip install "
            "'neurotorch[plot]' (or pip install nilearn)."
        ) from err
    return plotting


def _underlay(subject: Subject) -> nib.Nifti1Image | None:
    """The subject's T1w on the functional (res-1pt8) grid, where the dataset has one."""
    try:
        return cast(nib.Nifti1Image, nib.load(subject.get_t1w(res="1pt8")))
    except DataNotDownloadedError:
        return None


def _draw_map(kind: str, image: nib.Nifti1Image, subject: Subject, *, options: dict) -> Any:
    """A figure with nilearn's ``plot_roi`` or ``plot_stat_map`` of ``image`` over the subject's
    T1w (none where the dataset has no T1w): scanner coordinates in mm, L/R marked."""
    plotting = _nilearn_plotting()
    underlay = _underlay(subject)
    if underlay is not None and underlay.shape[:3] != image.shape[:3]:
        raise ShapeMismatchError(
            f"The T1w of {subject.subject_id} has grid {underlay.shape[:3]} but the map has "
            f"{image.shape[:3]}; re-download the anatomical folder."
        )
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    draw = plotting.plot_roi if kind == "roi" else plotting.plot_stat_map
    draw(image, bg_img=underlay, figure=fig, axes=fig.add_subplot(), black_bg=False, **options)
    return fig


def plot_roi_overlay(
    subject: Subject,
    roi: RoiQuery,
    path: PathLike,
    *,
    display_mode: str = "ortho",
    cut_coords: Sequence[float] | float | None = None,
) -> Path:
    """ROIs drawn in colour over the subject's T1w, with nilearn's ``plot_roi``.

    The slices are placed and labelled in the subject's scanner (T1w) coordinates in mm, with
    the left and right of the brain marked; the T1w underlay is the res-1pt8 image on the ROIs'
    grid, left out where the dataset has no anatomical folder.

    Parameters
    ----------
    subject
        A `neurotorch.fmri.Subject` with ROIs.
    roi
        ROI query: a name, a category, ``"all"`` or a list of them; every ROI it names gets its
        own colour (the legend gives its voxel count).
    path
        Where the PNG goes.
    display_mode
        nilearn's slicing: ``"ortho"`` (sagittal, coronal, axial), ``"x"``, ``"y"``, ``"z"``, ...
    cut_coords
        Where to cut, in mm (nilearn's ``cut_coords``); default through the ROIs' centre.

    Raises
    ------
    ShapeMismatchError
        The T1w and the ROI volumes are on different grids.
    MissingDependencyError
        nilearn is not installed (the ``plot`` extra).
    """
    pairs = resolve_roi_query(roi, available_rois(subject.root, subject.subject_id))
    labels, affine, handles = None, None, []
    palette = colormaps["tab10" if len(pairs) <= 10 else "tab20"]
    for k, (category, name) in enumerate(pairs):
        relpath = layout.roi_volume(subject.subject_id, category, name)
        volume, roi_affine = read_volume(subject.root, relpath, f"ROI {name}")
        if labels is None:
            labels, affine = np.zeros(volume.shape, dtype=np.int16), roi_affine
        if volume.shape != labels.shape:
            raise ShapeMismatchError(
                f"ROI {name} of {subject.subject_id} has grid {volume.shape}, the first ROI "
                f"{labels.shape}; re-download the ROI folder."
            )
        inside = nonzero_mask(volume)
        labels[inside] = k + 1
        colour = palette(k % palette.N)
        handles.append(Patch(color=colour, label=f"{name} ({int(inside.sum())} vox)"))
    colours = ListedColormap([palette(k % palette.N) for k in range(len(pairs))])
    fig = _draw_map(
        "roi",
        nib.Nifti1Image(labels, affine),
        subject,
        options=dict(
            display_mode=display_mode,
            cut_coords=cut_coords,
            cmap=colours,
            vmin=1,
            vmax=max(len(pairs), 2),
            colorbar=False,
            draw_cross=False,
            title=f"{subject.subject_id}: ROIs {roi} (mm, scanner space)",
        ),
    )
    fig.legend(handles=handles, fontsize="x-small", loc="outside right center")
    return save_png(fig, path)


def plot_voxel_map(
    subject: Subject,
    voxels: np.ndarray,
    values: np.ndarray,
    path: PathLike,
    *,
    title: str = "",
    threshold: float | None = None,
    display_mode: str = "ortho",
) -> Path:
    """Per-voxel values (an encoder's test r, a noise ceiling, ...) over the subject's T1w, with
    nilearn's ``plot_stat_map``: scanner coordinates in mm, L/R marked.

    Parameters
    ----------
    subject
        A `neurotorch.fmri.Subject`.
    voxels
        Flat indices (C order) of the voxels on the functional grid, as the ``voxel`` column of a
        voxel table or the ``voxel`` axis of an encoder's ``predictions.npz``.
    values
        One value per voxel.
    path
        Where the PNG goes.
    title
        Title of the figure.
    threshold
        Values with a smaller absolute value are not drawn (nilearn's ``threshold``); by default
        only the voxels outside ``voxels`` (and exact zeros) are left out.
    display_mode
        nilearn's slicing: ``"ortho"``, ``"x"``, ``"y"``, ``"z"``, ...

    Raises
    ------
    ShapeMismatchError
        ``voxels`` and ``values`` differ in length, or a voxel lies outside the grid.
    MissingDependencyError
        nilearn is not installed (the ``plot`` extra).
    """
    voxels, values = np.asarray(voxels), np.asarray(values, dtype=np.float32)
    mask, affine = read_brain_mask(subject.root, subject.subject_id)
    if voxels.shape != values.shape or voxels.ndim != 1:
        raise ShapeMismatchError(
            f"voxels {voxels.shape} and values {values.shape} must be two 1-D arrays of one length."
        )
    if voxels.size and not 0 <= voxels.min() <= voxels.max() < mask.size:
        raise ShapeMismatchError(
            f"voxel indices must lie in 0..{mask.size - 1} (the grid {mask.shape} of "
            f"{subject.subject_id}); got {voxels.min()}..{voxels.max()}."
        )
    volume = np.zeros(mask.size, dtype=np.float32)
    volume[voxels] = values
    fig = _draw_map(
        "stat",
        nib.Nifti1Image(volume.reshape(mask.shape), affine),
        subject,
        options=dict(
            display_mode=display_mode,
            threshold=np.finfo(np.float32).tiny if threshold is None else threshold,
            draw_cross=False,
            title=title or None,
        ),
    )
    return save_png(fig, path)


def _pca_2d(x: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """Coordinates of every row of ``x`` on the first two principal axes of ``x[fit_rows]``."""
    mean = x[fit_rows].mean(0)
    axes = np.linalg.svd(x[fit_rows] - mean, full_matrices=False)[2][:2]
    return (x - mean) @ axes.T


def plot_split_projection(
    data_dir: PathLike | DataRoot,
    split: str,
    pool: str,
    path: PathLike,
    model: str = "CLIP",
    variant_id: int = 0,
) -> Path:
    """A split in embedding space: train, test and OOD images on the pool's first two PCs.

    Left: the images of the pool projected on the first two principal components of their
    (unit-length) embeddings, coloured train / test, with the pool's OOD images (the test set of
    its ``ood`` split, if there is one) in a third colour. Right: cosine distance of each test
    and each OOD image to its nearest training image.

    Parameters
    ----------
    data_dir
        Dataset root with ``splits/`` and the stimulus embeddings.
    split, pool
        The split (``"random_0"``, ``"cluster_k5_2"``, ``"tau"``, ``"ood"``, ...) of a pool
        (``"shared"`` or a subject).
    path
        Where the PNG goes.
    model
        Embedding model: ``"CLIP"``, ``"DINOv2"``, ``"PEcore"`` or ``"SigLIP2"``.
    variant_id
        Variant of the split.
    """
    chosen = load_split(split, pool, data_dir=data_dir).variant(variant_id)
    groups = {"train": list(chosen.train_ids), "test": list(chosen.test_ids), "OOD": []}
    if split != "ood":
        ood = load_all_splits(pool, data_dir=data_dir).get("ood")
        if ood is not None:
            in_split = set(chosen.all_ids())
            groups["OOD"] = [name for name in ood.variant(0).test_ids if name not in in_split]
    else:
        groups["OOD"], groups["test"] = groups["test"], []
    names = [name for group in groups.values() for name in group]
    labels = np.repeat(list(groups), [len(group) for group in groups.values()])
    embeddings = load_stimuli(data_dir).embeddings.get(model, names, dtype=np.float64)
    x = normalise_rows(embeddings)
    coords = _pca_2d(x, labels != "OOD")

    fig, (left, right) = new_figure(2)
    for group, colour in SPLIT_COLOURS.items():
        rows = labels == group
        if rows.any():
            left.scatter(
                coords[rows, 0],
                coords[rows, 1],
                s=8 if group == "train" else 14,
                c=colour,
                label=f"{group} ({int(rows.sum())})",
                alpha=0.8,
                linewidths=0,
            )
    left.set(xlabel="PC 1", ylabel="PC 2", title=f"{pool} / {split}: {model} embeddings")
    left.legend(fontsize="small")
    train = labels == "train"
    distances = {
        group: nearest_train_distance(x[train | rows], rows[train | rows])
        for group in ("test", "OOD")
        if (rows := labels == group).any()
    }
    if distances:
        edges = np.histogram_bin_edges(np.concatenate(list(distances.values())), bins=30)
    for group, values in distances.items():
        right.hist(
            values,
            bins=edges.tolist(),
            histtype="step",
            lw=1.5,
            color=SPLIT_COLOURS[group],
            label=f"{group} (median {np.median(values):.3f})",
        )
    right.set(xlabel="cosine distance to nearest train image", ylabel="images")
    right.legend(fontsize="small")
    return save_png(fig, path)


def plot_splits(
    splits: Mapping[str, Mapping[str, Any]],
    image_names: Sequence[str],
    embeddings: np.ndarray,
    path: PathLike,
) -> Path:
    """Compare the split families of one pool (e.g. what `neurotorch.fmri.split_makers.make_splits` made).

    Left: histograms of the test images' cosine distance to their nearest training image, per
    family (variant 0 of every split). Right: the pool's first two principal components with the
    tau split's test images highlighted.

    Parameters
    ----------
    splits
        ``{name: split}`` in the split-file schema.
    image_names
        The pool's images, in the row order of ``embeddings``.
    embeddings
        ``(n_images, dim)`` embeddings of ``image_names``.
    path
        Where the PNG goes.
    """
    names = [str(name) for name in image_names]
    x = normalise_rows(np.asarray(embeddings))
    by_family: dict[str, list[np.ndarray]] = {}
    tests = {}
    for name, split in splits.items():
        tests[name] = np.isin(names, split["variants"][0]["test_ids"])
        if split_family(name) in ("random", "cluster", "tau"):
            by_family.setdefault(split_family(name), []).append(
                nearest_train_distance(x, tests[name])
            )
    fig, (left, right) = new_figure(2, panel_size=(5.5, 4.2))
    pooled = {family: np.concatenate(values) for family, values in by_family.items()}
    if pooled:
        bins = np.histogram_bin_edges(np.concatenate(list(pooled.values())), bins=40)
    for family, values in pooled.items():
        left.hist(values, bins=bins.tolist(), histtype="step", density=True, lw=1.5, label=family)
    left.set(xlabel="cosine distance to nearest train image", ylabel="density of test images")
    if pooled:
        left.legend(fontsize="small")
    tau_test = tests.get("tau", np.zeros(len(names), dtype=bool))
    coords = _pca_2d(x, np.ones(len(names), dtype=bool))
    train = coords[~tau_test]
    right.scatter(
        train[:, 0], train[:, 1], s=6, c=SPLIT_COLOURS["train"], label="train", linewidths=0
    )
    test = coords[tau_test]
    right.scatter(test[:, 0], test[:, 1], s=8, c="tab:red", label="tau test", linewidths=0)
    right.set(xlabel="PC 1", ylabel="PC 2", title="tau split")
    right.legend(fontsize="small")
    return save_png(fig, path)


def plot_split_families(
    data_dir: PathLike | DataRoot, pool: str, path: PathLike, model: str = "CLIP"
) -> Path:
    """Compare every split family of a pool as stored in the dataset (`plot_splits`).

    The pool's images are those of its ``random_0`` split (train + test); their ``model``
    embeddings are read from the stimuli.
    """
    splits = {
        name: split.to_dict() for name, split in load_all_splits(pool, data_dir=data_dir).items()
    }
    reference = next((s for name, s in splits.items() if split_family(name) == "random"), None)
    if reference is None:
        raise SplitError(
            f"Pool {pool!r} has no random split to take its images from: {list(splits)}."
        )
    names = [*reference["variants"][0]["train_ids"], *reference["variants"][0]["test_ids"]]
    embeddings = load_stimuli(data_dir).embeddings.get(model, names, dtype=np.float64)
    return plot_splits(splits, names, embeddings, path=path)


__all__ = [
    "plot_noise_ceilings",
    "plot_roi_overlay",
    "plot_split_families",
    "plot_split_projection",
    "plot_splits",
    "plot_voxel_map",
]
