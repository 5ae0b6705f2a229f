"""The units of work of an extraction (`neurotorch.parallel`): one chunk of images through one
model, and the PCA fits that must come before the chunks they project."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from neurotorch.features.cache import FeatureEntry
from neurotorch.features.forward import ExtractionJob
from neurotorch.features.pooling import fit_pca, pca_sample_rows, pool
from neurotorch.features.spec import FeatureSpec


@dataclass
class ChunkUnit:
    """One chunk of images through one model: a unit of work of `neurotorch.parallel`."""

    job: ExtractionJob
    chunk: int

    @property
    def key(self) -> str:
        return f"features/{self.job.group}/chunk-{self.chunk:05d}"

    @property
    def lock_path(self) -> Path:
        return self.job.lock_dir / f"{self.job.group}-{self.chunk:05d}.lock"

    @property
    def rows(self) -> tuple[int, int]:
        return self.job.spans[self.chunk]

    def missing(self) -> list[tuple[FeatureSpec, FeatureEntry]]:
        return [
            (spec, entry)
            for spec, entry in zip(self.job.specs, self.job.entries, strict=True)
            if not entry.has_chunk(self.chunk, self.rows)
        ]

    def done(self) -> bool:
        return not self.missing()

    def run(self) -> dict[str, Any]:
        pairs = self.missing()
        values = self.job.compute(np.arange(*self.rows), pairs)
        for spec, entry in pairs:
            entry.write_chunk(self.chunk, self.rows, values[spec.name])
        return {"chunk": self.chunk, "images": self.rows[1] - self.rows[0], "pid": os.getpid()}


@dataclass
class PcaUnit:
    """The PCA fits of one model's ``pooling="pca"`` specs (before any of their chunks)."""

    job: ExtractionJob

    @property
    def key(self) -> str:
        return f"features/{self.job.group}/pca"

    @property
    def lock_path(self) -> Path:
        return self.job.lock_dir / f"{self.job.group}-pca.lock"

    def missing(self) -> list[tuple[FeatureSpec, FeatureEntry]]:
        return [
            (spec, entry)
            for spec, entry in zip(self.job.specs, self.job.entries, strict=True)
            if spec.pooling == "pca" and not entry.has_pca()
        ]

    def done(self) -> bool:
        return not self.missing()

    def run(self) -> dict[str, Any]:
        n_images = self.job.spans[-1][1]
        samples: dict[tuple[int, int], list[tuple[FeatureSpec, FeatureEntry]]] = {}
        for spec, entry in self.missing():
            samples.setdefault((spec.pca_images, spec.seed), []).append((spec, entry))
        for (pca_images, seed), pairs in samples.items():
            rows = pca_sample_rows(n_images, pca_images, seed)
            flat: dict[str, list[torch.Tensor]] = {spec.layer: [] for spec, _ in pairs}
            for outputs in self.job.layer_outputs(rows, list(flat)):
                for layer, parts in flat.items():
                    parts.append(pool(outputs[layer], "flatten", layer=layer).cpu())
            for spec, entry in pairs:
                k = cast(int, spec.k)  # a pca spec has k
                fitted = fit_pca(torch.cat(flat[spec.layer]), k, layer=spec.layer)
                entry.write_pca({**fitted, "rows": rows})
        return {"fitted": sum(len(p) for p in samples.values()), "pid": os.getpid()}
