"""Summary metrics and the figure of an encoding model's test run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from neurotorch.io.atomic import write_json

MIN_CEILING_R = 0.1  # voxels below this single-trial ceiling are left out of ceiling ratios


def summarise_encoder(r: np.ndarray, voxel_table: pd.DataFrame | None) -> dict:
    """Median/mean r, and, given a voxel table with ``roi`` and ``ceiling_r``, ceiling fractions.

    ``ceiling_r`` is the highest correlation any model can reach with single-trial betas,
    ``sqrt(ncsnr² / (ncsnr² + 1))``; the fraction of ceiling is ``r / ceiling_r`` per voxel.
    """
    metrics: dict = {
        "n_voxels": int(r.size),
        "median_r": float(np.nanmedian(r)),
        "mean_r": float(np.nanmean(r)),
        "median_fraction_of_ceiling": None,
    }
    if voxel_table is None:
        return metrics
    table = voxel_table.assign(r=r)
    if "ceiling_r" in table:
        usable = table[table["ceiling_r"] >= MIN_CEILING_R]
        metrics["median_ceiling_r"] = float(np.nanmedian(table["ceiling_r"]))
        if len(usable):
            metrics["median_fraction_of_ceiling"] = float(
                np.nanmedian(usable["r"] / usable["ceiling_r"])
            )
    if "roi" in table:
        metrics["per_roi"] = {
            str(roi): {"n_voxels": int(len(group)), "median_r": float(np.nanmedian(group["r"]))}
            for roi, group in table.groupby("roi", sort=True)
        }
    return metrics


def write_encoder_report(
    r: np.ndarray, voxel_table: pd.DataFrame | None, metrics: dict, out_dir: str | os.PathLike
) -> dict[str, Path]:
    """Write ``metrics.json`` and ``encoder_test.png`` (r against ceiling, per-ROI medians)."""
    from neurotorch.plotting._figure import new_figure, save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path, plot_path = out / "metrics.json", out / "encoder_test.png"
    write_json(metrics_path, metrics)

    fig, (left, right) = new_figure(2, panel_size=(5.0, 4.0))
    if voxel_table is not None and "ceiling_r" in voxel_table:
        ceiling = voxel_table["ceiling_r"].to_numpy()
        left.scatter(ceiling, r, s=4, alpha=0.4)
        top = float(np.nanmax([np.nanmax(ceiling), np.nanmax(r), 0.1]))
        left.plot([0, top], [0, top], "k--", lw=1, label="noise ceiling")
        left.set_xlabel("single-trial noise-ceiling r")
        left.legend(loc="upper left")
    else:
        left.hist(r[np.isfinite(r)], bins=50)
        left.set_xlabel("test r")
    left.set_ylabel("test r" if voxel_table is not None else "voxels")
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
