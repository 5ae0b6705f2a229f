"""Memory preflight of the ridge encoder: what a fit and its test will hold, what the machine has,
and the voxel chunking that fits, decided before the first batch.

What grows with the voxels (``V``), per voxel, for ``D`` features, ``K`` folds, ``s`` bytes per
statistic (8 for float64, 4 for float32), ``T`` kept trials and batches of ``B`` float32 trials:

* the cross-products ``Xᵀy``, ``K·D·s`` (only when they stay in memory), and ``Σy, Σy²`` per
  fold, ``16·K``;
* the kept trials, ``4·T``, and a batch with its collated copy, ``8·B``;
* the fitted weights ``D·s``, penalties, intercepts and the table of validation scores;
* for the test: the weights again, the per-voxel sums of the scores, of the variance partition and
  of the noise ceiling (one float64 per test image per voxel, twice while the table grows).

What grows with the voxel chunk (``C``): the chunk's cross-products in float64 and the solve's
workspace, about ``(K + 8)·D·8`` bytes per voxel of the chunk. The estimate is the larger of the
fit's and the test's; the plan keeps it under `PLAN_FRACTION` of the available memory
(`available_memory`: ``MemAvailable`` of ``/proc/meminfo``, or less under a cgroup limit).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from neurotorch.errors import CacheError, EncoderMemoryError
from neurotorch.models.cross_products import scratch_dir
from neurotorch.models.ridge_statistics import DTYPES, default_buffer_trials

#: The share of the available memory a fit is planned to use (the rest: the data loader, the
#: allocator's slack, and whatever else runs).
PLAN_FRACTION = 0.8
#: Workspace of one voxel chunk when memory is plentiful (bytes).
CHUNK_WORKSPACE = 1e9
#: What a fit and test hold whatever their size: Lightning's loops, LAPACK workspaces, the
#: report's figure (measured: 0.2–0.3 GB above the process's RSS before the fit).
FIT_OVERHEAD = 300_000_000
TARGET_BYTES = 4  # betas arrive as float32
F64_BYTES = 8


@dataclass(frozen=True)
class EncoderSize:
    """The sizes that set an encoder's memory.

    Attributes
    ----------
    n_features, n_voxels
        ``D`` and ``V``.
    n_folds
        Cross-validation folds.
    n_candidates
        Penalties times band weightings (columns of the validation score table).
    n_spaces
        Feature spaces.
    batch_size
        Trials per batch.
    n_test_images
        Distinct images of the test trials (0: unknown or no test).
    precision
        ``"float64"`` or ``"float32"`` cross-products and weights.
    """

    n_features: int
    n_voxels: int
    n_folds: int = 5
    n_candidates: int = 13
    n_spaces: int = 1
    batch_size: int = 256
    n_test_images: int = 0
    precision: str = "float64"

    @property
    def statistic_bytes(self) -> int:
        return DTYPES[self.precision].itemsize

    def fit_bytes(self, chunk: int, *, on_disk: bool) -> int:
        """Bytes of the fit with voxel chunks of ``chunk`` (cross-products on disk or not)."""
        d, k, s = self.n_features, self.n_folds, self.statistic_bytes
        kept = default_buffer_trials(d)
        per_voxel = (
            2 * k * F64_BYTES  # Σy, Σy² per fold
            + kept * TARGET_BYTES  # the kept trials
            + 2 * self.batch_size * TARGET_BYTES  # a batch and its collated copy
            + d * s  # the fitted weights
            + (self.n_spaces + 2 + self.n_candidates) * F64_BYTES  # penalties, scores
            + (0 if on_disk else k * d * s)  # the cross-products
        )
        per_chunk_voxel = max(
            (k + 8) * d * F64_BYTES + (k * d * s if on_disk else 0),  # solve
            kept * (s + 2 * F64_BYTES) + 2 * k * d * s,  # adding the kept trials to a chunk
        )
        fixed = FIT_OVERHEAD + (k + 4) * d * d * F64_BYTES + kept * d * F64_BYTES
        return fixed + self.n_voxels * per_voxel + min(chunk, self.n_voxels) * per_chunk_voxel

    def test_bytes(self) -> int:
        """Bytes of the test (the weights, the per-voxel sums and a batch)."""
        per_voxel = (
            self.n_features * self.statistic_bytes  # weights
            + (6 + 3 * self.n_spaces + 5 + 12) * F64_BYTES  # scores, partition, report arrays
            + 2 * (self.n_test_images + 1) * F64_BYTES  # noise ceiling sums, while they grow
            + 3 * self.batch_size * TARGET_BYTES  # a batch, its copy, the predictions
        )
        chunk = min(4096, self.n_voxels)  # the test converts batches chunk by chunk
        return self.n_voxels * per_voxel + chunk * self.batch_size * F64_BYTES * (self.n_spaces + 5)

    def need(self, chunk: int, *, on_disk: bool) -> int:
        """Bytes of the fit or the test, whichever is larger."""
        return max(self.fit_bytes(chunk, on_disk=on_disk), self.test_bytes())

    def scratch_bytes(self) -> int:
        """Bytes of the cross-products, in memory or in the scratch file."""
        return self.n_folds * self.n_features * self.n_voxels * self.statistic_bytes

    def chunk_workspace(self, chunk: int) -> int:
        """Bytes that one chunk of ``chunk`` voxels adds."""
        return self.fit_bytes(chunk, on_disk=True) - self.fit_bytes(0, on_disk=True)


@dataclass(frozen=True)
class MemoryPlan:
    """How a fit holds its statistics: ``voxel_chunk`` voxels per chunk, the cross-products in a
    scratch file (``on_disk``) or in memory; ``need`` bytes estimated against ``available``
    (None: unknown) from ``source``."""

    voxel_chunk: int
    on_disk: bool
    need: int
    available: int | None
    source: str

    def describe(self, size: EncoderSize) -> str:
        where = "in a scratch file" if self.on_disk else "in memory"
        return (
            f"{size.n_voxels:,} voxels × {size.n_features:,} features: about "
            f"{_gb(self.need)} ({self.need / size.n_voxels / 1e3:.1f} kB per voxel), "
            f"{size.precision} cross-products {where}, chunks of {self.voxel_chunk:,} voxels"
        )


def plan_memory(
    size: EncoderSize,
    voxel_chunk: int | None = None,
    available: tuple[int | None, str] | None = None,
    scratch_free: int | None = None,
) -> MemoryPlan:
    """The chunking of a fit of ``size`` that fits the available memory.

    ``voxel_chunk`` None chooses: everything in memory with chunks of about `CHUNK_WORKSPACE`
    bytes of workspace when that fits, else the cross-products in a scratch file and the largest
    such chunk that fits. A ``voxel_chunk`` below the voxel count puts the cross-products in a
    scratch file. ``available`` is ``(bytes, source)`` (default `available_memory`);
    ``scratch_free`` the bytes free for the scratch file (default: measured on the disk of
    ``NEUROTORCH_CACHE``). Give both to plan for another machine.

    Raises
    ------
    EncoderMemoryError
        The fit would not fit: the message gives the voxel count, the estimate, the available
        memory, and the ``voxel_chunk`` to use (or how many voxels fit at all).
    CacheError
        The scratch file would not fit in ``scratch_free`` (the disk of ``NEUROTORCH_CACHE``).
    """
    free, source = available if available is not None else available_memory()
    budget = math.inf if free is None else free * PLAN_FRACTION
    if voxel_chunk is None:
        chunk = _largest_chunk(size, CHUNK_WORKSPACE)
        on_disk = size.need(chunk, on_disk=False) > budget
        if on_disk:
            chunk = _largest_chunk(size, min(CHUNK_WORKSPACE, budget - size.need(0, on_disk=True)))
    else:
        chunk = min(voxel_chunk, size.n_voxels)
        on_disk = chunk < size.n_voxels
    need = size.need(chunk, on_disk=on_disk)
    if chunk < 1 or need > budget:
        raise EncoderMemoryError(_refusal(size, free, source, budget=budget, asked=voxel_chunk))
    if on_disk:
        _check_scratch_space(size.scratch_bytes(), scratch_free)
    return MemoryPlan(chunk, on_disk, need, available=free, source=source)


def _largest_chunk(size: EncoderSize, workspace: float) -> int:
    """The most voxels (at most all) whose chunk workspace stays within ``workspace`` bytes."""
    per_voxel = size.chunk_workspace(1)
    return int(min(size.n_voxels, max(0, workspace) // per_voxel))


def _refusal(
    size: EncoderSize, free: int | None, source: str, budget: float, *, asked: int | None
) -> str:
    in_memory = size.need(_largest_chunk(size, CHUNK_WORKSPACE), on_disk=False)
    said = (
        f"LinearEncoder: fitting {size.n_voxels:,} voxels × {size.n_features:,} features "
        f"({size.n_folds} folds, {size.precision} statistics) needs about {_gb(in_memory)} with "
        f"its statistics in memory ({in_memory / size.n_voxels / 1e3:.1f} kB per voxel)"
    )
    if asked is not None:
        chunked = size.need(min(asked, size.n_voxels), on_disk=asked < size.n_voxels)
        said += f", {_gb(chunked)} with voxel_chunk={asked:,}"
    said += (
        f", but {_gb(free)} are available ({source}; a fit is planned within "
        f"{PLAN_FRACTION:.0%} of it, {_gb(budget)})."
    )
    room = min(CHUNK_WORKSPACE, budget - size.need(0, on_disk=True))
    chunk = _largest_chunk(size, room)
    if chunk >= 1:
        return said + (
            f" Use voxel_chunk={chunk:,} (or leave voxel_chunk unset to choose it): the "
            f"cross-products ({_gb(size.scratch_bytes())}) then go to a scratch file under "
            f"{scratch_dir()}, and the fit needs about {_gb(size.need(chunk, on_disk=True))}."
        )
    fits = _most_voxels(size, budget)
    return said + (
        f" Even with the cross-products in a scratch file, the weights, the kept trials and the "
        f"test's sums leave room for about {fits:,} voxels. Select fewer voxels (voxels: roi or "
        "nc_threshold), use precision: float32 (half the weights and statistics) or a smaller "
        "batch_size, or run on a machine with more memory."
    )


def _most_voxels(size: EncoderSize, budget: float) -> int:
    """The most voxels whose fit (cross-products in a scratch file, one-voxel chunks) fits."""
    low, high = 0, size.n_voxels
    while low < high:
        middle = (low + high + 1) // 2
        if replace(size, n_voxels=middle).need(1, on_disk=True) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def _check_scratch_space(nbytes: int, free: int | None) -> None:
    folder = scratch_dir()
    if free is None:
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        free = shutil.disk_usage(existing).free
    if nbytes > free:
        raise CacheError(
            f"The fit's cross-products need {_gb(nbytes)} of scratch space in {folder}, but "
            f"{_gb(free)} are free there: set NEUROTORCH_CACHE to a folder with room, or use "
            "precision='float32' (half the size)."
        )


def _gb(nbytes: float | None) -> str:
    return "an unknown amount" if nbytes is None else f"{nbytes / 1e9:.2f} GB"


def available_memory(
    proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")
) -> tuple[int | None, str]:
    """Bytes this process can still take, and where the number comes from.

    ``MemAvailable`` of ``proc/meminfo``, or less where a cgroup memory limit (version 2
    ``memory.max``, version 1 ``memory.limit_in_bytes``) of this process or of a cgroup above it
    leaves less: the limit minus the usage, plus the usage's reclaimable page cache
    (``inactive_file``). ``(None, why)`` where neither can be read (not Linux).
    """
    found: list[tuple[int, str]] = []
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"))
    except OSError:
        pass
    found += _cgroup_headroom(proc, cgroups)
    if not found:
        return None, "no /proc/meminfo: the available memory is unknown"
    return min(found)


def _cgroup_headroom(proc: Path, cgroups: Path) -> list[tuple[int, str]]:
    """``(limit − usage + inactive file pages, folder)`` of every limited cgroup above us."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # version 2
            files = ("memory.max", "memory.current", "inactive_file")
            base = cgroups if (cgroups / "cgroup.controllers").exists() else cgroups / "unified"
        elif "memory" in controllers.split(","):
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
            base = cgroups / "memory"
        else:
            continue
        folder = base / path.lstrip("/")
        for level in (folder, *folder.parents):
            headroom = _headroom(level, files)
            if headroom is not None:
                found.append((headroom, f"the cgroup limit of {level}"))
            if level == base:
                break
    return found


def _headroom(folder: Path, files: tuple[str, str, str]) -> int | None:
    limit_file, usage_file, reclaimable_key = files
    try:
        limit = (folder / limit_file).read_text().strip()
        usage = int((folder / usage_file).read_text())
    except (OSError, ValueError):
        return None
    if limit == "max" or int(limit) >= 2**60:  # no limit
        return None
    reclaimable = 0
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, value = line.split()
            if key == reclaimable_key:
                reclaimable = int(value)
    except (OSError, ValueError):
        pass
    return max(0, int(limit) - usage + reclaimable)
