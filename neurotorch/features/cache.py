"""The feature cache: one folder per feature space, one file per chunk of images, verified on read.

Layout, under ``$NEUROTORCH_CACHE/features/`` (never inside a dataset folder)::

    <entry>/key.json           the key parts: model identity, layer, pooling, transform,
                               stimulus set version, chunk size (written when the entry is made)
    <entry>/chunk-00000.npy    float32 (rows, D): rows [0, chunk_size) of the stimulus set
    <entry>/chunk-00000.json   its record: rows, shape, size and CRC-32 of the .npy (written after it)
    <entry>/pca.npz, pca.json  the fitted PCA of ``pooling="pca"`` and its record
    <entry>/manifest.json      written last, once every chunk of the stimulus set is there:
                               shape, and every chunk's rows, size and CRC-32
    locks/                     one lock per chunk of a model's forward pass

``<entry>`` is the first 24 hex digits of the SHA-256 of ``key.json``'s content, so any change
of a key part (other weights, another layer, pooling or transform, a changed stimulus file) is
another entry, computed afresh; the old one stays until the folder is deleted (always safe).
Every file is written atomically (`neurotorch.io.atomic`): a run killed at any point leaves
finished chunks complete and unfinished ones absent, and the next run computes only those. A
chunk counts as present when its record matches its ``.npy`` (size and CRC-32); a damaged chunk
is recomputed with a warning naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurotorch.config import cache_dir as default_cache_dir
from neurotorch.errors import CacheError
from neurotorch.io.atomic import temporary_paths, write_bytes, write_json

log = logging.getLogger(__name__)

#: Version of the cache layout and of the computations behind it; part of every key.
FORMAT = 1
FOLDER = "features"
KEY_FILE, MANIFEST_FILE, PCA_FILE = "key.json", "manifest.json", "pca.npz"


def features_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of every feature entry: ``<cache_dir>/features`` (``NEUROTORCH_CACHE`` by
    default)."""
    return Path(cache_dir or default_cache_dir()).expanduser() / FOLDER


def entry_name(parts: dict[str, Any]) -> str:
    """The folder name of the entry with these key parts (the ``about`` of `FeatureEntry.create` is
    not part of them)."""
    text = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _crc32(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _parse_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
        return {key: loaded[key] for key in loaded.files}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class FeatureEntry:
    """One feature space in the cache (a folder; see the module docstring)."""

    directory: Path

    @property
    def name(self) -> str:
        return self.directory.name

    def key_parts(self) -> dict[str, Any] | None:
        """The hashed part of ``key.json`` (None if it is missing)."""
        key = _read_json(self.directory / KEY_FILE)
        return None if key is None else {k: v for k, v in key.items() if k != "about"}

    def key(self) -> dict[str, Any]:
        """The content of ``key.json``: the key parts and ``about``."""
        key = _read_json(self.directory / KEY_FILE)
        if key is None:
            raise CacheError(
                f"{self.directory / KEY_FILE} is missing or unreadable; delete "
                f"{self.directory} (it is recomputed on demand)."
            )
        return key

    def create(self, parts: dict[str, Any], about: dict[str, Any]) -> None:
        """Make the folder and write ``key.json`` (once): the key ``parts`` and, outside the key,
        ``about`` (the first name and dataset root it was made for)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if (self.key_parts() or {}) != {"format": FORMAT, **parts}:
                write_json(self.directory / KEY_FILE, {"format": FORMAT, **parts, "about": about})
        except OSError as exc:
            raise CacheError(
                f"cannot write the feature cache in {self.directory} ({exc}); free space or "
                "point NEUROTORCH_CACHE (cache_dir=) at a writable folder."
            ) from exc

    # -- chunks -----------------------------------------------------------------------------------

    def chunk_path(self, chunk: int) -> Path:
        return self.directory / f"chunk-{chunk:05d}.npy"

    def record_path(self, chunk: int) -> Path:
        return self.directory / f"chunk-{chunk:05d}.json"

    def _verified(self, chunk: int, rows: tuple[int, int]) -> tuple[bytes | None, str | None]:
        """The chunk's bytes if present and intact, else ``None`` and what is wrong."""
        record = _read_json(self.record_path(chunk))
        if record is None:
            return None, "missing"
        try:
            data = self.chunk_path(chunk).read_bytes()
        except OSError:
            return None, "its .npy is missing"
        if tuple(record.get("rows", ())) != tuple(rows):
            return None, f"it holds rows {record.get('rows')}, not {list(rows)}"
        if len(data) != record.get("size") or _crc32(data) != record.get("crc32"):
            return None, f"its size or CRC-32 differs from {self.record_path(chunk).name}"
        return data, None

    def load_chunk(self, chunk: int, rows: tuple[int, int]) -> np.ndarray | None:
        """The chunk's values if present and intact, else ``None``; a damaged chunk's record is
        removed with a warning naming the file, so that it is computed again."""
        data, damage = self._verified(chunk, rows)
        if data is not None:
            return np.load(io.BytesIO(data), allow_pickle=False)
        if damage != "missing":
            log.warning(
                "features: %s is damaged (%s); it is computed again",
                self.chunk_path(chunk),
                damage,
            )
            self.record_path(chunk).unlink(missing_ok=True)
        return None

    def has_chunk(self, chunk: int, rows: tuple[int, int]) -> bool:
        """Whether the chunk is present and intact (a damaged one is dropped, as `load_chunk`)."""
        return self.load_chunk(chunk, rows) is not None

    def read_chunk(self, chunk: int, rows: tuple[int, int]) -> np.ndarray:
        """The chunk's values, checked against its record (`CacheError` if absent or damaged)."""
        values = self.load_chunk(chunk, rows)
        if values is None:
            raise CacheError(
                f"{self.chunk_path(chunk)} is missing or does not match its record "
                f"{self.record_path(chunk).name} (rows, size or CRC-32): it was removed or "
                "damaged after it was written; run the extraction again to recompute it."
            )
        return values

    def write_chunk(self, chunk: int, rows: tuple[int, int], values: np.ndarray) -> None:
        """Write a chunk's ``.npy`` then its record (both atomically)."""
        values = np.asarray(values, dtype=np.float32)
        if values.shape[0] != rows[1] - rows[0]:
            raise CacheError(f"chunk {chunk} has {values.shape[0]} rows, expected {rows}.")
        data = _npy_bytes(values)
        path = self.chunk_path(chunk)
        try:
            for stale in temporary_paths(path):
                stale.unlink(missing_ok=True)
            write_bytes(path, data)
            write_json(
                self.record_path(chunk),
                {
                    "rows": list(rows),
                    "shape": list(values.shape),
                    "size": len(data),
                    "crc32": _crc32(data),
                },
            )
        except OSError as exc:
            raise CacheError(
                f"cannot write {path} ({exc}); free space or point NEUROTORCH_CACHE at a "
                "writable folder. Finished chunks are kept."
            ) from exc

    def read_rows(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """Rows of the stimulus set (metadata order), in the order given, as float32
        ``(len(rows), D)``: each chunk they fall in is read once and checked against its record
        (`CacheError` if one is missing or damaged). Needs no model, in any process."""
        key = self.key()
        size, n_images = int(key["chunk_size"]), int(key["stimuli"]["n_images"])
        rows = np.asarray(rows, dtype=np.int64).ravel()
        blocks = {
            int(chunk): self.read_chunk(
                int(chunk), (int(chunk) * size, min((int(chunk) + 1) * size, n_images))
            )
            for chunk in np.unique(rows // size)
        }
        dim = next(iter(blocks.values())).shape[1] if blocks else 0
        out = np.empty((len(rows), dim), dtype=np.float32)
        for chunk, block in blocks.items():
            where = np.flatnonzero(rows // size == chunk)
            out[where] = block[rows[where] - chunk * size]
        return out

    def chunks_present(self) -> list[int]:
        """Chunks that have a record (not verified)."""
        return sorted(int(p.stem.split("-")[1]) for p in self.directory.glob("chunk-*.json"))

    # -- PCA --------------------------------------------------------------------------------------

    def write_pca(self, fitted: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **fitted)  # type: ignore[arg-type]  # numpy stubs match ** to allow_pickle
        data = buffer.getvalue()
        write_bytes(self.directory / PCA_FILE, data)
        write_json(self.directory / "pca.json", {"size": len(data), "crc32": _crc32(data)})

    def has_pca(self) -> bool:
        record = _read_json(self.directory / "pca.json")
        try:
            data = (self.directory / PCA_FILE).read_bytes()
        except OSError:
            return False
        return record is not None and _crc32(data) == record.get("crc32")

    def read_pca(self) -> dict[str, np.ndarray]:
        if not self.has_pca():
            raise CacheError(
                f"{self.directory / PCA_FILE} is missing or does not match pca.json; run the "
                "extraction again to refit it."
            )
        return _parse_npz((self.directory / PCA_FILE).read_bytes())

    # -- the manifest -----------------------------------------------------------------------------

    def write_manifest(self, spans: list[tuple[int, int]]) -> None:
        """Write ``manifest.json`` from the chunk records (every chunk of the set present)."""
        chunks, dim = [], None
        for chunk, rows in enumerate(spans):
            record = _read_json(self.record_path(chunk))
            if record is None:
                raise CacheError(f"{self.record_path(chunk)} is missing; run the extraction.")
            dim = record["shape"][1]
            chunks.append({"file": self.chunk_path(chunk).name, **record, "rows": list(rows)})
        n_images = spans[-1][1] if spans else 0
        write_json(
            self.directory / MANIFEST_FILE,
            {"format": FORMAT, "shape": [n_images, dim], "chunks": chunks},
        )

    def manifest(self) -> dict[str, Any] | None:
        return _read_json(self.directory / MANIFEST_FILE)

    def describe(self) -> dict[str, Any]:
        """Key parts, shape, chunks present of all, size on disk, and whether it is complete."""
        key = self.key()
        n_images = key["stimuli"]["n_images"]
        chunk_size = key["chunk_size"]
        n_chunks = -(-n_images // chunk_size)
        present = self.chunks_present()
        dim = None
        if present:
            record = _read_json(self.record_path(present[0])) or {}
            dim = (record.get("shape") or [None, None])[1]
        size = sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())
        return {
            "entry": self.name,
            "path": str(self.directory),
            "name": key.get("about", {}).get("name"),
            "model": key["model"],
            "layer": key["layer"],
            "pooling": key["pooling"],
            "transform": key["transform"],
            "stimuli": key["stimuli"],
            "chunk_size": chunk_size,
            "shape": [n_images, dim],
            "chunks": [len(present), n_chunks],
            "complete": self.manifest() is not None,
            "bytes": size,
        }


def list_entries(cache_dir: str | os.PathLike | None = None) -> list[FeatureEntry]:
    """Every entry of the feature cache (folders with a ``key.json``), by name."""
    root = features_root(cache_dir)
    if not root.is_dir():
        return []
    return [FeatureEntry(p) for p in sorted(root.iterdir()) if (p / KEY_FILE).is_file()]


def find_entry(text: str, cache_dir: str | os.PathLike | None = None) -> FeatureEntry:
    """The entry named by its folder, its name or a unique prefix of it."""
    from neurotorch.errors import ParameterError

    path = Path(text).expanduser()
    if (path / KEY_FILE).is_file():
        return FeatureEntry(path)
    matches = [e for e in list_entries(cache_dir) if e.name.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    known = [e.name for e in list_entries(cache_dir)]
    raise ParameterError(
        f"{text!r} names {'no' if not matches else len(matches)} entries of the feature cache "
        f"in {features_root(cache_dir)}"
        + (f"; the entries: {known[:10]}" if known else " (it is empty)")
        + ". `neurotorch features list` lists them."
    )
