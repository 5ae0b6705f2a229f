"""Where the LAION-fMRI tree lives, and the errors raised for files missing from it."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurotorch._docs import fill_doc
from neurotorch.config import data_home
from neurotorch.errors import (
    DataDirNotSetError,
    DataNotDownloadedError,
    FormatError,
    StimuliNotDownloadedError,
)
from neurotorch.fmri.data_dir_config import CONFIG_KEY, config_path, configured_data_dir
from neurotorch.io.storage import DataRoot

DATA_DIR_ENV = "LAION_FMRI_DATA_DIR"
DEFAULT_DIR_NAME = "laion-fmri"
_ROOT_HINT = f"then pass data_dir=DIR or set {DATA_DIR_ENV}=DIR."
HOW_TO_GET = (
    "Get it with `neurotorch download laion-fmri --out DIR [--subject sub-01]` (or write a "
    f"synthetic tree with `neurotorch synth laion-fmri --out DIR`), {_ROOT_HINT}"
)
HOW_TO_GET_STIMULI = (
    "Get the stimuli with `neurotorch download laion-fmri --out DIR --include-stimuli` (or write "
    f"a synthetic tree with `neurotorch synth laion-fmri --out DIR`), {_ROOT_HINT}"
)


def configured_root() -> str | None:
    """The configured dataset root: ``$LAION_FMRI_DATA_DIR`` (neurotorch's own variable), else the
    directory in laion_fmri's config file (see `neurotorch.fmri.data_dir_config`), else None."""
    return os.environ.get(DATA_DIR_ENV) or configured_data_dir()


def _configured_origin() -> str:
    """Which setting `configured_root` came from, for messages: the variable (and the config file
    it overrides, if any) or the config file."""
    recorded = configured_data_dir()
    if os.environ.get(DATA_DIR_ENV):
        overridden = f", which overrides {recorded!r} in {config_path()}" if recorded else ""
        return f"{DATA_DIR_ENV}={os.environ[DATA_DIR_ENV]!r}{overridden}"
    return f"the {CONFIG_KEY!r} entry {recorded!r} of {config_path()}"


def _configured_data_root(chosen: str, storage_options: dict | None) -> DataRoot:
    """The root a setting names, checked: a local folder must exist; a relative path in the
    config file is read from the current folder, as laion_fmri reads it, with a warning."""
    origin = _configured_origin()
    from_config = not os.environ.get(DATA_DIR_ENV)
    root = DataRoot(chosen, storage_options, origin=origin)
    if from_config and root.is_local and not Path(chosen).expanduser().is_absolute():
        warnings.warn(
            f"{config_path()} records the relative data directory {chosen!r}, read from the "
            f"current folder as {root.url} (laion_fmri reads it so too); record an absolute path "
            "with neurotorch.fmri.dataset_initialize(DIR) so that it means one folder.",
            UserWarning,
            stacklevel=3,
        )
    if root.is_local and not root.isdir():
        fix = (
            f"set {DATA_DIR_ENV} to the LAION-fMRI root or unset it"
            if not from_config
            else "record the LAION-fMRI root with neurotorch.fmri.dataset_initialize(DIR) (it "
            f"rewrites {config_path()}, which laion_fmri reads too) or set {DATA_DIR_ENV}=DIR"
        )
        raise DataNotDownloadedError(
            f"The LAION-fMRI data directory {root.url} does not exist; it comes from {origin}. "
            f"Pass data_dir=DIR, or {fix}."
        )
    return root


@fill_doc
def resolve_root(
    data_dir: str | os.PathLike | DataRoot | None = None, storage_options: dict | None = None
) -> DataRoot:
    """The dataset root: ``data_dir``, else `configured_root`, else ``<data_home>/laion-fmri``.

    A root taken from ``$LAION_FMRI_DATA_DIR`` or the config file records that origin
    (`DataRoot.origin`), so that errors about it name the setting to change.

    Parameters
    ----------
    %(fmri_data_dir)s
    %(storage_options)s

    Raises
    ------
    DataDirNotSetError
        When none of them is available.
    DataNotDownloadedError
        The variable or the config file names a local folder that does not exist (the message
        names the setting).
    """
    if isinstance(data_dir, DataRoot):
        return data_dir
    if data_dir is not None:
        return DataRoot(data_dir, storage_options)
    chosen = configured_root()
    if chosen:
        return _configured_data_root(chosen, storage_options)
    default = data_home() / DEFAULT_DIR_NAME
    if default.is_dir():
        return DataRoot(default, storage_options, origin=f"NEUROTORCH_DATA (default {default})")
    raise DataDirNotSetError(
        f"No LAION-fMRI data directory given. Pass data_dir=DIR, set {DATA_DIR_ENV}=DIR, run "
        f"neurotorch.fmri.dataset_initialize(DIR) (it writes {config_path()}, which laion_fmri "
        f"reads too), or put the dataset at {default} (NEUROTORCH_DATA moves its parent), e.g. "
        f"with `neurotorch synth laion-fmri --out {default}`."
    )


def require(
    root: DataRoot, relpath: str, what: str, *, stimuli: bool = False, hint: str = ""
) -> str:
    """Return ``relpath`` if it exists under ``root``; otherwise raise an error naming the file.

    Raises `StimuliNotDownloadedError` for stimulus files (``stimuli=True``) and
    `DataNotDownloadedError` for everything else; ``hint`` is added to the message.
    """
    if root.exists(relpath):
        return relpath
    error = StimuliNotDownloadedError if stimuli else DataNotDownloadedError
    how = HOW_TO_GET_STIMULI if stimuli else HOW_TO_GET
    extra = f" {hint}" if hint else ""
    origin = f" The data root {root.described}." if root.origin else ""
    raise error(f"{what} not found: {root.path(relpath)}.{extra}{origin} {how}")


def check_integer_column(table: pd.DataFrame, column: str, where: str) -> None:
    """Every value of ``table[column]`` is an integer; `FormatError` naming ``where`` and the first
    value that is not (text, an empty cell, a fraction)."""
    values = table[column]
    if values.dtype.kind in "iu":
        return
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers % 1 != 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise FormatError(
            f"{where} has {column} {str(values.iloc[row])!r} in data row {row + 1}, which is not an "
            "integer; re-download the file."
        )


def read_table(
    root: DataRoot,
    relpath: str,
    what: str,
    columns: Sequence[str],
    *,
    stimuli: bool = False,
    **read_csv_kwargs: Any,
) -> pd.DataFrame:
    """Read a CSV/TSV of the tree and check that it has ``columns``.

    Raises the not-downloaded error of `require` for a missing file and `FormatError` naming the
    file for an empty or unparsable file and for one with another schema (missing columns).
    """
    require(root, relpath, what, stimuli=stimuli)
    try:
        with root.open(relpath) as handle:
            table = pd.read_csv(handle, **read_csv_kwargs)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise FormatError(
            f"{root.path(relpath)} cannot be read as a table ({exc}); the file is empty or "
            "damaged. Re-download it."
        ) from exc
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise FormatError(
            f"{root.path(relpath)} lacks the column(s) {missing}; found {list(table.columns)}. "
            "Re-download the file; it does not follow the LAION-fMRI schema."
        )
    return table
