"""laion_fmri's persisted data directory: ``$XDG_CONFIG_HOME/laion_fmri/config.json``.

laion_fmri remembers where its data lives in one JSON file, ``{"data_dir": "<path>"}``, under
``$XDG_CONFIG_HOME`` (default ``~/.config``). neurotorch reads the same file, so a machine set up
for laion_fmri works unchanged, and writes it with the same functions (`dataset_initialize`,
`set_data_dir`), so laion_fmri finds a root set up here. As laion_fmri does, `dataset_initialize`
also creates the metadata folder ``<DIR>/.laion_fmri/`` (where laion_fmri's downloader keeps its
licence marker); unlike laion_fmri it records the absolute path, so the file means the same folder
from any working directory.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from neurotorch.errors import DataDirNotSetError, DataNotDownloadedError, FormatError
from neurotorch.io.atomic import named_write_errors, write_json

CONFIG_KEY = "data_dir"
#: laion_fmri's metadata folder inside the data directory
METADATA_DIR = ".laion_fmri"

log = logging.getLogger(__name__)


def config_path() -> Path:
    """The file laion_fmri keeps its data directory in."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config_home) / "laion_fmri" / "config.json"


def configured_data_dir() -> str | None:
    """The data directory recorded in laion_fmri's config file, or None if there is no file.

    Raises
    ------
    FormatError
        The file exists but is not a JSON object with a string ``data_dir``.
    """
    path = config_path()
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FormatError(
            f"{path} is not valid JSON ({err}); fix it or set the data directory again with "
            "neurotorch.fmri.dataset_initialize(DIR)."
        ) from None
    value = config.get(CONFIG_KEY) if isinstance(config, dict) else None
    if not isinstance(value, str) or not value:
        raise FormatError(
            f"{path} has no string entry {CONFIG_KEY!r}; set the data directory again with "
            "neurotorch.fmri.dataset_initialize(DIR)."
        )
    return value


def dataset_initialize(path: str | os.PathLike) -> None:
    """Record ``path`` as the LAION-fMRI data directory (for neurotorch and laion_fmri alike).

    Parameters
    ----------
    path
        An existing local folder.

    Raises
    ------
    TypeError
        ``path`` is not a string or path.
    DataNotDownloadedError
        The folder does not exist (also a ``FileNotFoundError``, as laion_fmri raises).
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a string or path, got {type(path).__name__}.")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataNotDownloadedError(
            f"Data directory does not exist: {folder}; create it (or download the dataset "
            "there) first."
        )
    try:
        (folder / METADATA_DIR).mkdir(exist_ok=True)
    except OSError as exc:  # a read-only dataset is still a valid root to read from
        log.warning("could not create laion_fmri's folder %s: %s", folder / METADATA_DIR, exc)
    target = config_path()
    with named_write_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, {CONFIG_KEY: str(folder.resolve())})


def set_data_dir(path: str | os.PathLike) -> None:
    """Same as `dataset_initialize`: record ``path`` as the data directory."""
    dataset_initialize(path)


def get_data_dir() -> str:
    """The data directory recorded by `dataset_initialize` (or by laion_fmri).

    Raises
    ------
    DataDirNotSetError
        Nothing has been recorded.
    """
    value = configured_data_dir()
    if value is None:
        raise DataDirNotSetError(
            f"No data directory is configured ({config_path()} does not exist); run "
            "neurotorch.fmri.dataset_initialize('/path/to/data') or pass data_dir=."
        )
    return value
