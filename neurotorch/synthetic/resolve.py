"""``data_dir="synthetic"``: the one resolver of the built-in synthetic datasets, every family.

Each family's synthetic dataset lives in one folder layout under ``NEUROTORCH_DATA``:
``synthetic/<family>-<size>-seed<seed>[-<option>-<value>...]``, and is written on first use by
the family's writer (atomically; concurrent first users write it once). `resolve_data_dir` is what
datasets, DataModules and `neurotorch.load_dataset` call with the user's ``data_dir``: any other
value passes through unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from neurotorch._lazy import import_object
from neurotorch._options import check_option
from neurotorch.config import data_home

D = TypeVar("D")  # what the data_dir of a family's reader accepts

SYNTHETIC = "synthetic"
#: family -> "module:function" of its writer: ``writer(out, size=, seed=, overwrite=, **options)``.
WRITERS = {
    "laion-fmri": "neurotorch.synthetic.laion_fmri:make_laion_fmri",
    "calibrain": "neurotorch.synthetic.meeg:make_calibrain",
    "connectome": "neurotorch.synthetic.connectome:make_connectome_dataset",
}


def is_synthetic(data_dir: object) -> bool:
    """Whether ``data_dir`` asks for the built-in synthetic dataset."""
    return isinstance(data_dir, str) and data_dir == SYNTHETIC


def synthetic_root(family: str, size: str = "small", seed: int = 0, **options: Any) -> Path:
    """The folder of a family's synthetic dataset of a size, seed and writer options."""
    check_option("family", family, WRITERS)
    suffix = "".join(f"-{key}-{value}" for key, value in sorted(options.items()))
    return data_home() / SYNTHETIC / f"{family}-{size}-seed{seed}{suffix}"


def make_synthetic(family: str, size: str = "small", seed: int = 0, **options: Any) -> Path:
    """Write (or reuse) the synthetic dataset of `synthetic_root`; return its root."""
    writer = import_object(WRITERS[check_option("family", family, WRITERS)])
    out = synthetic_root(family, size, seed, **options)
    return Path(writer(out, size=size, seed=seed, **options))


def resolve_data_dir(
    family: str,
    data_dir: D,
    *,
    size: str = "small",
    seed: int = 0,
    **options: Any,
) -> D | Path:
    """``data_dir``, or the root of the family's synthetic dataset when it is ``"synthetic"``."""
    if is_synthetic(data_dir):
        return make_synthetic(family, size, seed, **options)
    return data_dir
