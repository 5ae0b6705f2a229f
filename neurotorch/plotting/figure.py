"""Figures drawn without pyplot: no global backend switch, safe in scripts, workers and notebooks.

Every plotting function builds a `matplotlib.figure.Figure` (rendered by the Agg canvas) and
writes it with `save_png`, atomically, so a crashed run never leaves a half-written PNG.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from neurotorch.io.atomic import atomic_path

DPI = 110


def new_figure(
    n_cols: int = 1, n_rows: int = 1, panel_size: tuple[float, float] = (4.6, 4.0), **subplot_kw
) -> tuple[Figure, list[Axes]]:
    """A figure with ``n_rows`` × ``n_cols`` panels, returned as a flat list of axes."""
    fig = Figure(figsize=(panel_size[0] * n_cols, panel_size[1] * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False, subplot_kw=subplot_kw or None)
    return fig, list(axes.ravel())


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders created, atomic replace); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return path
