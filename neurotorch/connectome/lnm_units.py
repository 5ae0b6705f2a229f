"""Lesion network mapping as units of work (`neurotorch.parallel`), reduced exactly.

`plan_network_map` writes a plan into a folder of its own (the *units folder*, on a file system
that every worker sees); `NetworkMapPlan.run` runs its units stage by stage, in this process, on
local workers or on a Dask cluster, and returns the `NetworkMapResult` that `network_map` gives.
Each unit is one connectome batch file (or one chunk of permutations) × one batch of lesions; it
writes its outputs atomically, its manifest last, so a rerun skips it and a lost worker costs only
it. The stages, in order:

``pini`` (``method="pini"`` only)
    each subject's correlation of every lesion voxel with the lesion mean. The seeds of a batch of
    lesions are chosen from the rows of all subjects at once, as `network_map` does (by the first
    ``maps`` unit that needs them).
``maps``
    the Fisher z maps of the file's subjects, summed in float64 around the file's first subject
    (`neurotorch.connectome.stats.ShiftedSums`); with permutations, every subject's z maps too.
``permutations`` (``n_permutations > 0`` only)
    for a chunk of the run's sign flips (the rows of `sign_flips` with the run's seed), the max |t|
    of each flip and, per voxel, how many of them reach its observed |t|.

`NetworkMapPlan.result` merges the sums file by file in file order (`ShiftedSums.merge`) and adds
up the counts of the chunks: FWER p = (1 + count) / (P + 1), as in one process.

Same results: every unit computes on one thread and the reduction has a fixed order, so the maps
are byte-identical whatever the number of workers or where each unit ran (on machines of one CPU
kind: another kind may make the math library choose other kernels; MKL's ``MKL_CBWR`` pins
them). Against `network_map` in one process they agree to float rounding: its z maps come from a
multi-threaded float32 product that rounds differently (a few float32 ulps), and its sums add
subjects in another order. Bounds: mean z within 1e-6, t within 1e-5 (1 + |t|), p and q within
1e-3 relative, the permutations' max |t| within 1e-5 relative (measured on 11 subjects: 1.2e-7,
9.6e-7, 9.7e-6, 1.9e-7); FWER p values are the same unless an observed |t| lies within that
rounding of a permutation's max.

The units compute on the CPU (``device`` of `network_map` is not used here).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from neurotorch._docs import fill_doc
from neurotorch._options import check_int
from neurotorch.connectome.batches import ConnectomeBatches
from neurotorch.connectome.lesions import LesionInput, LesionSet
from neurotorch.connectome.lnm import (
    SeedWeights,
    _checked_subjects,
    _versions,
    accumulate_z,
    assemble_result,
    check_run_options,
    load_inputs,
)
from neurotorch.connectome.permutation import (
    exceedances,
    fwe_from_exceedances,
    permutation_t_max,
    sign_flips,
)
from neurotorch.connectome.pini import lesion_voxel_correlations, seeds_from_correlations
from neurotorch.connectome.result import NetworkMapResult
from neurotorch.connectome.stats import ShiftedSums
from neurotorch.errors import DataNotFoundError, DatasetExistsError
from neurotorch.io.atomic import TEMP_MARK, atomic_path, write_json, write_npy
from neurotorch.io.files import file_root
from neurotorch.parallel import one_thread, run_units, shared_engine

__all__ = ["NetworkMapPlan", "NetworkMapUnit", "plan_network_map"]

PLAN_FILE = "plan.json"
MASKS_FILE = "lesion_masks.npy"
LOCK_DIR = "locks"
STAGES = ("pini", "maps", "permutations")


def _spans(count: int, size: int) -> tuple[tuple[int, int], ...]:
    return tuple((start, min(start + size, count)) for start in range(0, count, size))


@functools.lru_cache(maxsize=4)
def _open_connectome(
    files: tuple[str, ...], options: str, space: str, fingerprint: str
) -> ConnectomeBatches:
    """The connectome, opened once per worker process and plan: the plan's ``fingerprint`` (it
    covers the files' versions) is part of the key, so files re-created at the same paths are
    opened afresh."""
    return ConnectomeBatches(list(files), json.loads(options), space=space)


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy stubs match ** to allow_pickle


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return dict(archive)


class _StackedRows:
    """The (subjects, lesions, voxels) z maps of several files read as one array, file after
    file, without loading them; indexed as `permutation_t_max` does (``z[:, k, a:b]``: all
    subjects)."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.shape = (sum(len(part) for part in parts), *parts[0].shape[1:])

    def __getitem__(self, key: tuple) -> np.ndarray:
        return np.concatenate([part[key] for part in self.parts])


@dataclass(frozen=True)
class NetworkMapPlan:
    """What every unit of a run reads: the inputs, the split into units and the parameters.

    Made by `plan_network_map` (which writes it into ``folder``); small and picklable.
    """

    folder: str
    fingerprint: str  # of the inputs and parameters; the units folder holds one run
    files: tuple[str, ...]  # the connectome's batch files
    storage_options: str  # JSON of their fsspec options
    space: str
    subjects: tuple[int, ...]  # subject indices, in the run's order
    groups: tuple[tuple[int, tuple[int, ...]], ...]  # (file, positions in `subjects`) per file
    lesion_spans: tuple[tuple[int, int], ...]
    permutation_spans: tuple[tuple[int, int], ...]
    method: str
    pini_percentile: float
    n_permutations: int
    seed: int

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this run has, in order."""
        return tuple(
            stage
            for stage in STAGES
            if (stage != "pini" or self.method == "pini")
            and (stage != "permutations" or self.n_permutations)
        )

    def units(
        self, stage: str | None = None, lesion_batch: int | None = None
    ) -> list[NetworkMapUnit]:
        """The units of one stage (default: of every stage, in order), optionally of one batch
        of lesions; their positions are the ``only=`` / ``--unit`` indices."""
        stages = self.stages if stage is None else (stage,)
        batches = range(len(self.lesion_spans)) if lesion_batch is None else (lesion_batch,)
        units = []
        for name in stages:
            parts = len(self.permutation_spans) if name == "permutations" else len(self.groups)
            units += [
                NetworkMapUnit(self, name, part, lesion_batch=b)
                for b in batches
                for part in range(parts)
            ]
        return units

    def batches(self) -> ConnectomeBatches:
        return _open_connectome(self.files, self.storage_options, self.space, self.fingerprint)

    def path(self, *parts: str) -> Path:
        return Path(self.folder, *parts)

    def lesion_masks(self, lesion_batch: int) -> np.ndarray:
        start, stop = self.lesion_spans[lesion_batch]
        return np.array(np.load(self.path(MASKS_FILE), mmap_mode="r")[start:stop])

    def file_subjects(self, part: int) -> list[int]:
        """The subject indices a ``pini`` or ``maps`` unit works on, in the run's order."""
        return [self.subjects[position] for position in self.groups[part][1]]

    def stacked_order(self) -> np.ndarray:
        """Positions in the run's subject order of the subjects taken file after file."""
        return np.concatenate(
            [np.asarray(positions, dtype=np.int64) for _, positions in self.groups]
        )

    def require(self, units: list[NetworkMapUnit], needed_by: str) -> None:
        """Raise `DataNotFoundError` unless ``units`` are done."""
        missing = [unit.key for unit in units if not unit.done()]
        if missing:
            stage = missing[0].split("/")[1]
            raise DataNotFoundError(
                f"{needed_by} needs {len(missing)} unit(s) of the stage {stage!r} that are not "
                f"done ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}) in "
                f"{self.folder}: run that stage first (see --list-units; one job array per "
                "stage), or run without --unit / only=."
            )

    def seed_masks(self, lesion_batch: int) -> np.ndarray:
        """The seeds of a batch of lesions: the lesions themselves, or PINI's choice from the
        rows of the ``pini`` units (chosen once, by whoever asks first)."""
        masks = self.lesion_masks(lesion_batch)
        if self.method != "pini":
            return masks
        path = self.path("pini", f"seeds_lesions-{lesion_batch:03d}.npy")
        if not path.is_file():
            units = self.units("pini", lesion_batch)
            self.require(units, f"the seeds of lesion batch {lesion_batch}")
            with FileLock(str(self.path(LOCK_DIR, path.name + ".lock"))):
                if not path.is_file():  # rows file after file: PCA ignores their order
                    rows = [_load_npz(unit.output(".npz")) for unit in units]
                    correlations = [
                        np.concatenate([part[f"lesion-{k:04d}"] for part in rows])
                        for k in range(len(masks))
                    ]
                    write_npy(
                        path, seeds_from_correlations(masks, correlations, self.pini_percentile)
                    )
        return np.load(path)

    def run(
        self, *, workers: int | None = None, scheduler: Any = None, progress: bool | None = None
    ) -> NetworkMapResult:
        """Run every unit not done yet, stage after stage, then `result`.

        ``workers`` and ``scheduler`` choose where (see `neurotorch.parallel.run_units`).

        Raises
        ------
        UnitsFailedError
            Units of a stage failed (the others kept their outputs; run again to redo them).
        """
        with shared_engine(workers, scheduler) as engine:
            for stage in self.stages:
                run_units(self.units(stage), progress=progress, desc=f"lnm {stage}", **engine)
        return self.result()

    def result(self) -> NetworkMapResult:
        """The maps, reduced from the outputs of every unit (see the module docstring).

        Raises
        ------
        DataNotFoundError
            Some units are not done.
        """
        self.require(self.units(), "the result")
        record = json.loads(self.path(PLAN_FILE).read_text())
        lesion_set = LesionSet(
            names=record["lesions"]["names"],
            masks=np.load(self.path(MASKS_FILE)),
            volumes_mm3=np.asarray(record["lesions"]["volumes_mm3"]),
            sources=record["lesions"]["sources"],
            options=record["lesions"]["options"],
            space=self.space,
        )
        batches = range(len(self.lesion_spans))
        mean_and_t = [self._merged_sums(b).mean_and_t() for b in batches]
        means, t_maps = zip(*mean_and_t, strict=True)
        permutations: tuple[np.ndarray, np.ndarray] | tuple[None, None] = (None, None)
        if self.n_permutations:
            chunks = [
                [_load_npz(u.output(".npz")) for u in self.units("permutations", b)]
                for b in batches
            ]
            null = np.concatenate(
                [np.concatenate([c["max_t_null"] for c in parts]) for parts in chunks], axis=1
            )
            counts = np.concatenate([sum(c["exceedances"] for c in parts) for parts in chunks])
            permutations = (fwe_from_exceedances(counts, self.n_permutations), null)
        return assemble_result(
            lesion_set,
            self.batches(),
            list(self.subjects),
            seed_masks=np.concatenate([self.seed_masks(b) for b in batches]),
            mean_and_t=(np.concatenate(means), np.concatenate(t_maps)),
            permutations=permutations,
            parameters=dict(
                method=self.method,
                pini_percentile=self.pini_percentile if self.method == "pini" else None,
                n_permutations=self.n_permutations,
                seed=self.seed if self.n_permutations else None,
                device="cpu",
                units=dict(
                    folder=self.folder,
                    lesions_per_unit=record["lesions_per_unit"],
                    permutations_per_unit=record["permutations_per_unit"],
                ),
            ),
        )

    def _merged_sums(self, lesion_batch: int) -> ShiftedSums:
        """The sums of a batch of lesions over every file, merged in file order."""
        parts = [_load_npz(unit.output(".npz")) for unit in self.units("maps", lesion_batch)]
        merged = ShiftedSums.from_state(parts[0])
        for part in parts[1:]:
            merged.merge(ShiftedSums.from_state(part))
        return merged


@dataclass(frozen=True)
class NetworkMapUnit:
    """One unit of a lesion network mapping run (see the module docstring)."""

    plan: NetworkMapPlan
    stage: str
    part: int  # position in plan.groups (pini, maps) or plan.permutation_spans (permutations)
    lesion_batch: int

    @property
    def name(self) -> str:
        if self.stage == "permutations":
            where = f"chunk-{self.part:03d}"
        else:
            where = f"file-{self.plan.groups[self.part][0]:03d}"
        return f"{where}_lesions-{self.lesion_batch:03d}"

    @property
    def key(self) -> str:
        return f"lnm/{self.stage}/{self.name}"

    @property
    def lock_path(self) -> Path:
        return self.plan.path(LOCK_DIR, f"{self.stage}-{self.name}.lock")

    def output(self, suffix: str) -> Path:
        return self.plan.path(self.stage, self.name + suffix)

    def done(self) -> bool:
        try:
            manifest = json.loads(self.output(".json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(manifest, dict) and manifest.get("plan") == self.plan.fingerprint

    def run(self) -> dict[str, Any]:
        self.output("").parent.mkdir(parents=True, exist_ok=True)
        with one_thread():
            summary = getattr(self, f"_run_{self.stage}")()
        write_json(
            self.output(".json"), {"key": self.key, "plan": self.plan.fingerprint, **summary}
        )
        return summary

    def _run_pini(self) -> dict[str, Any]:
        plan = self.plan
        subjects = plan.file_subjects(self.part)
        rows = lesion_voxel_correlations(
            plan.lesion_masks(self.lesion_batch), plan.batches(), subjects
        )
        _save_npz(self.output(".npz"), {f"lesion-{k:04d}": r for k, r in enumerate(rows)})
        return {"subjects": len(subjects)}

    def _run_maps(self) -> dict[str, Any]:
        plan = self.plan
        subjects = plan.file_subjects(self.part)
        seeds = SeedWeights.from_masks(plan.seed_masks(self.lesion_batch))
        sums, z_maps = accumulate_z(
            plan.batches(), subjects, seeds, keep_z=bool(plan.n_permutations)
        )
        if z_maps is not None:
            write_npy(self.output("_z.npy"), z_maps)
        _save_npz(self.output(".npz"), sums.state())
        return {"subjects": len(subjects)}

    def _run_permutations(self) -> dict[str, Any]:
        plan = self.plan
        maps = plan.units("maps", self.lesion_batch)
        plan.require(maps, f"unit {self.key}")
        z_maps = _StackedRows([np.load(unit.output("_z.npy"), mmap_mode="r") for unit in maps])
        start, stop = plan.permutation_spans[self.part]
        signs = sign_flips(plan.n_permutations, len(plan.subjects), plan.seed)[start:stop]
        signs = signs[:, torch.from_numpy(plan.stacked_order())]  # the columns of stacked rows
        observed, null = permutation_t_max(z_maps, signs)
        _save_npz(
            self.output(".npz"),
            {"max_t_null": null, "exceedances": exceedances(observed, null)},
        )
        return {"permutations": stop - start}


def _fingerprint(description: dict) -> str:
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_versions(batches: ConnectomeBatches) -> list[list[str]]:
    """(path, size, version) of every batch file: a changed file makes another plan."""
    versions = []
    for path in batches.files:
        root, name = file_root(path, batches.storage_options)
        info = root.info(name)
        versions.append([str(path), str(info["size"]), str(info["version"])])
    return versions


def _claim_folder(folder: Path, fingerprint: str) -> bool:
    """Whether ``folder`` already holds this run's plan; refuses a folder of another run or one
    that neurotorch did not write."""
    plan_file = folder / PLAN_FILE
    if plan_file.is_file():
        try:
            existing = json.loads(plan_file.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            existing = None
        if existing == fingerprint:
            return True
        raise DatasetExistsError(
            f"{folder} holds the units of another lesion network mapping run (other lesions, "
            "connectome, subjects or parameters); give another units folder, or delete this one "
            "to start over."
        )
    ours = {LOCK_DIR, MASKS_FILE}  # and temporary files of an interrupted first plan
    if folder.is_dir() and {n for n in os.listdir(folder) if TEMP_MARK not in n} - ours:
        raise DatasetExistsError(
            f"{folder} is not empty and holds no units of neurotorch (no {PLAN_FILE}); give a new "
            "or empty folder for the units."
        )
    return False


@fill_doc
def plan_network_map(
    folder: str | os.PathLike,
    lesions: LesionInput | Sequence | Mapping | LesionSet,
    connectome: str | os.PathLike | ConnectomeBatches,
    subjects: Sequence[int] | None = None,
    storage_options: dict | None = None,
    method: str = "boes",
    pini_percentile: float = 20.0,
    n_permutations: int = 0,
    seed: int = 0,
    lesions_per_unit: int = 32,
    permutations_per_unit: int = 1000,
    **lesion_options,
) -> NetworkMapPlan:
    """Plan `network_map` as units of work in ``folder`` (see the module docstring).

    Planning the same run again (another process, a job array task) gives the same plan and
    reuses the units already done; a folder that holds another run's units is refused.

    Parameters
    ----------
    folder
        The units folder: new, empty, or holding this run's units; on a file system every worker
        sees. Its size: with P permutations, 4 bytes per subject × lesion × voxel for the z maps,
        plus 20 bytes per batch file × lesion × voxel for the sums.
    %(lnm_lesions)s
    %(lnm_connectome)s
    subjects
        Subject indices to use (default: all), in the order of the sign flips.
    %(storage_options)s
    %(lnm_options)s
    lesions_per_unit
        Lesions per unit: a ``maps`` unit holds 28 bytes per lesion × voxel in memory (plus its
        file's z maps with permutations).
    permutations_per_unit
        Sign flips per ``permutations`` unit; each reads every z map of its lesions once.
    %(lnm_lesion_options)s

    Returns
    -------
    NetworkMapPlan
        ``plan.run(workers=..., scheduler=...)`` gives the `NetworkMapResult`; ``plan.units()``
        lists the units (for ``neurotorch.parallel.run_units(units, only=[k])``).

    Raises
    ------
    DatasetExistsError
        ``folder`` holds another run's units, or files neurotorch did not write.
    ParameterError
        An argument out of range.
    """
    method, pini_percentile, n_permutations, seed = check_run_options(
        method, pini_percentile, n_permutations, seed=seed
    )
    lesions_per_unit = check_int("lesions_per_unit", lesions_per_unit, minimum=1)
    permutations_per_unit = check_int("permutations_per_unit", permutations_per_unit, minimum=1)
    lesion_set, batches = load_inputs(
        lesions, connectome, storage_options, lesion_options=lesion_options
    )
    subjects = _checked_subjects(subjects, batches.n_subjects)
    files = [batches.locate(subject)[0] for subject in subjects]
    groups = tuple(
        (f, tuple(pos for pos, file in enumerate(files) if file == f)) for f in sorted(set(files))
    )
    masks = np.ascontiguousarray(lesion_set.masks, dtype=bool)
    record = {
        "connectome": _file_versions(batches),
        "space": batches.space,
        "subjects": [batches.subject_ids[s] for s in subjects],
        "lesions": {
            "names": list(lesion_set.names),
            "masks_sha256": hashlib.sha256(np.packbits(masks).data).hexdigest(),
            "shape": list(masks.shape),
            "volumes_mm3": np.asarray(lesion_set.volumes_mm3, dtype=float).tolist(),
            "sources": list(lesion_set.sources),
            "options": lesion_set.options,
        },
        "method": method,
        "pini_percentile": pini_percentile,
        "n_permutations": n_permutations,
        "seed": seed,
        "lesions_per_unit": lesions_per_unit,
        "permutations_per_unit": permutations_per_unit,
        "versions": _versions(),
    }
    fingerprint = _fingerprint(record)
    path = Path(folder).expanduser().absolute()
    if not _claim_folder(path, fingerprint):
        with FileLock(str(path / LOCK_DIR / "plan.lock")):
            if not _claim_folder(path, fingerprint):
                write_npy(path / MASKS_FILE, masks)
                write_json(path / PLAN_FILE, {"fingerprint": fingerprint, **record})
    return NetworkMapPlan(
        folder=str(path),
        fingerprint=fingerprint,
        files=tuple(str(f) for f in batches.files),
        storage_options=json.dumps(batches.storage_options or {}, sort_keys=True),
        space=batches.space,
        subjects=tuple(subjects),
        groups=groups,
        lesion_spans=_spans(len(lesion_set.names), lesions_per_unit),
        permutation_spans=_spans(n_permutations, permutations_per_unit),
        method=method,
        pini_percentile=pini_percentile,
        n_permutations=n_permutations,
        seed=seed,
    )
