"""Readers for CaliBrain posterior summaries (HDF5) and aggregated per-run calibration NPZ files.

* ``posterior_summary_run{id:08d}_seed{seed}.h5``: datasets ``x_true``, ``x_hat``,
  ``posterior_cov`` (full ``(N K, N K)``, source-major), optional ``Q_basis``; attribute
  ``metadata_json``.
* aggregated NPZ: ``x_true``, ``x_hat`` and ``posterior_var`` (fixed) or ``posterior_cov_blocks``
  (free, ``(N, K, K)``), plus scalar run metadata (``orientation_type``, ``coil_type``,
  ``alpha_SNR``, ``nnz``, ``seed``, ``run_id``, ...); older files carry ``posterior_cov``.

Free-orientation sources must be stored as ``(N, K, T)`` arrays. Both readers return a
`PosteriorRun` with marginal variances and, for free orientation, the per-source blocks. Paths
may be fsspec URLs (``s3://bucket/prefix/...``) with ``storage_options``: NPZ files are read into
memory, HDF5 files from a cached local copy (see `neurotorch.io.files`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurotorch.errors import CorruptFileError, FormatError, NonFiniteError
from neurotorch.io.files import FilePath, as_path, file_root, local_copy, read_bytes
from neurotorch.io.storage import DataRoot
from neurotorch.meeg import layout
from neurotorch.meeg.calibration import check_covariance_blocks, check_variances
from neurotorch.meeg.npz import read_npz

#: Where a file keeps its posterior uncertainty, in the order they are looked for.
_POSTERIOR_KEYS = ("posterior_cov_blocks", "posterior_var", "posterior_cov")
_ARRAY_KEYS = (
    "x_true",
    "x_hat",
    "posterior_var",
    "posterior_cov_blocks",
    "posterior_cov",
    "Q_basis",
)


@dataclass
class PosteriorRun:
    """One run's true sources and Gaussian posterior (nAm, nAm²).

    Attributes
    ----------
    x_true, x_hat
        ``(N, T)`` or ``(N, K, T)``.
    var
        Marginal variances ``(N,)`` or ``(N, K)``.
    cov_blocks
        ``(N, K, K)`` for free orientation, else ``None``.
    Q_basis
        ``(N, 3, K)`` component basis when stored, else ``None``.
    metadata
        Run metadata (orientation_type, coil_type, alpha_SNR, nnz, seed, ...).
    path
        The file it was read from (a `Path`, or the URL of a remote file).
    """

    x_true: np.ndarray
    x_hat: np.ndarray
    var: np.ndarray
    cov_blocks: np.ndarray | None = None
    Q_basis: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | str | None = None

    @property
    def orientation_type(self) -> str:
        return "fixed" if self.x_true.ndim == 2 else "free"

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.x_true.shape))
        solver = self.metadata.get("solver")
        return (
            f"PosteriorRun({self.orientation_type}, x_true {shape}"
            + (f", solver {solver}" if solver else "")
            + (f", from {self.path}" if self.path else "")
            + ")"
        )


def _blocks_from_full(cov: np.ndarray, *, n_sources: int, k: int, where: object) -> np.ndarray:
    if cov.shape != (n_sources * k, n_sources * k):
        raise FormatError(
            f"posterior_cov in {where} is {cov.shape}; expected ({n_sources * k},) * 2."
        )
    full = cov.reshape(n_sources, k, n_sources, k)
    idx = np.arange(n_sources)
    return full[idx, :, idx, :]


def _build_run(
    arrays: dict[str, np.ndarray], metadata: dict[str, Any], path: Path | str
) -> PosteriorRun:
    for key in ("x_true", "x_hat"):
        if key not in arrays:
            raise FormatError(f"{path} has no {key!r} array.")
    x_true = np.asarray(arrays["x_true"], np.float64)
    x_hat = np.asarray(arrays["x_hat"], np.float64)
    if x_true.shape != x_hat.shape or x_true.ndim not in (2, 3):
        raise FormatError(
            f"x_true {x_true.shape} and x_hat {x_hat.shape} in {path} must be equal (N, T) or (N, K, T) "
            "arrays."
        )
    orientation = metadata.get("orientation_type") or ("fixed" if x_true.ndim == 2 else "free")
    if (orientation == "free") != (x_true.ndim == 3):
        raise FormatError(
            f"{path} is {orientation}-orientation but x_true has shape {x_true.shape}; free-orientation "
            "sources must be stored as (N, K, T)."
        )
    n_sources = x_true.shape[0]
    k = 1 if x_true.ndim == 2 else x_true.shape[1]
    blocks, posterior_key = None, next((k for k in _POSTERIOR_KEYS if k in arrays), None)
    if posterior_key == "posterior_cov_blocks":
        blocks = np.asarray(arrays["posterior_cov_blocks"], np.float64)
    elif posterior_key == "posterior_var":
        var = np.asarray(arrays["posterior_var"], np.float64)
        if var.size != int(np.prod(x_true.shape[:-1])):
            raise FormatError(
                f"posterior_var in {path} has {var.size} values; expected one per source (and "
                f"component) of x_true {x_true.shape}, i.e. {x_true.shape[:-1]}."
            )
        var = var.reshape(x_true.shape[:-1])
    elif posterior_key == "posterior_cov":
        cov = np.asarray(arrays["posterior_cov"], np.float64)
        if cov.ndim == 1:
            var = cov.reshape(x_true.shape[:-1])
        else:
            blocks = _blocks_from_full(cov, n_sources=n_sources, k=k, where=path)
    else:
        raise FormatError(f"{path} holds no posterior_var, posterior_cov_blocks or posterior_cov.")
    if blocks is not None:
        if blocks.shape != (n_sources, k, k):
            raise FormatError(
                f"Covariance blocks in {path} are {blocks.shape}; expected ({n_sources}, {k}, {k})."
            )
        blocks = check_covariance_blocks(
            blocks, f"The covariance blocks ({posterior_key!r}) in {path}"
        )
        var = np.diagonal(blocks, axis1=1, axis2=2).copy()
        if k == 1:
            var, blocks = var[:, 0], None
    var = check_variances(var, f"The posterior variances ({posterior_key!r}) in {path}")
    q_basis = arrays.get("Q_basis")
    if q_basis is not None and (q_basis.ndim != 3 or q_basis.size == 0):
        q_basis = None
    for name, value in (("x_true", x_true), ("x_hat", x_hat)):
        if not np.isfinite(value).all():
            raise NonFiniteError(
                f"The {name} in {path} holds NaN or Inf; the run failed or the file is damaged: "
                "re-create it."
            )
    return PosteriorRun(
        x_true=x_true,
        x_hat=x_hat,
        var=var,
        cov_blocks=blocks,
        Q_basis=q_basis,
        metadata=metadata,
        path=path,
    )


def _source(path: FilePath) -> Path | str:
    """``path`` as recorded in `PosteriorRun.path`: a `Path`, or the URL of a remote file."""
    root, name = file_root(path)
    return as_path(root, name)


def _open_summary(path: FilePath, storage_options: dict | None, read: Any) -> tuple[Any, Any]:
    """``read(handle)`` of a summary file and its ``metadata_json`` attribute, a damaged file a
    `CorruptFileError` naming it."""
    import h5py

    local = local_copy(path, storage_options, what="Posterior summary")
    try:
        with h5py.File(local, "r") as handle:
            return read(handle), handle.attrs.get("metadata_json")
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        # h5py reports damaged superblocks as OSError, damaged object headers, B-trees and
        # attributes as RuntimeError/KeyError/ValueError
        raise CorruptFileError(
            f"Posterior summary {_source(path)} is damaged ({type(exc).__name__}: {exc}); "
            "re-create it."
        ) from exc


def _metadata(raw_meta: Any, path: Path | str) -> dict[str, Any]:
    if isinstance(raw_meta, bytes | np.bytes_):
        try:
            raw_meta = bytes(raw_meta).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptFileError(f"metadata_json of {path} is damaged: {exc}") from exc
    if raw_meta is not None and not isinstance(raw_meta, str):
        raise FormatError(f"metadata_json of {path} is not a JSON string: {raw_meta!r:.80}.")
    try:
        metadata = json.loads(raw_meta) if raw_meta else {}
    except json.JSONDecodeError as exc:
        raise FormatError(f"metadata_json of {path} is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise FormatError(f"metadata_json of {path} is not a JSON object: {raw_meta:.80}.")
    return metadata


def read_posterior_summary(path: FilePath, storage_options: dict | None = None) -> PosteriorRun:
    """Read a CaliBrain ``posterior_summary_*.h5`` file (local path or fsspec URL)."""
    arrays, raw_meta = _open_summary(
        path, storage_options, lambda handle: {k: handle[k][()] for k in _ARRAY_KEYS if k in handle}
    )
    path = _source(path)
    return _build_run(arrays, _metadata(raw_meta, path), path)


def read_summary_metadata(path: FilePath, storage_options: dict | None = None) -> dict[str, Any]:
    """The metadata of a ``posterior_summary_*.h5`` file (its ``metadata_json``), without reading
    its arrays."""
    _, raw_meta = _open_summary(path, storage_options, lambda handle: None)
    return _metadata(raw_meta, _source(path))


def _npz_scalar(value: np.ndarray) -> Any:
    if value.ndim != 0:
        return None
    item = value.item()
    return item if isinstance(item, (str, int, float, bool)) else None


def read_aggregated_run(path: FilePath, storage_options: dict | None = None) -> PosteriorRun:
    """Read an aggregated per-run calibration NPZ (never unpickles; object entries are skipped).

    A JSON sidecar with the same stem, when present, fills metadata the NPZ lacks. ``path`` is
    a local path or an fsspec URL (with ``storage_options``).
    """
    content = read_bytes(path, storage_options, what="Calibration run file")
    root, name = file_root(path, storage_options)
    path = _source(path)
    arrays: dict[str, np.ndarray] = {}
    metadata: dict[str, Any] = {}
    for key, value in read_npz(content, path, what="Calibration run file").arrays.items():
        if key in _ARRAY_KEYS:
            arrays[key] = value
        elif (scalar := _npz_scalar(value)) is not None:
            metadata[key] = scalar
    sidecar = posixpath.splitext(name)[0] + ".json"
    if root.exists(sidecar):
        with root.open(sidecar, mode="r") as handle:
            text = handle.read()
        try:
            info = json.loads(text).get("dataset_info") or {}
        except (json.JSONDecodeError, AttributeError) as exc:
            raise FormatError(
                f"{root.path(sidecar)} is not a JSON object ({exc}); fix or remove it."
            ) from exc
        for key, value in info.items():
            metadata.setdefault(key, value)
    return _build_run(arrays, metadata, path)


def find_files(
    root: FilePath | DataRoot, pattern: str, storage_options: dict | None = None
) -> list[Path | str]:
    """Files below ``root`` (folder or URL) whose name matches ``pattern``, sorted by path.

    Local files come as `Path` objects, remote ones as URLs.
    """
    root = DataRoot(root, storage_options)
    return [
        as_path(root, relpath)
        for relpath in root.files()
        if fnmatch.fnmatch(posixpath.basename(relpath), pattern)
    ]


def find_posterior_summaries(
    root: FilePath | DataRoot, storage_options: dict | None = None
) -> list[Path | str]:
    """All ``posterior_summary_run*_seed*.h5`` files under ``root`` (folder or URL), sorted."""
    return find_files(root, layout.POSTERIOR_SUMMARY_GLOB, storage_options)


def read_run(path: FilePath, storage_options: dict | None = None) -> PosteriorRun:
    """Read a posterior summary (``.h5``) or an aggregated run (``.npz``) by its suffix."""
    suffix = posixpath.splitext(os.fspath(path))[1].lower()
    if suffix in (".h5", ".hdf5"):
        return read_posterior_summary(path, storage_options)
    if suffix == ".npz":
        return read_aggregated_run(path, storage_options)
    raise FormatError(f"{path}: expected a .h5 posterior summary or an aggregated .npz run.")
