"""Train / validation / test parts of any set of units, the one split rule of every family.

The units are what a family splits by: image names (fMRI, so no image is in two parts), subject
indices (connectome), run files (M/EEG calibration runs). A part is carved from the sorted units
with a permutation seeded by ``seed``, so the parts depend only on the units and the seed, never
on their order or on the process. Published splits (the LAION-fMRI split files) give the test part
themselves; `carve` then takes the validation part out of their training part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from neurotorch._options import check_int, check_number
from neurotorch.errors import ParameterError

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

U = TypeVar("U", bound="SupportsRichComparison")  # hashable too: units are dict keys


def check_fractions(val_fraction: float, test_fraction: float = 0.0) -> tuple[float, float]:
    """Both fractions in [0, 1) and their sum below 1, each named when it is the culprit."""
    val = check_number("val_fraction", val_fraction, minimum=0, maximum=1, open_maximum=True)
    test = check_number("test_fraction", test_fraction, minimum=0, maximum=1, open_maximum=True)
    if val + test >= 1:
        raise ParameterError(
            f"val_fraction + test_fraction = {val} + {test} leaves no training units; "
            "their sum must stay below 1."
        )
    return val, test


def carve(units: Sequence[U], fraction: float, seed: int = 0, *, at_least_one: bool = False):
    """``(rest, carved)``: ``round(fraction * n)`` units carved out by a seeded permutation.

    Both parts keep the sorted order of the units. ``at_least_one`` carves one unit when the
    fraction is positive but rounds to none (a small set still gets a validation unit).
    """
    ordered = sorted(dict.fromkeys(units))
    check_int("seed", seed)
    count = int(round(fraction * len(ordered)))
    if at_least_one and fraction > 0 and count == 0 and len(ordered) > 1:
        count = 1
    chosen = set(np.random.default_rng(seed).permutation(len(ordered))[:count].tolist())
    rest = [u for i, u in enumerate(ordered) if i not in chosen]
    carved = [u for i, u in enumerate(ordered) if i in chosen]
    return rest, carved


def partition(
    units: Sequence[U], val_fraction: float, test_fraction: float, seed: int = 0
) -> dict[str, list[U]]:
    """``{"train", "val", "test"}`` parts of ``units``: test first, then validation from the rest.

    Each non-zero fraction yields at least one unit (when there are units to spare), so a small
    set never silently loses its validation or test part.
    """
    val_fraction, test_fraction = check_fractions(val_fraction, test_fraction)
    rest, test = carve(units, test_fraction, seed, at_least_one=True)
    share = val_fraction / (1.0 - test_fraction) if val_fraction else 0.0
    train, val = carve(rest, share, seed + 1, at_least_one=True)
    if not train:
        raise ParameterError(
            f"{len(units)} units split with val_fraction={val_fraction} and "
            f"test_fraction={test_fraction} leave none for training; lower the fractions."
        )
    return {"train": train, "val": val, "test": test}
