"""What happens to NaN and ±inf betas: the ``nan_policy`` of every betas reader.

GLMsingle writes NaN where a voxel could not be fitted. A single NaN in a training batch turns a
loss into NaN, and a silent replacement by 0 would hide a damaged file, so the default is to
refuse: ``"raise"`` raises `FormatError` naming the file and the number of non-finite values
among the selected voxels. ``"zero"`` replaces them with 0 (the store and the statistics then see
0) and ``"keep"`` passes them through unchanged.
"""

from __future__ import annotations

import numpy as np

from neurotorch.errors import FormatError, ParameterError

NAN_POLICIES = ("raise", "zero", "keep")
DEFAULT_NAN_POLICY = "raise"


def check_nan_policy(policy: str) -> str:
    """Return ``policy`` if it is one of `NAN_POLICIES`; raise `ValueError` otherwise."""
    if policy not in NAN_POLICIES:
        raise ParameterError(f"nan_policy must be one of {NAN_POLICIES}, got {policy!r}.")
    return policy


def fix_nonfinite(values: np.ndarray, policy: str) -> int:
    """Count the non-finite entries of ``values``; with ``policy="zero"`` set them to 0 in place."""
    bad = ~np.isfinite(values)
    count = int(np.count_nonzero(bad))
    if count and policy == "zero":
        values[bad] = 0
    return count


def nonfinite_error(where: str, count: int) -> FormatError:
    """The error of ``nan_policy="raise"`` for ``count`` non-finite values found in ``where``."""
    return FormatError(
        f"{where} holds {count} non-finite value(s) (NaN or ±inf) among the selected voxels. "
        "Pass nan_policy='zero' to replace them with 0 or nan_policy='keep' to keep them, or "
        "leave those voxels out of the selection (roi=, mask=, nc_threshold=). If the file may "
        "be damaged, check it first with `neurotorch verify`."
    )


def apply_nan_policy(values: np.ndarray, policy: str, where: str) -> np.ndarray:
    """Apply ``policy`` to a whole array read from ``where`` (modified in place for "zero")."""
    if check_nan_policy(policy) == "keep":
        return values
    count = fix_nonfinite(values, policy)
    if count and policy == "raise":
        raise nonfinite_error(where, count)
    return values
