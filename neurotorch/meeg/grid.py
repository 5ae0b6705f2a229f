"""CaliBrain's ``DataGenerator`` workflow: a parameter grid of simulated runs, their posterior
summaries and run manifest, and the aggregation and calibration of the runs.

`run_grid` expands the data grid (``subject``, ``orientation_type``, ``nnz``, ``alpha_SNR``) and the
noise types as scikit-learn's ``ParameterGrid`` does (keys sorted, the noise type varying
fastest), draws one seed per run as CaliBrain does (``RandomState(random_state).randint(0, 2**32)``),
simulates one trial per run, computes the chosen solver's posterior (`neurotorch.meeg.solvers`)
and writes ``posterior_summary_run{global_run_id:08d}_seed{seed}.h5`` plus ``run_manifest.csv``
(one row per run). Each run is a unit of work of `neurotorch.parallel` (`GridUnit`, planned by
`plan_grid` with its seed drawn up front), so the runs can be computed in local processes, on a
Dask cluster or one per job-array task, with the same bytes; they are written into a work folder
beside ``out_dir`` that records the grid, which a rerun resumes and the final run renames.
`read_manifest` checks a manifest (one header, every summary inside its folder), `aggregate_runs`
concatenates the runs it lists (filtered by metadata) and `calibrate_runs` fits CaliBrain's
isotonic recalibration on one aggregate and evaluates it on another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import torch
from filelock import FileLock

from neurotorch._docs import fill_doc
from neurotorch._options import as_ints, as_names, check_int, check_number, check_option
from neurotorch.config import cache_dir
from neurotorch.errors import (
    DataNotDownloadedError,
    DatasetExistsError,
    FormatError,
    ParameterError,
    UnitsFailedError,
    UnsafePathError,
)
from neurotorch.io.atomic import TEMP_MARK, atomic_path, write_json, write_text
from neurotorch.meeg import layout
from neurotorch.meeg.calibration import (
    IsotonicRecalibration,
    calibration_metrics,
    coverage_curve,
    ellipsoid_coverage_curve,
)
from neurotorch.meeg.leadfield import LeadfieldBuilder, LeadfieldData
from neurotorch.meeg.posterior import NOISE_TYPES, known_noise_var
from neurotorch.meeg.simulation import ERPConfig, SensorSimulator, SourceSimulator, item_generator
from neurotorch.meeg.solvers import Solver, full_posterior_cov, make_solver
from neurotorch.meeg.summaries import (
    PosteriorRun,
    read_posterior_summary,
    read_summary_metadata,
)
from neurotorch.parallel import one_thread, run_units

MANIFEST = "run_manifest.csv"
#: The record of a grid (its parameters), written first into its work folder; kept in out_dir.
GRID_RECORD = "grid.json"
#: What the name of the work folder beside out_dir adds to out_dir's name.
WORK_SUFFIX = ".units"
DATA_KEYS = ("alpha_SNR", "nnz", "orientation_type", "subject")
#: How `run_grid` writes the summary paths of its manifest (see `run_grid`).
MANIFEST_PATHS = ("relative", "absolute")
#: CaliBrain's default nominal levels.
CALIBRAIN_LEVELS = np.array(
    [0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]
)


def parameter_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of ``grid``'s values, keys sorted, the last key varying fastest."""
    keys = sorted(grid)
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(grid[key] for key in keys))
    ]


def check_data_grid(data_grid: Mapping[str, Any]) -> dict[str, list]:
    """``data_grid`` with each value a checked list: subjects and orientations are names (a
    string is one name), ``nnz`` positive integers (``2.7`` is refused, never rounded),
    ``alpha_SNR`` numbers in [0, 1]."""
    if not isinstance(data_grid, Mapping) or set(data_grid) != set(DATA_KEYS):
        keys = sorted(data_grid) if isinstance(data_grid, Mapping) else data_grid
        raise ParameterError(f"data_grid needs exactly the keys {DATA_KEYS}; got {keys}.")
    alphas = data_grid["alpha_SNR"]
    alphas = (
        list(alphas) if isinstance(alphas, Sequence) and not isinstance(alphas, str) else [alphas]
    )
    return {
        "alpha_SNR": [
            check_number(f"alpha_SNR[{k}]", a, minimum=0.0, maximum=1.0)
            for k, a in enumerate(alphas)
        ],
        "nnz": as_ints("nnz", data_grid["nnz"], minimum=1),
        "orientation_type": [
            layout.check_orientation(o)
            for o in as_names("orientation_type", data_grid["orientation_type"])
        ],
        "subject": [layout.check_subject(s) for s in as_names("subject", data_grid["subject"])],
    }


def simulate_run(
    data: LeadfieldData,
    *,
    nnz: int,
    alpha: float,
    seed: int,
    noise_type: str = "oracle",
    config: ERPConfig | None = None,
    index: int = 0,
    solver: Solver | None = None,
    prepared: Any = None,
) -> dict[str, Any]:
    """One CaliBrain run: a trial drawn from ``(seed, index)`` and ``solver``'s posterior
    (default: BMN with a learned ``gamma``; float64).

    ``prepared``: ``solver.prepare``'s result for this leadfield (computed here otherwise).
    Returns ``x_true``, ``x_hat``, the full ``posterior_cov``, ``gamma`` (BMN's, or the mean
    per-source prior variance) and ``noise_var``.
    """
    solver = solver or make_solver("BMN")
    solver.check_noise_type(noise_type)
    if noise_type == "oracle" and alpha >= 1.0:
        raise ParameterError("alpha_SNR = 1 has no noise: use a noise_type other than 'oracle'.")
    config = config or ERPConfig()
    gen = item_generator(seed, index)
    sources = SourceSimulator(config, dtype=torch.float64).simulate(
        1,
        data.n_sources,
        nnz,
        generator=gen,
        n_components=data.n_components,
        silent=data.silent_sources,
    )
    sensors = SensorSimulator(data, dtype=torch.float64).simulate(sources, alpha, gen)
    leadfield = torch.as_tensor(data.leadfield)
    known = known_noise_var(noise_type, sensors.y, true_noise_var=sensors.noise_var, config=config)
    if prepared is None:
        prepared = solver.prepare(leadfield, data.src_coords)
    fit = solver.fit(sensors.y, leadfield, prepared, noise_var=known)
    return {
        "x_true": sources.dense()[0].numpy(),
        "x_hat": fit.posterior.mean[0].numpy(),
        "posterior_cov": full_posterior_cov(
            data.leadfield,
            fit.prior_blocks[0].numpy(),
            noise_var=fit.sensor_noise_var[0].numpy(),
            basis=None if fit.basis is None else fit.basis.numpy(),
        ),
        "gamma": float(fit.gamma[0]),
        "noise_var": float(fit.noise_var[0]),
    }


def write_posterior_summary(
    path: Path, run: dict[str, Any], *, q_basis: np.ndarray | None, metadata: dict[str, Any]
) -> None:
    """Write a CaliBrain ``posterior_summary_*.h5`` (``Q_basis`` NaN when there is none).

    The arrays carry Fletcher-32 checksums and the file the HDF5 1.10 format, whose metadata are
    checksummed too, so that a damaged byte is found when the file is read (a `CorruptFileError`
    naming it) instead of giving wrong values; CaliBrain (h5py) reads such files as any other.
    """
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="latest") as handle:
        for key in ("x_true", "x_hat", "posterior_cov"):
            handle.create_dataset(key, data=run[key], fletcher32=True)
        handle.create_dataset("Q_basis", data=q_basis if q_basis is not None else np.nan)
        # a fixed-length string lives in the checksummed object header (a variable-length one
        # in the unchecked global heap); CaliBrain decodes bytes
        handle.attrs["metadata_json"] = np.bytes_(json.dumps(metadata).encode("utf-8"))


@dataclass(frozen=True)
class _Settings:
    """What every unit of a grid reads; compared (and hashed) by folder and fingerprint alone, the
    key of each worker's cache of prepared leadfields."""

    folder: str
    fingerprint: str
    builder: LeadfieldBuilder = field(compare=False)
    solver: Solver = field(compare=False)
    config: ERPConfig | None = field(compare=False)
    n_runs: int = field(compare=False)
    prefix: str = field(compare=False)  # of the manifest's summary paths


@functools.lru_cache(maxsize=4)
def _prepared(settings: _Settings, subject: str, orientation: str) -> tuple[LeadfieldData, Any]:
    """A leadfield and the solver's preparation of it, loaded once per process and grid."""
    orientation_type = cast(Literal["fixed", "free"], orientation)  # checked by check_data_grid
    data = cast(  # with return_metadata
        LeadfieldData,
        settings.builder.get_leadfield(subject, orientation_type, "load", return_metadata=True),
    )
    return data, settings.solver.prepare(torch.as_tensor(data.leadfield), data.src_coords)


@dataclass(frozen=True)
class GridUnit:
    """One run of a grid, a unit of work of `neurotorch.parallel`: its configuration and seed
    (drawn up front by `plan_grid`), its output the run's posterior summary, written atomically
    (so it is done once that file exists). It computes on one thread (`one_thread`), so its bytes
    do not depend on where it ran."""

    settings: _Settings
    global_id: int
    seed: int
    data_params: tuple[tuple[str, Any], ...]  # the data grid's keys, sorted
    noise_type: str

    @property
    def name(self) -> str:
        return layout.posterior_summary_name(self.global_id, self.seed)

    @property
    def key(self) -> str:
        return f"grid/run{self.global_id:08d}"

    @property
    def lock_path(self) -> Path | None:
        """Held while the run is checked and written: a run of the same grid started at once
        waits, then finds it done, so no summary is being written when the finish renames the
        work folder."""
        return _grid_lock(f"{self.settings.fingerprint[:24]}-run{self.global_id:08d}")

    def path(self) -> Path:
        return Path(self.settings.folder, self.name)

    def done(self) -> bool:
        """The summary is in the work folder, or in ``out_dir`` once a run of the same grid
        started at once has finished it."""
        if self.path().is_file():
            return True
        folder = self.settings.folder
        if not folder.endswith(WORK_SUFFIX):
            return False
        out = Path(folder[: -len(WORK_SUFFIX)])
        return (out / self.name).is_file() and _recorded_fingerprint(
            out
        ) == self.settings.fingerprint

    def run(self) -> dict[str, Any]:
        """Simulate the run, write its summary; return its manifest row."""
        settings, params = self.settings, dict(self.data_params)
        with one_thread():
            data, prepared = _prepared(settings, params["subject"], params["orientation_type"])
            run = simulate_run(
                data,
                nnz=params["nnz"],
                alpha=params["alpha_SNR"],
                seed=self.seed,
                noise_type=self.noise_type,
                config=settings.config,
                solver=settings.solver,
                prepared=prepared,
            )
        metadata = {
            "global_run_id": self.global_id,
            "run_id": (self.global_id - 1) % settings.n_runs + 1,
            "nruns": settings.n_runs,
            "solver": settings.solver.calibrain_name(self.noise_type),
            "solver_params": json.dumps(settings.solver.options(), sort_keys=True),
            "noise_type": self.noise_type,
            **params,
            "n_sources": data.n_sources,
            "n_times": run["x_true"].shape[-1],
            "seed": self.seed,
            "posterior_filename": self.name,
            "sensor_kind": data.sensor_kind,
            "coil_type": data.coil_type,
            "sensor_units": data.sensor_units,
            "sensor_unitmult": data.sensor_unitmult,
            "gamma": run["gamma"],
            "noise_var": run["noise_var"],
        }
        q_basis = data.Q_basis if params["orientation_type"] == "free" else None
        write_posterior_summary(self.path(), run, q_basis=q_basis, metadata=metadata)
        return self._row(metadata)

    def row(self) -> dict[str, Any]:
        """Its manifest row, from the metadata of its summary (a run done earlier)."""
        return self._row(read_summary_metadata(self.path()))

    def _row(self, metadata: dict[str, Any]) -> dict[str, Any]:
        return {**metadata, "posterior_summary": self.settings.prefix + self.name}


@dataclass(frozen=True)
class GridPlan:
    """A grid as units of work, made by `plan_grid`: ``units()`` (one per run, in run order) and
    ``run()``."""

    out_dir: str
    settings: _Settings
    grid_units: tuple[GridUnit, ...]

    @property
    def finished(self) -> bool:
        """Whether ``out_dir`` already holds this grid, complete."""
        return self.settings.folder == self.out_dir

    def units(self) -> list[GridUnit]:
        """The units, in run order; their positions are the ``only=`` indices."""
        return list(self.grid_units)

    def run(
        self,
        *,
        workers: int | None = None,
        scheduler: Any = None,
        only: int | None = None,
        progress: bool | None = None,
    ) -> pd.DataFrame:
        """Run every unit not done yet; then write the manifest and rename the work folder to
        ``out_dir`` (with ``only``: run that unit alone, and finish nothing).

        Parameters
        ----------
        workers, scheduler
            Where the units run: see `neurotorch.parallel.run_units`.
        only
            The position of one unit to run (one task of a job array; `unit_lines` lists them).
        progress
            Show a progress bar (default: ``NEUROTORCH_PROGRESS``).

        Returns
        -------
        pandas.DataFrame
            The manifest (with ``only``: the row of that run).
        """
        units = self.units()
        if only is not None:
            only = check_int("only", only, minimum=0, maximum=len(units) - 1)
            units = [units[only]]
        try:
            return self._run(
                units, finish=only is None, workers=workers, scheduler=scheduler, progress=progress
            )
        except Exception:
            if self.finished:
                raise
            with _finish_lock(self.out_dir):  # a finish in progress ends first
                if _recorded_fingerprint(Path(self.out_dir)) != self.fingerprint:
                    raise
            # a run of the same grid started at once finished it, moving the work folder away
            moved = dataclasses.replace(self.settings, folder=self.out_dir)
            return pd.DataFrame([dataclasses.replace(u, settings=moved).row() for u in units])
        finally:
            _prepared.cache_clear()

    @property
    def fingerprint(self) -> str:
        """The SHA-256 of the grid's record (``grid.json``): its parameters and inputs."""
        return self.settings.fingerprint

    def _run(
        self,
        units: list[GridUnit],
        *,
        finish: bool,
        workers: int | None,
        scheduler: Any,
        progress: bool | None,
    ) -> pd.DataFrame:
        try:
            results = run_units(
                units, workers=workers, scheduler=scheduler, progress=progress, desc="grid"
            )
        except UnitsFailedError as failed:  # the first unit's own error, where it came back
            raise next((r.exception for r in failed.results if r.exception), failed) from None
        rows = [
            r.value if r.status == "ran" else unit.row()
            for unit, r in zip(units, results, strict=True)
        ]
        manifest = pd.DataFrame(rows)
        if finish and not self.finished:
            self._finish(manifest)
        elif finish and not (Path(self.out_dir) / MANIFEST).is_file():  # deleted since: again
            write_text(Path(self.out_dir) / MANIFEST, manifest.to_csv(index=False))
        return manifest

    def _finish(self, manifest: pd.DataFrame) -> None:
        """The manifest, written last, then the work folder renamed to ``out_dir``; nothing when
        a run of the same grid started at once did it first."""
        work, out = Path(self.settings.folder), Path(self.out_dir)
        with _finish_lock(self.out_dir):
            if _recorded_fingerprint(out) == self.fingerprint:
                return
            for stale in work.glob(f"*{TEMP_MARK}*"):  # of writers that were killed
                stale.unlink(missing_ok=True)
            write_text(work / MANIFEST, manifest.to_csv(index=False))
            if out.is_dir():
                out.rmdir()  # empty (checked by plan_grid)
            work.rename(out)


def _grid_lock(name: str) -> Path | None:
    """A lock file of the grids, in ``NEUROTORCH_CACHE`` (not in a folder that the finish
    renames); None where the cache cannot be written."""
    path = cache_dir() / "locks" / "grid" / f"{name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path


def _finish_lock(out_dir: str) -> contextlib.AbstractContextManager:
    """The lock of finishing the grid of ``out_dir``."""
    path = _grid_lock(hashlib.sha256(out_dir.encode()).hexdigest()[:24])
    return contextlib.nullcontext() if path is None else FileLock(str(path))


def _recorded_fingerprint(folder: Path) -> str | None:
    """The fingerprint a folder's grid record holds (None: no readable record)."""
    try:
        record = json.loads((folder / GRID_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record.get("fingerprint") if isinstance(record, dict) else None


def _claim(out: Path, work: Path, fingerprint: str) -> Path:
    """The folder a grid's units write into: ``out`` when it already holds this grid, else the
    work folder (created, its record written first by the caller when new). Refuses folders of
    another grid and folders neurotorch did not write."""
    held = _recorded_fingerprint(out)
    if held == fingerprint:
        return out
    if held is not None:
        raise DatasetExistsError(
            f"{out} holds the runs of another grid (other parameters, leadfields, solver or "
            "package versions); choose a new out_dir, or remove this one to run the grid again."
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetExistsError(
            f"{out} already exists and is not empty; run_grid writes a new folder of runs "
            "(it never mixes its files with others): choose a new out_dir or remove this one."
        )
    held = _recorded_fingerprint(work)
    if held is not None and held != fingerprint:
        raise DatasetExistsError(
            f"{work} holds the unfinished runs of another grid (other parameters, leadfields, "
            f"solver or package versions) for {out}; run that grid again to finish it, or "
            "remove this folder to start this one."
        )
    if held is None and work.exists() and {p for p in os.listdir(work) if TEMP_MARK not in p}:
        raise DatasetExistsError(
            f"{work} (the work folder of {out}) is not empty and holds no runs of neurotorch "
            f"(no {GRID_RECORD}); move it away or choose another out_dir."
        )
    return work


def _leadfield_versions(builder: LeadfieldBuilder, grid: dict[str, list]) -> list[list[str]]:
    """(name, size, version) of every leadfield the grid reads: a changed file is another grid."""
    versions = []
    for subject, orientation in itertools.product(grid["subject"], grid["orientation_type"]):
        name = layout.leadfield_name(subject, orientation)
        try:
            info = builder.root.info(name)
        except FileNotFoundError as exc:
            raise DataNotDownloadedError(
                f"Leadfield {builder.path(subject, orientation)} not found: the grid reads it; "
                "add it, or leave its subject or orientation out of data_grid."
            ) from exc
        versions.append([name, str(info["size"]), str(info["version"])])
    return versions


@fill_doc
def plan_grid(
    builder: LeadfieldBuilder,
    out_dir: str | os.PathLike,
    data_grid: Mapping[str, Sequence[Any]],
    noise_types: str | Sequence[str] = ("oracle",),
    n_runs: int = 2,
    random_state: int = 42,
    config: ERPConfig | None = None,
    solver: str = "BMN",
    solver_options: Mapping[str, Any] | None = None,
    manifest_paths: Literal["relative", "absolute"] = "relative",
) -> GridPlan:
    """Plan `run_grid` as units of work, one per run (`GridUnit`), in its work folder.

    The work folder, ``<out_dir>.units`` beside ``out_dir``, records the grid (``grid.json``:
    its parameters, the leadfields' sizes and versions, the versions of numpy and torch),
    written before any run. Planning the same grid again (another process, a job array task)
    reuses the runs already written; once every run is done, `GridPlan.run` writes the manifest
    and renames the work folder to ``out_dir``. An ``out_dir`` that holds this grid gives a plan
    whose units are all done.

    Parameters
    ----------
    %(meeg_grid)s

    Returns
    -------
    GridPlan
        ``plan.run(workers=..., scheduler=..., only=...)`` gives the manifest; ``plan.units()``
        lists the units.

    Raises
    ------
    DatasetExistsError
        The work folder holds the unfinished runs of another grid, or files neurotorch did not
        write; ``out_dir`` holds another grid, or files neurotorch did not write.
    DataNotDownloadedError
        A leadfield of the grid is missing.
    """
    grid = check_data_grid(data_grid)
    noise_types = [
        check_option(f"noise_types[{k}]", n, NOISE_TYPES)
        for k, n in enumerate(as_names("noise_types", noise_types))
    ]
    n_runs = check_int("n_runs", n_runs, minimum=1)
    random_state = check_int("random_state", random_state, minimum=0)
    check_option("manifest_paths", manifest_paths, MANIFEST_PATHS)
    strategy = make_solver(solver, solver_options)
    for noise_type in noise_types:
        strategy.check_noise_type(noise_type)
    if "oracle" in noise_types and max(grid["alpha_SNR"]) >= 1.0:
        raise ParameterError("alpha_SNR = 1 has no noise: use a noise_type other than 'oracle'.")
    record = {
        "data_grid": grid,
        "noise_types": noise_types,
        "n_runs": n_runs,
        "random_state": random_state,
        "config": dataclasses.asdict(config or ERPConfig()),
        "solver": solver,
        "solver_options": strategy.options(),
        "manifest_paths": manifest_paths,
        "leadfields": _leadfield_versions(builder, grid),
        "versions": {"numpy": np.__version__, "torch": torch.__version__},
    }
    fingerprint = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    out = Path(out_dir).absolute()
    work = out.with_name(out.name + WORK_SUFFIX)
    folder = _claim(out, work, fingerprint)
    if folder == work and _recorded_fingerprint(work) is None:
        work.mkdir(parents=True, exist_ok=True)
        write_json(work / GRID_RECORD, {"fingerprint": fingerprint, **record})
    settings = _Settings(
        folder=str(folder),
        fingerprint=fingerprint,
        builder=builder,
        solver=strategy,
        config=config,
        n_runs=n_runs,
        prefix=f"{out.as_posix()}/" if manifest_paths == "absolute" else "",
    )
    configs = [
        (tuple(data.items()), noise)
        for data in parameter_grid(grid)
        for noise in noise_types  # the noise type varies fastest
    ]
    runs = [config for config in configs for _ in range(n_runs)]
    seeds = np.random.RandomState(random_state).randint(0, 2**32, size=len(runs))
    units = tuple(
        GridUnit(settings, global_id, int(seed), data_params=data_params, noise_type=noise_type)
        for global_id, ((data_params, noise_type), seed) in enumerate(
            zip(runs, seeds, strict=True), start=1
        )
    )
    return GridPlan(str(out), settings, units)


@fill_doc
def run_grid(
    builder: LeadfieldBuilder,
    out_dir: str | os.PathLike,
    data_grid: Mapping[str, Sequence[Any]],
    noise_types: str | Sequence[str] = ("oracle",),
    n_runs: int = 2,
    random_state: int = 42,
    config: ERPConfig | None = None,
    solver: str = "BMN",
    solver_options: Mapping[str, Any] | None = None,
    manifest_paths: Literal["relative", "absolute"] = "relative",
    *,
    workers: int | None = None,
    scheduler: Any = None,
) -> pd.DataFrame:
    """Simulate every grid configuration ``n_runs`` times and write summaries and the manifest.

    Each run is a unit of work (`plan_grid`): ``workers`` / ``scheduler`` spread them over local
    worker processes or a Dask cluster, with the same files as in one process. The runs are
    written into a work folder beside ``out_dir`` that is renamed to ``out_dir`` once the
    manifest is written, so ``out_dir`` holds all of them or does not exist; after a failure or
    an interruption, the same call resumes (the runs already written are kept), and once
    ``out_dir`` holds the grid it does nothing and returns the manifest.

    Parameters
    ----------
    %(meeg_grid)s
    workers, scheduler
        Where the runs are computed (see `neurotorch.parallel.run_units`): ``None`` in this
        process, N local worker processes, or a Dask scheduler address, scheduler file or
        ``Client``.

    Returns
    -------
    pandas.DataFrame
        The manifest.

    Raises
    ------
    DatasetExistsError
        The work folder holds the unfinished runs of another grid; ``out_dir`` holds another
        grid or files neurotorch did not write.
    """
    if workers is not None:
        check_int("workers", workers, minimum=1)
    plan = plan_grid(
        builder,
        out_dir,
        data_grid,
        noise_types=noise_types,
        n_runs=n_runs,
        random_state=random_state,
        config=config,
        solver=solver,
        solver_options=solver_options,
        manifest_paths=manifest_paths,
    )
    return plan.run(workers=workers, scheduler=scheduler)


def read_manifest(manifest_path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a run manifest (neurotorch's or CaliBrain's CSV).

    The file must have exactly one header row with a ``posterior_summary`` column; every
    summary path (relative to the manifest's folder, or absolute) must lie inside that folder.
    The returned table has a ``path`` column with each summary's absolute path.

    Raises
    ------
    DataNotDownloadedError, FormatError
        A missing or unreadable file, no ``posterior_summary`` column, a repeated header row or
        an empty path (naming the row).
    UnsafePathError
        A summary path that leaves the manifest's folder (``../other/x.h5``), naming the row.
    """
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise DataNotDownloadedError(f"Run manifest {manifest_path} not found.")
    try:
        manifest = pd.read_csv(manifest_path, dtype={"posterior_summary": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise FormatError(f"Run manifest {manifest_path} is not a readable CSV: {exc}") from exc
    if "posterior_summary" not in manifest:
        raise FormatError(
            f"Run manifest {manifest_path} has no 'posterior_summary' column (columns: "
            f"{list(manifest.columns)[:8]}); its first row must be the header."
        )
    folder = manifest_path.parent.resolve()
    paths = []
    for row, value in enumerate(manifest["posterior_summary"], start=2):  # row 1: the header
        if value == "posterior_summary":
            raise FormatError(
                f"Row {row} of {manifest_path} repeats the header (two manifests concatenated?); "
                "a manifest has exactly one header row: remove the extra one."
            )
        if not isinstance(value, str) or not value.strip():
            raise FormatError(f"Row {row} of {manifest_path} has no posterior_summary path.")
        path = (folder / value).resolve()
        if not path.is_relative_to(folder):
            raise UnsafePathError(
                f"Row {row} of {manifest_path} names {value!r}, outside the manifest's folder "
                f"{folder}; a manifest only lists summaries in its own folder."
            )
        paths.append(path)
    return manifest.assign(path=pd.Series(paths, index=manifest.index, dtype=object))


def _matches(column: pd.Series, accepted: list) -> np.ndarray:
    """Rows of ``column`` equal to one of ``accepted``; numbers within float32's precision
    (``np.float32(0.3)`` picks the runs of alpha 0.3)."""
    numbers = all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in accepted
    )
    if not (numbers and pd.api.types.is_numeric_dtype(column)):
        return column.isin(accepted).to_numpy()
    values = column.to_numpy(np.float64)[:, None]
    return np.isclose(values, np.asarray(accepted, np.float64)[None, :], rtol=1e-6, atol=0).any(1)


def aggregate_runs(manifest_path: str | os.PathLike, **criteria: Any) -> PosteriorRun:
    """Concatenate (along sources) the runs of a manifest whose metadata match ``criteria``
    (a value, or a list of accepted values), in manifest order.

    All selected runs must share orientation, coil class and number of samples.
    """
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    for key, value in criteria.items():
        if key not in manifest:
            raise ParameterError(f"{manifest_path} has no column {key!r} to filter on.")
        accepted = list(value) if isinstance(value, list | tuple | set | np.ndarray) else [value]
        manifest = manifest[_matches(manifest[key], accepted)]
    if manifest.empty:
        raise ParameterError(f"No run in {manifest_path} matches {criteria}.")
    runs = [read_posterior_summary(path) for path in manifest["path"]]
    signature = {
        (r.orientation_type, r.metadata.get("coil_type"), r.x_true.shape[-1]) for r in runs
    }
    if len(signature) != 1:
        raise FormatError(
            f"The runs selected from {manifest_path} mix orientations, coil classes or lengths "
            f"({sorted(signature, key=str)}); filter them by orientation_type and subject."
        )
    blocks = None if runs[0].cov_blocks is None else np.concatenate([r.cov_blocks for r in runs])
    return PosteriorRun(
        x_true=np.concatenate([r.x_true for r in runs]),
        x_hat=np.concatenate([r.x_hat for r in runs]),
        var=np.concatenate([r.var for r in runs]),
        cov_blocks=blocks,
        metadata={"n_runs": len(runs), **criteria},
        path=manifest_path,
    )


def _curve(run: PosteriorRun, levels: np.ndarray, mode: str) -> np.ndarray:
    if run.cov_blocks is None:
        return coverage_curve(run.x_true, run.x_hat, run.var, levels=levels, mode=mode)
    return ellipsoid_coverage_curve(run.x_true, run.x_hat, run.cov_blocks, levels=levels, mode=mode)


def calibrate_runs(
    train: PosteriorRun,
    test: PosteriorRun,
    levels: np.ndarray = CALIBRAIN_LEVELS,
    mode: str = "time_averaged",
) -> dict[str, Any]:
    """CaliBrain's calibration of aggregated runs: fit the isotonic map nominal -> empirical on
    ``train``, recalibrate ``levels`` and evaluate ``test`` before and after (free orientation
    with credible ellipsoids).

    Returns ``levels``, ``coverage_before``, ``recalibrated_levels``, ``coverage_after``,
    ``metrics_before`` and ``metrics_after`` (CaliBrain's metric names).
    """
    levels = np.asarray(levels, np.float64)
    recalibrated = (
        IsotonicRecalibration().fit(levels, _curve(train, levels, mode)).recalibrate(levels)
    )
    before, after = _curve(test, levels, mode), _curve(test, recalibrated, mode)
    return {
        "levels": levels,
        "coverage_before": before,
        "recalibrated_levels": recalibrated,
        "coverage_after": after,
        "metrics_before": calibration_metrics(levels, before),
        "metrics_after": calibration_metrics(levels, after),
    }
