"""Write a synthetic dataset folder atomically, or reuse the complete one already there."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_dataset_once(
    root: Path,
    params: dict,
    info_relpath: str,
    write: Callable[[Path], dict],
    *,
    what: str,
    overwrite: bool = False,
) -> Path:
    """Build a dataset with ``write(folder) -> extra_info`` and move it to ``root`` in one rename.

    An existing ``root`` whose info file (``info_relpath``) records the same ``params`` is reused
    as is; anything else at ``root`` raises `FileExistsError` unless ``overwrite``. The dataset is
    written into a hidden sibling folder first, so an interrupted run never leaves a half-written
    dataset at ``root``.
    """
    if root.exists() and not overwrite:
        info_path = root / info_relpath
        if info_path.exists():
            found = json.loads(info_path.read_text())
            if {k: found.get(k) for k in params} == params:
                return root
        described = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise FileExistsError(
            f"{root} exists and is not a synthetic {what} dataset with {described}; "
            "choose another folder or pass overwrite=True."
        )
    partial = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        extra = write(partial)
        info_path = partial / info_relpath
        info_path.parent.mkdir(parents=True, exist_ok=True)
        info_path.write_text(json.dumps({**params, **extra}, indent=2))
        if root.exists():
            shutil.rmtree(root)
        os.replace(partial, root)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root
