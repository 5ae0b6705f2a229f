"""Quality-control figures of M/EEG leadfields and posteriors: column norms, topomaps, coverage.

::

    from neurotorch.meeg import LeadfieldBuilder, read_run
    from neurotorch.plotting import meeg as meeg_plots

    lf = LeadfieldBuilder(folder).get_leadfield("fsaverage", "fixed", return_metadata=True)
    meeg_plots.plot_leadfield_column_norms(lf, "norms.png")
    meeg_plots.plot_sensor_topomap(lf, "topomap.png")             # sensitivity of every sensor
    meeg_plots.plot_coverage({"run 1": read_run(path)}, "coverage.png")

The topomap uses MNE's ``plot_topomap`` on the sensor positions of the montage (EEG) or of the
canonical Neuromag helmet (MEG), built by `neurotorch.meeg.forward.sensor_info`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neurotorch._options import check_int
from neurotorch.errors import ShapeMismatchError
from neurotorch.meeg import layout
from neurotorch.meeg.calibration import (
    DEFAULT_LEVELS,
    calibration_metrics,
    coverage_curve,
    ellipsoid_coverage_curve,
)
from neurotorch.meeg.leadfield import LeadfieldData
from neurotorch.meeg.summaries import PosteriorRun
from neurotorch.plotting.figure import new_figure, save_png

if TYPE_CHECKING:
    import mne

PathLike = str | os.PathLike
_UNIT_SENSOR: dict[int | None, str] = {
    layout.UNIT_V: "eeg",
    layout.UNIT_T: "mag",
    layout.UNIT_T_M: "grad",
}


def _as_leadfield(leadfield: LeadfieldData | np.ndarray) -> LeadfieldData:
    return (
        leadfield if isinstance(leadfield, LeadfieldData) else LeadfieldData(np.asarray(leadfield))
    )


def column_norms(leadfield: LeadfieldData | np.ndarray) -> np.ndarray:
    """Euclidean norm of every source's column (over sensors, and components when free), ``(n_sources,)``."""
    gain = _as_leadfield(leadfield).leadfield
    return np.sqrt(np.sum(gain.reshape(gain.shape[0], gain.shape[1], -1) ** 2, axis=(0, 2)))


def plot_leadfield_column_norms(leadfield: LeadfieldData | np.ndarray, path: PathLike) -> Path:
    """How strongly each source reaches the sensors: the leadfield's column norms.

    Left: histogram of the norms (log scale). Right: the sources seen from above (x, y in cm),
    coloured by norm, when the leadfield carries source coordinates; otherwise the norms sorted.
    Deep sources have small norms, which is what depth weighting in inverse solvers corrects.
    """
    data = _as_leadfield(leadfield)
    norms = column_norms(data)
    fig, (left, right) = new_figure(2)
    positive = norms[norms > 0]
    log_scale = positive.size > 1 and positive.min() < positive.max()
    left.hist(
        positive,
        bins=np.geomspace(positive.min(), positive.max(), 40).tolist() if log_scale else 40,
    )
    if log_scale:
        left.set_xscale("log")
    title = f"{data.n_sources} sources × {data.n_sensors} sensors, {data.orientation_type}"
    left.set(xlabel=f"column norm ({data.units})", ylabel="sources", title=title)
    if data.src_coords is not None and len(data.src_coords) == data.n_sources:
        xy = 100 * np.asarray(data.src_coords)[:, :2]
        shown = right.scatter(xy[:, 0], xy[:, 1], c=norms, s=12, cmap="viridis")
        fig.colorbar(shown, ax=right, label=f"column norm ({data.units})")
        right.set(xlabel="x (cm)", ylabel="y (cm)", title="sources from above", aspect="equal")
    else:
        right.plot(np.sort(norms)[::-1])
        right.set(xlabel="source (sorted)", ylabel=f"column norm ({data.units})", yscale="log")
    return save_png(fig, path)


def leadfield_sensor_info(
    leadfield: LeadfieldData, montage: str = "easycap-M43", sensor: str | None = None
) -> mne.Info:
    """MNE measurement info with the positions of a leadfield's sensors (no download).

    The sensor set is ``sensor`` if given, else taken from the leadfield's sensor units (V: EEG,
    T: magnetometers, T/m: gradiometers). When the leadfield names its channels, those channels are
    picked from the montage / helmet in the leadfield's order; otherwise the first
    ``n_sensors`` channels are used.
    """
    import mne

    from neurotorch.meeg.forward import sensor_info

    sensor = sensor or _UNIT_SENSOR.get(leadfield.sensor_units, "eeg")
    info = sensor_info(sensor, montage)
    if leadfield.ch_names:
        missing = [name for name in leadfield.ch_names if name not in info["ch_names"]]
        if missing:
            raise ShapeMismatchError(
                f"Channels {missing[:5]} of the leadfield are not in the {sensor} sensor set "
                f"({montage if sensor == 'eeg' else 'Neuromag helmet'}); pass info= with their positions."
            )
        return mne.pick_info(info, [info["ch_names"].index(name) for name in leadfield.ch_names])
    return sensor_info(sensor, montage, leadfield.n_sensors)


def plot_sensor_topomap(
    leadfield: LeadfieldData | np.ndarray,
    path: PathLike,
    source: int | None = None,
    info: mne.Info | None = None,
    montage: str = "easycap-M43",
) -> Path:
    """A topographic map of the leadfield on the sensor layout (MNE ``plot_topomap``).

    Parameters
    ----------
    leadfield
        A `LeadfieldData` (its sensor units and channel names choose the sensor positions).
    path
        Where the PNG goes.
    source
        Plot this source's column (its gain at every sensor; free orientation: the norm over
        components). Default: every sensor's sensitivity, the norm of its row over all sources.
    info
        MNE info with the sensor positions; default `leadfield_sensor_info` with ``montage``.
    montage
        Standard EEG montage used when ``info`` is not given.
    """
    import mne

    data = _as_leadfield(leadfield)
    info = info if info is not None else leadfield_sensor_info(data, montage)
    if len(info["ch_names"]) != data.n_sensors:
        raise ShapeMismatchError(
            f"info has {len(info['ch_names'])} channels but the leadfield has {data.n_sensors} sensors."
        )
    gain = data.leadfield.reshape(data.n_sensors, data.n_sources, -1)
    if source is not None:
        check_int("source", source, minimum=0, maximum=data.n_sources - 1)
    if source is None:
        values, what, cmap = (
            np.sqrt(np.sum(gain**2, axis=(1, 2))),
            "sensor sensitivity (row norm)",
            "viridis",
        )
    elif gain.shape[2] == 1:  # fixed orientation: signed gain
        values, what, cmap = gain[:, source, 0], f"gain of source {source}", "RdBu_r"
    else:
        values, what, cmap = (
            np.linalg.norm(gain[:, source], axis=1),
            f"|gain| of source {source}",
            "viridis",
        )
    fig, (ax,) = new_figure(panel_size=(5.0, 4.4))
    limit = float(np.max(np.abs(values))) if cmap == "RdBu_r" else None
    vlim = (-limit, limit) if limit else (None, None)
    image, _ = mne.viz.plot_topomap(
        values, info, axes=ax, show=False, cmap=cmap, vlim=vlim, contours=6
    )
    fig.colorbar(image, ax=ax, shrink=0.8, label=data.units)
    ax.set_title(f"{what}, {data.n_sensors} sensors")
    return save_png(fig, path)


def run_coverage(
    run: PosteriorRun, levels: np.ndarray = DEFAULT_LEVELS, mode: str = "time_averaged"
) -> np.ndarray:
    """Empirical coverage of a run's credible intervals (fixed) or ellipsoids (free) at ``levels``,
    counted ``"time_averaged"`` (CaliBrain's calibrator) or ``"pointwise"``."""
    if run.orientation_type == "fixed" or run.cov_blocks is None:
        return coverage_curve(run.x_true, run.x_hat, run.var, levels=levels, mode=mode)
    return ellipsoid_coverage_curve(run.x_true, run.x_hat, run.cov_blocks, levels=levels, mode=mode)


def plot_coverage_curves(
    levels: np.ndarray,
    curves: Mapping[str, np.ndarray],
    path: PathLike,
    title: str = "Coverage of credible intervals",
) -> Path:
    """Empirical against nominal coverage, one curve per entry of ``curves``.

    Each label carries the curve's mean absolute deviation from the diagonal
    (`neurotorch.meeg.calibration.calibration_metrics`). Below the diagonal the intervals are
    over-confident (too narrow), above it under-confident.
    """
    levels = np.asarray(levels, dtype=np.float64)
    fig, (ax,) = new_figure(panel_size=(5.2, 5.0))
    ax.fill_between([0, 1], [0, 1], 0, color="tab:red", alpha=0.06, lw=0)
    ax.fill_between([0, 1], [0, 1], 1, color="tab:blue", alpha=0.06, lw=0)
    ax.text(
        0.97, 0.03, "over-confident", ha="right", va="bottom", color="tab:red", fontsize="small"
    )
    ax.text(0.03, 0.97, "under-confident", ha="left", va="top", color="tab:blue", fontsize="small")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    for name, curve in curves.items():
        deviation = calibration_metrics(levels, curve)["mean_absolute_deviation"]
        ax.plot(levels, curve, marker="o", ms=3, label=f"{name} (MAD {deviation:.3f})")
    ax.set(
        xlabel="nominal coverage",
        ylabel="empirical coverage",
        xlim=(0, 1),
        ylim=(0, 1),
        title=title,
    )
    ax.legend(loc="lower right", fontsize="x-small", bbox_to_anchor=(1.0, 0.06))
    return save_png(fig, path)


def plot_coverage(
    runs: Mapping[str, PosteriorRun] | Sequence[PosteriorRun] | PosteriorRun,
    path: PathLike,
    levels: np.ndarray = DEFAULT_LEVELS,
    title: str = "Coverage of credible intervals",
    mode: str = "time_averaged",
) -> Path:
    """Empirical against nominal coverage, one curve per posterior run (`plot_coverage_curves`).

    Curves come from `run_coverage` (with ``mode``): `neurotorch.meeg.calibration.coverage_curve` for fixed
    orientation, `~neurotorch.meeg.calibration.ellipsoid_coverage_curve` for free. Runs given
    as a sequence are labelled by their file names.
    """
    if isinstance(runs, PosteriorRun):
        runs = [runs]
    if not isinstance(runs, Mapping):
        runs = {
            (Path(run.path).stem if run.path else f"run {k}"): run for k, run in enumerate(runs)
        }
    levels = np.asarray(levels, dtype=np.float64)
    curves = {name: run_coverage(run, levels, mode) for name, run in runs.items()}
    return plot_coverage_curves(levels, curves, path, title=title)


__all__ = [
    "column_norms",
    "leadfield_sensor_info",
    "plot_coverage",
    "plot_coverage_curves",
    "plot_leadfield_column_norms",
    "plot_sensor_topomap",
    "run_coverage",
]
