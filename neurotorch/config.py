"""Data roots, cache location and global settings, read from the environment.

========================  ===============================================================
``NEUROTORCH_DATA``       default root of datasets (the ``synthetic`` dataset lives here)
``NEUROTORCH_CACHE``      prepared stores, seek indexes and remote-file cache
``LAION_FMRI_DATA_DIR``   root of the LAION-fMRI tree (neurotorch's own variable)
``CALIBRAIN_DATA``        root of CaliBrain leadfields and forward models
``NEUROTORCH_PROGRESS``   ``0`` silences every progress bar (Lightning's too, in the CLI)
``NEUROTORCH_LOG_LEVEL``  level of neurotorch's messages (`neurotorch.log`); INFO
``NEUROTORCH_DEBUG``      ``1``: the command line shows tracebacks (`neurotorch.cli`)
========================  ===============================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from neurotorch.errors import DataDirNotSetError, ParameterError

if TYPE_CHECKING:
    import torch

#: Device types neurotorch computes on.
DEVICE_TYPES = ("cpu", "cuda", "mps")


def _xdg_cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def data_home() -> Path:
    """Directory that holds generated and downloaded datasets."""
    env = os.environ.get("NEUROTORCH_DATA")
    return Path(env).expanduser() if env else _xdg_cache_home() / "neurotorch" / "data"


def cache_dir() -> Path:
    """Directory for prepared stores, gzip seek indexes and cached remote files."""
    env = os.environ.get("NEUROTORCH_CACHE")
    return Path(env).expanduser() if env else _xdg_cache_home() / "neurotorch" / "cache"


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (what a container, ``taskset`` or a SLURM
    allocation grants), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def progress_enabled() -> bool:
    """Whether long operations show a tqdm progress bar (``NEUROTORCH_PROGRESS=0`` turns them off)."""
    return os.environ.get("NEUROTORCH_PROGRESS", "1") not in ("0", "false", "False", "")


def show_progress(progress: bool | None = None) -> bool:
    """The one rule of every ``progress=`` argument: ``None`` (the default everywhere) shows the bar
    of long work, ``False`` hides it, and ``NEUROTORCH_PROGRESS=0`` hides every bar."""
    return progress is not False and progress_enabled()


def resolve_data_dir(data_dir: str | os.PathLike | None, env_var: str, what: str) -> str:
    """Return ``data_dir`` or the value of ``env_var``; raise `DataDirNotSetError` if neither is set."""
    if data_dir is not None:
        return os.fspath(data_dir)
    env = os.environ.get(env_var)
    if env:
        return env
    raise DataDirNotSetError(
        f"No {what} data directory given. Pass data_dir=... or set the environment variable "
        f"{env_var} to the dataset root (a local path or a URL such as s3://bucket/prefix)."
    )


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine; `ParameterError` otherwise.

    ``"cuda"`` without a CUDA device (or with a CPU-only torch build) is refused here, with a
    message naming the cause, rather than failing inside torch.
    """
    import torch  # here: the configuration is read without importing torch

    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ParameterError(
            f"device={device!r} is not a torch device ({exc}); use 'cpu' or 'cuda'."
        ) from None
    if resolved.type not in DEVICE_TYPES:
        raise ParameterError(
            f"device={str(device)!r}: neurotorch computes on {', '.join(DEVICE_TYPES)}."
        )
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (resolved.index or 0) >= count:
            raise ParameterError(
                f"device={str(device)!r}: this machine has {count} CUDA device(s) "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                "use device='cpu' or a device that exists."
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ParameterError(f"device={str(device)!r}: MPS is not available here; use 'cpu'.")
    return resolved
