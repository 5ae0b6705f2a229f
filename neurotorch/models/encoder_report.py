"""Summary metrics and the figure of an encoding model's test run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from neurotorch.errors import ShapeMismatchError
from neurotorch.io.atomic import write_json
from neurotorch.models.held_out import median_fraction_margin

MIN_CEILING_R = 0.1  # voxels below this test-set ceiling are left out of ceiling ratios


def summarise_encoder(
    r: np.ndarray,
    r2: np.ndarray,
    *,
    ceiling: dict | None = None,
    voxel_table: pd.DataFrame | None = None,
    penalty: np.ndarray | None = None,
    partition: np.ndarray | None = None,
    spaces: list[str] | None = None,
) -> dict:
    """Medians of the test r and R², and of the fractions of the test trials' ceiling reached.

    Parameters
    ----------
    r, r2
        Per-voxel test correlation and coefficient of determination.
    ceiling
        `CeilingStatistics.ceiling` of the test trials (None: no repeated images, no ratios).
    voxel_table
        The voxel table of the scored voxels (one row per voxel, in their order) with an ``roi``
        column for per-ROI medians, or None.
    penalty, partition, spaces
        ``(S, V)`` chosen relative penalties and variance shares of the feature spaces named in
        ``spaces``.

    The fraction of ceiling is ``r / ĉ`` and the fraction of explainable variance ``r² / ĉ²``,
    over voxels whose ceiling is at least ``MIN_CEILING_R``; ``fraction_of_ceiling_margin`` is
    the median's sampling margin (`median_fraction_margin`).

    Raises
    ------
    ShapeMismatchError
        The voxel table has another number of rows than there are scored voxels: it describes
        another voxel selection, and per-ROI numbers from it would be wrong.
    """
    if voxel_table is not None and len(voxel_table) != r.size:
        raise ShapeMismatchError(
            f"The voxel table has {len(voxel_table)} rows but the encoder scored {r.size} voxels: "
            "the table describes another voxel selection than the test items (check that it is "
            "built with the same roi, mask and nc_threshold as the dataset)."
        )
    metrics: dict = {
        "n_voxels": int(r.size),
        "median_r": float(np.nanmedian(r)),
        "mean_r": float(np.nanmean(r)),
        "median_r2": float(np.nanmedian(r2)),
        "median_fraction_of_ceiling": None,
    }
    table = pd.DataFrame({"r": r}) if voxel_table is None else voxel_table.assign(r=r)
    if ceiling is None:
        metrics["ceiling_note"] = (
            "the test rows hold no image shown more than once as single trials"
        )
    else:
        metrics.update(_ceiling_metrics(r, ceiling))
        c = ceiling["ceiling_r"]
        usable = c >= MIN_CEILING_R
        table = table.assign(fraction=np.where(usable, r / np.where(usable, c, 1), np.nan))
    if penalty is not None and spaces is not None:
        metrics["feature_spaces"] = {
            space: _space_metrics(penalty[s], None if partition is None else partition[s])
            for s, space in enumerate(spaces)
        }
    if "roi" in table:
        metrics["per_roi"] = {
            str(roi): _roi_metrics(group) for roi, group in table.groupby("roi", sort=True)
        }
    return metrics


def _ceiling_metrics(r: np.ndarray, ceiling: dict) -> dict:
    c = ceiling["ceiling_r"]
    usable = c >= MIN_CEILING_R
    fraction = r[usable] / c[usable]
    metrics = {
        "median_ceiling_r": float(np.nanmedian(c)),
        "ceiling_n_rows": ceiling["n_rows"],
        "ceiling_n_images": ceiling["n_images"],
        "n_voxels_above_min_ceiling": int(usable.sum()),
    }
    if usable.any():
        metrics.update(
            median_fraction_of_ceiling=float(np.nanmedian(fraction)),
            median_fraction_of_explainable_variance=float(
                np.nanmedian(np.sign(fraction) * fraction**2)  # r² / ĉ², signed
            ),
            fraction_of_ceiling_margin=median_fraction_margin(
                fraction, c[usable], ceiling["ceiling_sd"][usable]
            ),
        )
    return metrics


def _space_metrics(penalty: np.ndarray, share: np.ndarray | None) -> dict:
    metrics = {"median_penalty": float(np.median(penalty))}
    if share is not None:
        metrics["median_variance_share"] = float(np.nanmedian(share))
    return metrics


def _roi_metrics(group: pd.DataFrame) -> dict:
    metrics: dict[str, float | None] = {
        "n_voxels": int(len(group)),
        "median_r": float(np.nanmedian(group["r"])),
    }
    if "fraction" in group:
        metrics["median_fraction_of_ceiling"] = _median(group["fraction"])
    return metrics


def _median(values: pd.Series) -> float | None:
    return float(values.median()) if values.notna().any() else None


def write_encoder_report(
    out_dir: str | os.PathLike,
    metrics: dict,
    *,
    r: np.ndarray,
    ceiling: dict | None = None,
    partition: np.ndarray | None = None,
    title: str = "",
) -> dict[str, Path]:
    """Write ``metrics.json`` and ``encoder_test.png`` into ``out_dir``; return their paths.

    The figure shows the test r against the test trials' noise ceiling (or a histogram of r
    without a ceiling), the per-ROI medians, and with several feature spaces each space's share
    of the explained variance (``partition``, ``(S, V)``, spaces named as in
    ``metrics["feature_spaces"]``); ``title`` says which subject, features and split.
    """
    from neurotorch.plotting.figure import new_figure, save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path, plot_path = out / "metrics.json", out / "encoder_test.png"
    write_json(metrics_path, metrics)

    fig, axes = new_figure(2 if partition is None else 3, panel_size=(5.0, 4.0))
    _plot_r(axes[0], r, ceiling=ceiling, median_r=metrics["median_r"])
    _plot_rois(axes[1], metrics.get("per_roi", {}))
    if partition is not None:
        _plot_shares(axes[2], partition, list(metrics.get("feature_spaces", {})))
    if title:
        fig.suptitle(title)
    save_png(fig, plot_path)
    return {"metrics": metrics_path, "plot": plot_path}


def _plot_r(ax, r: np.ndarray, *, ceiling: dict | None, median_r: float) -> None:
    if ceiling is not None:
        ax.scatter(ceiling["ceiling_r"], r, s=4, alpha=0.4)
        top = float(np.nanmax([np.nanmax(ceiling["ceiling_r"]), np.nanmax(r), 0.1]))
        ax.plot([0, top], [0, top], "k--", lw=1, label="noise ceiling")
        ax.set_xlabel("noise ceiling r of the test trials")
        ax.set_ylabel("test r")
        ax.legend(loc="upper left")
    else:
        ax.hist(r[np.isfinite(r)], bins=50)
        ax.set_xlabel("test r")
        ax.set_ylabel("voxels")
    ax.set_title(f"median r = {median_r:.3f}")


def _plot_rois(ax, per_roi: dict) -> None:
    if not per_roi:
        ax.axis("off")
        return
    names = list(per_roi)
    ax.bar(names, [per_roi[n]["median_r"] for n in names])
    ax.tick_params(axis="x", rotation=60)
    ax.set_ylabel("median test r")
    ax.set_title("per ROI")


def _plot_shares(ax, partition: np.ndarray, spaces: list[str]) -> None:
    """Each space's share of the explained variance over voxels (a box per space)."""
    finite = [values[np.isfinite(values)] for values in partition]
    ax.boxplot(finite, showfliers=False)
    ax.set_xticks(range(1, len(spaces) + 1), spaces)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("share of explained variance (R²)")
    medians = ", ".join(f"{n} {np.median(v):.3f}" for n, v in zip(spaces, finite, strict=True))
    ax.set_title(f"variance partition (medians: {medians})", fontsize="small")
