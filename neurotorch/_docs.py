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

# -- LAION-fMRI readers (neurotorch.fmri) ---------------------------------------------------------
docdict["fmri_data_dir"] = """
data_dir
    The LAION-fMRI root: a local folder, an fsspec URL (``s3://bucket/prefix``) or a
    `neurotorch.io.storage.DataRoot`. Default: ``$LAION_FMRI_DATA_DIR``, then the folder in
    laion_fmri's config file, then ``<NEUROTORCH_DATA>/laion-fmri``.
"""
docdict["session"] = """
session
    A session id (``"ses-01"``, ``"01"``), or a list of them (the result is then a dict keyed by
    session). Required: single-trial betas are stored per session.
"""
docdict["roi"] = """
roi
    An ROI query: an ROI name (``"FFA1"``), a category (``"face"``), ``"all"``, or a list mixing
    them (their union, overlapping voxels counted once). Excludes ``mask``.
"""
docdict["mask"] = """
mask
    Your own boolean voxel mask: one entry per brain voxel (or the 3-D grid). Excludes ``roi``.
"""
docdict["nc_threshold"] = """
nc_threshold
    Keep the voxels whose noise ceiling of the session (percent) is at least this value.
"""
docdict["mask_source"] = """
mask_source
    The brain mask that defines the voxel axis: ``"anatomical"`` (the shipped brain mask, the
    default, as in laion_fmri) or ``"rsquare"`` (mean R² finite and non-zero).
"""
docdict["nan_policy"] = """
nan_policy
    NaN/±inf among the selected betas: ``"raise"`` (default: `FormatError` naming the file and
    the count), ``"zero"`` (replaced by 0) or ``"keep"``.
"""


# -- connectome ----------------------------------------------------------------------------------
docdict["connectome_data_dir"] = """
data_dir
    The connectome: a folder of batch files, one file or a list of them (local paths or fsspec
    URLs such as ``s3://bucket/prefix``), a `neurotorch.connectome.ConnectomeBatches`, or
    ``"synthetic"`` for the synthetic connectome of ``synthetic_size`` (written on first use
    under ``NEUROTORCH_DATA``). ``None`` is an alias of ``"synthetic"``.
"""
docdict["connectome_subjects"] = """
subjects
    Subject indices to serve, distinct, in ``0 .. n_subjects - 1`` (default: all).
"""
docdict["connectome_parcellation"] = """
parcellation
    Optional 3-D label image (file, image or `neurotorch.connectome.Parcellation`), sampled at
    the connectome's voxels: each item's time series becomes the mean of every parcel.
"""
docdict["connectome_connectivity"] = """
connectivity
    Add each subject's (n_parcels, n_parcels) Pearson connectivity matrix (needs a
    ``parcellation``).
"""
docdict["connectome_synthetic_size"] = """
synthetic_size
    Size of the synthetic connectome when ``data_dir`` is ``"synthetic"``: ``"tiny"`` (6
    subjects, 8 mm grid), ``"small"`` (20 subjects, 4 mm) or ``"bench"`` (10 subjects, 2 mm).
"""


# -- reference models (neurotorch.models) --------------------------------------------------------
docdict["output_dir"] = """
output_dir
    Folder of the reports the model writes when it is tested (metrics JSON, PNG figures); default
    the trainer's log folder (``runs/<name>/version_N/`` on the command line).
"""
docdict["levels"] = """
levels
    Nominal coverage levels of the central credible intervals that are reported, and targeted
    after calibration (numbers in (0, 1)).
"""
docdict["coverage_mode"] = """
coverage_mode
    What an interval covers: ``"time_averaged"`` (the time average of each source, as
    CaliBrain's calibrator) or ``"pointwise"`` (every time sample).
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
