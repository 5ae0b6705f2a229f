"""Shared parameter documentation: each parameter is described once, here (MNE's docdict).

A docstring names an entry as ``%(name)s`` on a line of its own, indented like the other
parameters; `fill_doc` replaces it with the entry, re-indented. Entries are numpydoc blocks
(``name`` line, then the description indented by four spaces), grouped by family below.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=Callable)

docdict: dict[str, str] = {}

# -- every family --------------------------------------------------------------------------------
docdict["data_dir"] = """
data_dir
    The dataset root: a local folder, an fsspec URL (``s3://bucket/prefix``), or
    ``"synthetic"`` for the built-in synthetic dataset of this family (written on first use under
    ``NEUROTORCH_DATA``).
"""
docdict["storage_options"] = """
storage_options
    fsspec options for a URL ``data_dir`` (``{"profile": "lab"}``, ``{"endpoint_url": ...}``);
    passed to fsspec unchanged.
"""
docdict["seed"] = """
seed
    Seed of every random choice (an integer); the same seed gives the same result on any
    machine, worker and rank.
"""
docdict["batch_size"] = """
batch_size
    Items per batch (a positive integer).
"""
docdict["num_workers"] = """
num_workers
    ``DataLoader`` worker processes (0: load in the main process).
"""
docdict["streaming"] = """
streaming
    ``True``: serve an iterable dataset that reads its files front to back, sharded across
    ranks and workers; ``False``: a map-style dataset with random access.
"""


# -- M/EEG ---------------------------------------------------------------------------------------
docdict["meeg_y"] = """
y
    ``(B, M, T)`` sensor data of ``B`` trials (µV for EEG, fT for MEG).
"""
docdict["meeg_leadfield_tensor"] = """
leadfield
    ``(M, N)`` (fixed orientation) or ``(M, N, K)`` (free) leadfield, µV/nAm or fT/nAm; the
    ``(N, K)`` axes are flattened source-major.
"""
docdict["meeg_noise_var"] = """
noise_var
    The white sensor noise variance each trial assumes (µV² or fT²): a scalar or ``(B,)``.
"""
docdict["meeg_noise_var_or_none"] = """
noise_var
    The white sensor noise variance each trial assumes (µV² or fT²; a scalar or ``(B,)``), or
    ``None`` to learn it with the prior (CaliBrain's ``adaptive_joint_learning``; gamma-MAP
    learns one per sensor).
"""
docdict["meeg_max_iter_tol"] = """
max_iter, tol
    At most ``max_iter`` iterations; stop once the relative change of the prior variances is
    below ``tol`` (CaliBrain's rule and defaults).
"""
docdict["meeg_leadfield"] = """
leadfield
    The forward model: a `neurotorch.meeg.leadfield.LeadfieldData`, or a
    `neurotorch.meeg.leadfield.LeadfieldSpec` (or its fields as a mapping, e.g.
    ``{"sensor": "mag", "n_sources": 300}``) saying how to load, simulate or draw one
    (``data_dir="synthetic"``: the built-in synthetic CaliBrain root).
"""
docdict["meeg_posterior"] = """
posterior
    Which posterior the items carry: a `neurotorch.meeg.solvers.PosteriorSpec` (or its fields as
    a mapping, e.g. ``{"solver": "gamma_map", "noise_type": "baseline"}``): CaliBrain's solver
    and its options, the prior variance ``gamma``, how the noise variance is set
    (``noise_type``) and a misspecification factor ``noise_var_scale``. Default: BMN with
    learned ``gamma`` and the true noise variance.
"""
docdict["meeg_nnz_alpha"] = """
nnz, alpha
    The grids of active-source counts (one drawn per batch of trials) and of SNRs α in [0, 1]
    (one drawn per trial); CaliBrain's paper grid by default.
"""
docdict["meeg_erp_config"] = """
config
    Timing, band and amplitudes of the simulated ERPs (`neurotorch.meeg.simulation.ERPConfig`;
    CaliBrain's defaults).
"""
docdict["meeg_device"] = """
device
    Where trials are simulated (and posteriors computed): ``"cpu"`` or a CUDA device.
"""
docdict["meeg_split_lengths"] = """
train_length, val_length, test_length
    Trials per part (positive integers; with ``streaming`` rounded up to whole batches). The
    parts draw from independent seed streams of ``seed``.
"""
docdict["meeg_coverage_mode"] = """
mode
    ``"time_averaged"`` (CaliBrain's calibrator: one interval per source for its time average,
    with variance ``var / T``) or ``"pointwise"`` (one per source and time sample).
"""
docdict["meeg_levels"] = """
levels
    Nominal coverage levels in [0, 1].
"""


def fill_doc(obj: T) -> T:
    """Replace every ``%(name)s`` line of ``obj.__doc__`` with ``docdict[name]``, indented.

    Raises ``KeyError`` at import time for a name without an entry, so a typo cannot ship.
    """
    doc = obj.__doc__
    if not doc:
        return obj
    lines = []
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.startswith("%(") and stripped.endswith(")s"):
            indent = line[: len(line) - len(line.lstrip())]
            entry = docdict[stripped[2:-2]].strip("\n")
            lines.append(textwrap.indent(entry, indent))
        else:
            lines.append(line)
    obj.__doc__ = "\n".join(lines)
    return obj
