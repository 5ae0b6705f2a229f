"""Quality-control figures of a LAION-fMRI tree: noise ceilings, ROIs on the T1w, splits.

Every function reads what it needs through the `neurotorch.fmri` readers, saves one PNG and
returns its path::

    from neurotorch.fmri import load_subject
    from neurotorch.plotting import fmri as fmri_plots

    sub = load_subject("sub-01", data_dir=root)
    fmri_plots.plot_noise_ceilings(sub, "nc.png")
    fmri_plots.plot_roi_overlay(sub, ["face", "V1v"], "rois.png")
    fmri_plots.plot_split_projection(root, "tau", "shared", "tau.png")
    fmri_plots.plot_splits(splits, names, clip, "splits.png")  # splits from make_splits
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from matplotlib import colormaps
from matplotlib.patches import Patch

from neurotorch.errors import ShapeMismatchError, SplitError
from neurotorch.fmri import layout
from neurotorch.fmri.rois import RoiQuery, available_rois, read_roi_volume, resolve_roi_query
from neurotorch.fmri.split_makers import nearest_train_distance, normalise_rows
from neurotorch.fmri.splits import load_all_splits, load_split, split_family
from neurotorch.fmri.stimuli import load_stimuli
from neurotorch.fmri.subject import Subject
from neurotorch.io.storage import DataRoot
from neurotorch.plotting.figure import new_figure, save_png

PathLike = str | os.PathLike
AXIS_NAMES = ("sagittal", "coronal", "axial")
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
    per_session = subject.get_noise_ceiling(session=sessions, roi=roi, mask_source=mask_source)
    per_subject = {
        desc: subject.get_noise_ceiling(desc=desc, roi=roi, mask_source=mask_source)
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
            ax.hist(values, bins=edges, histtype="step", lw=1.5,
                    label=f"{label} (median {np.median(values):.1f} %)" if values.size else label)  # fmt: skip
        ax.set(xlabel="noise ceiling (%)", ylabel="voxels", title=f"{subject.subject_id}: {title}")
        if maps:
            ax.legend(fontsize="small")
    where = "brain" if roi is None else f"ROI {roi}"
    fig.suptitle(f"Noise ceilings, {where} ({mask_source} mask)")
    return save_png(fig, path)


def _slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A 2-D slice, transposed so that the first remaining axis runs left to right."""
    return np.take(volume, index, axis=axis).T


def plot_roi_overlay(
    subject: Subject,
    roi: RoiQuery,
    path: PathLike,
    axis: int = 2,
    slice_index: int | None = None,
) -> Path:
    """ROIs drawn in colour over one slice of the subject's T1w (functional 1.8 mm grid).

    Parameters
    ----------
    subject
        A `neurotorch.fmri.Subject` with anatomy and ROIs.
    roi
        ROI query: a name, a category, ``"all"`` or a list of them; every ROI it names gets its
        own colour.
    path
        Where the PNG goes.
    axis
        Slicing axis of the voxel grid: 0 sagittal, 1 coronal, 2 axial.
    slice_index
        Slice along ``axis``; default the slice holding the most ROI voxels.

    Raises
    ------
    ShapeMismatchError
        The T1w and the ROI volumes are on different grids.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}.")
    pairs = resolve_roi_query(roi, available_rois(subject.root, subject.subject_id))
    t1w = np.asarray(nib.load(subject.get_t1w(res="1pt8")).dataobj, dtype=np.float32)
    volumes = {
        name: read_roi_volume(subject.root, subject.subject_id, cat, name) for cat, name in pairs
    }
    for name, volume in volumes.items():
        if volume.shape != t1w.shape:
            raise ShapeMismatchError(
                f"ROI {name} of {subject.subject_id} has grid {volume.shape} but the res-1pt8 T1w "
                f"has {t1w.shape}; re-download the ROI or anatomical folder."
            )
    union = np.any(np.stack(list(volumes.values())), axis=0)
    if slice_index is None:
        other_axes = tuple(a for a in range(3) if a != axis)
        slice_index = int(np.argmax(union.sum(axis=other_axes)))
    if not 0 <= slice_index < t1w.shape[axis]:
        raise ValueError(f"slice_index {slice_index} is outside 0..{t1w.shape[axis] - 1}.")

    fig, (ax,) = new_figure(panel_size=(5.5, 5.0))
    ax.imshow(_slice(t1w, axis, slice_index), cmap="gray", origin="lower", interpolation="nearest")
    palette = colormaps["tab20"]
    handles = []
    for k, (name, volume) in enumerate(volumes.items()):
        colour = palette(k % palette.N)
        shown = _slice(volume, axis, slice_index)
        rgba = np.zeros((*shown.shape, 4))
        rgba[shown] = (*colour[:3], 0.75)
        ax.imshow(rgba, origin="lower", interpolation="nearest")
        handles.append(Patch(color=colour, label=f"{name} ({int(volume.sum())} vox)"))
    ax.legend(handles=handles, fontsize="x-small", loc="upper right", framealpha=0.6)
    ax.set(
        title=f"{subject.subject_id}: {AXIS_NAMES[axis]} slice {slice_index}", xticks=[], yticks=[]
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
            left.scatter(*coords[rows].T, s=8 if group == "train" else 14, c=colour,
                         label=f"{group} ({int(rows.sum())})", alpha=0.8, linewidths=0)  # fmt: skip
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
        right.hist(values, bins=edges, histtype="step", lw=1.5, color=SPLIT_COLOURS[group],
                   label=f"{group} (median {np.median(values):.3f})")  # fmt: skip
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
        left.hist(values, bins=bins, histtype="step", density=True, lw=1.5, label=family)
    left.set(xlabel="cosine distance to nearest train image", ylabel="density of test images")
    if pooled:
        left.legend(fontsize="small")
    tau_test = tests.get("tau", np.zeros(len(names), dtype=bool))
    coords = _pca_2d(x, np.ones(len(names), dtype=bool))
    right.scatter(*coords[~tau_test].T, s=6, c=SPLIT_COLOURS["train"], label="train", linewidths=0)
    right.scatter(*coords[tau_test].T, s=8, c="tab:red", label="tau test", linewidths=0)
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
    return plot_splits(splits, names, embeddings, path)


__all__ = [
    "plot_noise_ceilings",
    "plot_roi_overlay",
    "plot_split_families",
    "plot_split_projection",
    "plot_splits",
]
