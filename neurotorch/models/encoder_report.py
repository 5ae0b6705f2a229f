"""Summary metrics and the figure of an encoding model's test run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from neurotorch.io.atomic import write_json
from neurotorch.models.held_out import median_fraction_margin

MIN_CEILING_R = 0.1  # voxels below this test-set ceiling are left out of ceiling ratios


def summarise_encoder(
    r: np.ndarray,
    r2: np.ndarray,
    ceiling: dict | None,
    voxel_table: pd.DataFrame | None,
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
        Voxel table with an ``roi`` column (per-ROI medians), or None.
    penalty, partition, spaces
        ``(S, V)`` chosen relative penalties and variance shares of the feature spaces named in
        ``spaces``.

    The fraction of ceiling is ``r / ĉ`` and the fraction of explainable variance ``r² / ĉ²``,
    over voxels whose ceiling is at least ``MIN_CEILING_R``; ``fraction_of_ceiling_margin`` is
    the median's sampling margin (`median_fraction_margin`).
    """
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
        c = ceiling["ceiling_r"]
        usable = c >= MIN_CEILING_R
        fraction = r[usable] / c[usable]
        metrics.update(
            median_ceiling_r=float(np.nanmedian(c)),
            ceiling_n_rows=ceiling["n_rows"],
            ceiling_n_images=ceiling["n_images"],
            n_voxels_above_min_ceiling=int(usable.sum()),
        )
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
        table = table.assign(fraction=np.where(usable, r / np.where(usable, c, 1), np.nan))
    if penalty is not None and spaces is not None:
        metrics["feature_spaces"] = {
            space: {
                "median_penalty": float(np.median(penalty[s])),
                **({"median_variance_share": float(np.nanmedian(partition[s]))} if partition is not None else {}),
            }
            for s, space in enumerate(spaces)
        }  # fmt: skip
    if "roi" in table:
        metrics["per_roi"] = {
            str(roi): {
                "n_voxels": int(len(group)),
                "median_r": float(np.nanmedian(group["r"])),
                **({"median_fraction_of_ceiling": _median(group["fraction"])} if "fraction" in group else {}),
            }
            for roi, group in table.groupby("roi", sort=True)
        }  # fmt: skip
    return metrics


def _median(values: pd.Series) -> float | None:
    return float(values.median()) if values.notna().any() else None


def write_encoder_report(
    r: np.ndarray,
    ceiling: dict | None,
    voxel_table: pd.DataFrame | None,
    metrics: dict,
    out_dir: str | os.PathLike,
) -> dict[str, Path]:
    """Write ``metrics.json`` and ``encoder_test.png`` (r against the test trials' ceiling, and
    per-ROI medians)."""
    from neurotorch.plotting.figure import new_figure, save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path, plot_path = out / "metrics.json", out / "encoder_test.png"
    write_json(metrics_path, metrics)

    fig, (left, right) = new_figure(2, panel_size=(5.0, 4.0))
    if ceiling is not None:
        left.scatter(ceiling["ceiling_r"], r, s=4, alpha=0.4)
        top = float(np.nanmax([np.nanmax(ceiling["ceiling_r"]), np.nanmax(r), 0.1]))
        left.plot([0, top], [0, top], "k--", lw=1, label="noise ceiling")
        left.set_xlabel("noise ceiling r of the test trials")
        left.set_ylabel("test r")
        left.legend(loc="upper left")
    else:
        left.hist(r[np.isfinite(r)], bins=50)
        left.set_xlabel("test r")
        left.set_ylabel("voxels")
    left.set_title(f"median r = {metrics['median_r']:.3f}")
    per_roi = metrics.get("per_roi", {})
    if per_roi:
        names = list(per_roi)
        right.bar(names, [per_roi[n]["median_r"] for n in names])
        right.tick_params(axis="x", rotation=60)
        right.set_ylabel("median test r")
        right.set_title("per ROI")
    else:
        right.axis("off")
    save_png(fig, plot_path)
    return {"metrics": metrics_path, "plot": plot_path}
