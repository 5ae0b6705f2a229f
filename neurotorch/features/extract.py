"""Extraction: a model's layers over the stimulus set, chunk by chunk, into the feature cache.

`extract_features` groups the specs that share a model (and preprocessing) into one forward
pass, keys each feature space by content (`neurotorch.features.cache`), and runs one unit of
work (`neurotorch.parallel`) per chunk of images whose features are missing: in this process,
on ``workers`` local processes or on a Dask cluster (``scheduler``). `load_features` returns the
``(n_images, D)`` matrices, computing what the cache lacks first.

**Ranks.** Chunk ``c`` belongs to rank ``c % world_size``. The rank comes from
``ExtractionOptions(rank=, world_size=)``, else from the initialised ``torch.distributed``
process group, else from ``RANK``/``WORLD_SIZE`` (torchrun). `extract_features` computes only
its rank's chunks (one task of a job array, one DDP rank); `load_features` computes its rank's
chunks first and then any chunk still missing, since every rank needs the whole matrix. Each
chunk is computed under a file lock and skipped once present, so no image is computed twice and
no rank waits for another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from filelock import FileLock

from neurotorch._docs import fill_doc
from neurotorch._options import as_names, check_bool, check_int
from neurotorch.config import check_device
from neurotorch.errors import NameNotFoundError, ParameterError
from neurotorch.features.cache import FeatureEntry, entry_name, features_root
from neurotorch.features.forward import ExtractionJob, check_layers, loaded_model
from neurotorch.features.spec import FeatureSpec, as_specs
from neurotorch.features.transforms import transform_identity
from neurotorch.features.units import ChunkUnit, PcaUnit
from neurotorch.fmri import layout
from neurotorch.fmri.datafiles import require, resolve_root
from neurotorch.fmri.stimuli import Stimuli
from neurotorch.io.storage import DataRoot
from neurotorch.parallel import run_units

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractionOptions:
    """How an extraction runs (none of these change the features, except ``chunk_size``, which
    is part of the cache key).

    Parameters
    ----------
    device
        Where the model runs: ``None`` picks ``"cuda"`` when available, else ``"cpu"``.
    batch_size
        Images per forward pass.
    num_workers
        ``DataLoader`` worker processes that read, decode and preprocess the images (0: in the
        process that runs the model).
    chunk_size
        Images per chunk: per cache file and per unit of work.
    workers
        Local processes that run units (see `neurotorch.parallel.run_units`); ``None`` runs them
        in this process.
    scheduler
        A Dask scheduler address, ``Client`` or cluster that runs the units.
    rank, world_size
        This process's share of the chunks (see the module docstring); default from
        ``torch.distributed`` or ``RANK``/``WORLD_SIZE``.
    cache_dir
        Cache folder; the entries go to ``<cache_dir>/features`` (default ``NEUROTORCH_CACHE``).
    progress
        Show a progress bar over the chunks (default: ``NEUROTORCH_PROGRESS``).
    """

    device: str | None = None
    batch_size: int = 64
    num_workers: int = 0
    chunk_size: int = 256
    workers: int | None = None
    scheduler: Any = None
    rank: int | None = None
    world_size: int | None = None
    cache_dir: str | os.PathLike | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("num_workers", self.num_workers, minimum=0)
        check_int("chunk_size", self.chunk_size, minimum=1)
        if self.workers is not None:
            check_int("workers", self.workers, minimum=1)
        if (self.rank is None) != (self.world_size is None):
            raise ParameterError("give rank= and world_size= together, or neither.")
        if self.world_size is not None:
            check_int("world_size", self.world_size, minimum=1)
            check_int("rank", self.rank, minimum=0, maximum=self.world_size - 1)
        if self.progress is not None:
            check_bool("progress", self.progress)
        resolve_device(self.device)


def resolve_device(device: str | None) -> torch.device:
    """``device`` as a ``torch.device`` this machine has (`neurotorch.config.check_device`);
    ``None``: CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(device)


def rank_and_world_size(options: ExtractionOptions) -> tuple[int, int]:
    """This process's rank and the number of ranks (see the module docstring)."""
    if options.rank is not None and options.world_size is not None:  # given together
        return int(options.rank), int(options.world_size)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0, 1
    return (rank, world_size) if 0 <= rank < world_size else (0, 1)


# -- planning -----------------------------------------------------------------------------------


def stimulus_version(root: DataRoot, stimuli: Stimuli) -> dict[str, Any]:
    """The stimulus set's version: its image names in order and the images file's size and
    version (modification time locally, ETag on object stores)."""
    require(root, layout.stimuli_images(), "Stimulus images", stimuli=True)
    names = stimuli.images.names()
    info = root.info(layout.stimuli_images())
    return {
        "n_images": len(names),
        "names_sha": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16],
        "images_file": {"size": int(info["size"]), "version": str(info["version"])},
    }


def _check_cache_outside(root: DataRoot, folder: Path) -> None:
    if root.is_local and folder.resolve().is_relative_to(Path(root.url)):
        raise ParameterError(
            f"the feature cache {folder} lies inside the dataset folder {root.url}; neurotorch "
            "never writes into a dataset: point cache_dir= (NEUROTORCH_CACHE) elsewhere."
        )


def _groups(specs: Sequence[FeatureSpec]) -> list[list[FeatureSpec]]:
    """Specs that share one model and preprocessing, in order of first appearance."""
    groups: dict[str, list[FeatureSpec]] = {}
    for spec in specs:
        transform = None if spec.transform is None else transform_identity(spec.transform)
        key = json.dumps([spec.recipe(), transform], sort_keys=True, default=str)
        groups.setdefault(key, []).append(spec)
    return list(groups.values())


def plan(
    specs: Sequence[FeatureSpec],
    root: DataRoot,
    options: ExtractionOptions,
) -> tuple[list[ExtractionJob], list[tuple[int, int]], dict[str, int]]:
    """The jobs (one per model group, entries created), the chunk spans of the stimulus set, and
    each image name's row."""
    folder = features_root(options.cache_dir)
    _check_cache_outside(root, folder)
    with Stimuli(root) as stimuli:
        version = stimulus_version(root, stimuli)
        row_of = dict(stimuli.row_index)
    n_images, size = version["n_images"], options.chunk_size
    spans = [(start, min(start + size, n_images)) for start in range(0, n_images, size)]
    device = resolve_device(options.device)
    settings = {
        "device": device,
        "batch_size": options.batch_size,
        "num_workers": options.num_workers,
        "lock_dir": folder / "locks",
        "stimuli": version,
    }
    jobs = []
    for group in _groups(specs):
        loaded = loaded_model(group[0], device)
        check_layers(loaded.module, group)
        transform = group[0].transform or loaded.transform
        identity = {"model": loaded.identity, "transform": transform_identity(transform)}
        entries = []
        for spec in group:
            parts = {
                "model": loaded.identity,
                "layer": spec.layer,
                "pooling": spec.pooling_identity(),
                "transform": identity["transform"],
                "stimuli": version,
                "chunk_size": size,
            }
            entry = FeatureEntry(folder / entry_name(parts))
            entry.create(parts, about={"name": spec.name, "root": root.url})
            entries.append(entry)
        (folder / "locks").mkdir(parents=True, exist_ok=True)
        job = ExtractionJob(
            root=root,
            specs=group,
            entries=entries,
            identity=identity,
            spans=spans,
            settings=settings,
        )
        job.adopt(loaded, transform)
        jobs.append(job)
    return jobs, spans, row_of


def _image_names(images: str | Sequence[str] | None) -> list[str] | None:
    """``images`` as a list of names: one string is one name, never its characters."""
    return None if images is None else as_names("images", images)


def _chunks_of(
    names: Sequence[str] | None, row_of: dict[str, int], *, size: int, n_images: int
) -> list[int]:
    if names is None:
        return list(range(-(-n_images // size)))
    unknown = [name for name in names if name not in row_of]
    if unknown:
        raise NameNotFoundError(
            f"{len(unknown)} image(s) are not in the stimulus set (e.g. {unknown[:3]})."
        )
    return sorted({row_of[name] // size for name in names})


def run_here(unit: ChunkUnit | PcaUnit) -> bool:
    """Run one unit in this process under its lock unless it is done; whether it ran.

    The first chunk (and the PCA fit) of a job run here before any unit is dispatched, so that a
    layer, pooling or preprocessing that does not fit the model fails at once with its own
    error, and no worker starts for nothing.
    """
    with FileLock(str(unit.lock_path)):
        if unit.done():
            return False
        unit.run()
        return True


def _run(
    jobs: Sequence[ExtractionJob],
    chunks: Sequence[int],
    options: ExtractionOptions,
    *,
    help_others: bool,
) -> tuple[int, int]:
    """Run the PCA fits, then the chunks of this rank (and, with ``help_others``, the rest);
    ``(chunks computed, chunks this process was responsible for)``, over every job."""
    rank, world_size = rank_and_world_size(options)
    own = [c for c in chunks if c % world_size == rank]
    order = own + ([c for c in chunks if c % world_size != rank] if help_others else [])
    computed = 0
    engine = {"workers": options.workers, "scheduler": options.scheduler}
    for job in jobs:
        if any(spec.pooling == "pca" for spec in job.specs):
            run_here(PcaUnit(job))
        units = [ChunkUnit(job, chunk) for chunk in order]
        if units:
            computed += run_here(units[0])
        label = f"features {job.specs[0].model_label}"
        for result in run_units(units[1:], progress=options.progress, desc=label, **engine):
            computed += result.status == "ran"
        for entry in job.entries:
            if entry.manifest() is None and set(entry.chunks_present()) >= set(
                range(len(job.spans))
            ):
                entry.write_manifest(job.spans)
    return computed, len(order) * len(jobs)


def _fill(
    features: Any,
    data_dir: Any,
    *,
    images: Sequence[str] | None,
    options: ExtractionOptions | None,
    storage_options: dict | None,
    help_others: bool,
) -> dict[str, FeatureEntry]:
    """What `extract_features` and `prepare_features` share: plan, run, report; the entries."""
    specs = as_specs(features)
    names = [cast(str, spec.name) for spec in specs]  # FeatureSpec names every spec
    images = _image_names(images)
    options = options if options is not None else ExtractionOptions()
    if not isinstance(options, ExtractionOptions):
        raise ParameterError(f"options must be an ExtractionOptions, got {options!r}.")
    jobs, spans, row_of = plan(specs, resolve_root(data_dir, storage_options), options)
    n_images = spans[-1][1] if spans else 0
    chunks = _chunks_of(images, row_of, size=options.chunk_size, n_images=n_images)
    computed, considered = _run(jobs, chunks, options, help_others=help_others)
    log.info(
        "features: %d chunk(s) computed, %d already in the cache, for %s",
        computed,
        considered - computed,
        ", ".join(names),
    )
    entries = {
        cast(str, spec.name): entry
        for job in jobs
        for spec, entry in zip(job.specs, job.entries, strict=True)
    }
    return {name: entries[name] for name in names}


@fill_doc
def extract_features(
    features: FeatureSpec | dict | Sequence[FeatureSpec | dict],
    data_dir: str | os.PathLike | DataRoot | None = None,
    *,
    images: Sequence[str] | None = None,
    options: ExtractionOptions | None = None,
    storage_options: dict | None = None,
) -> list[FeatureEntry]:
    """Compute the features of this rank's chunks that the cache lacks; return the entries.

    Parameters
    ----------
    %(feature_specs)s
    %(features_data_dir)s
    images
        Image names whose chunks are needed (default: the whole stimulus set).
    %(feature_options)s
    %(storage_options)s

    Returns
    -------
    list of FeatureEntry
        The cache entry of each spec, in order (``entry.describe()`` summarises one).
    """
    entries = _fill(
        features,
        data_dir,
        images=images,
        options=options,
        storage_options=storage_options,
        help_others=False,
    )
    return list(entries.values())


@fill_doc
def prepare_features(
    features: FeatureSpec | dict | Sequence[FeatureSpec | dict],
    data_dir: str | os.PathLike | DataRoot | None = None,
    *,
    images: Sequence[str] | None = None,
    options: ExtractionOptions | None = None,
    storage_options: dict | None = None,
) -> dict[str, FeatureEntry]:
    """Make sure the cache holds every chunk of ``images``; return each spec's entry, by name.

    Missing chunks are computed: this rank's first, then any other still missing (see the module
    docstring), so every rank ends with the whole set. Present chunks are checked against their
    CRC-32. The entries are small and picklable: `FeatureEntry.read_rows` reads rows of them in
    any process, without the model (what the fMRI datasets' workers do).

    Parameters
    ----------
    %(feature_specs)s
    %(features_data_dir)s
    images
        Image names whose chunks are needed (default: the whole stimulus set).
    %(feature_options)s
    %(storage_options)s
    """
    return _fill(
        features,
        data_dir,
        images=images,
        options=options,
        storage_options=storage_options,
        help_others=True,
    )


@fill_doc
def load_features(
    features: FeatureSpec | dict | Sequence[FeatureSpec | dict],
    data_dir: str | os.PathLike | DataRoot | None = None,
    *,
    images: Sequence[str] | None = None,
    options: ExtractionOptions | None = None,
    storage_options: dict | None = None,
) -> dict[str, np.ndarray]:
    """The ``(n_images, D)`` float32 matrix of each spec, rows in the order of ``images``.

    `prepare_features` first (missing chunks computed, present ones checked), then the rows read
    from the cache.

    Parameters
    ----------
    %(feature_specs)s
    %(features_data_dir)s
    images
        Image names, in the order of the rows wanted (default: the whole stimulus set in
        metadata order).
    %(feature_options)s
    %(storage_options)s

    Returns
    -------
    dict
        Feature space name → ``(len(images), D)`` float32 array.
    """
    entries = prepare_features(
        features, data_dir, images=images, options=options, storage_options=storage_options
    )
    images = _image_names(images)
    with Stimuli(resolve_root(data_dir, storage_options)) as stimuli:
        rows = np.arange(len(stimuli.images)) if images is None else stimuli.rows(images)
    return {name: entry.read_rows(rows) for name, entry in entries.items()}
