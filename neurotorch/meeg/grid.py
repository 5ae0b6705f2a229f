"""CaliBrain's ``DataGenerator`` workflow: a parameter grid of simulated runs, their posterior
summaries and run manifest, and the aggregation and calibration of the runs.

`run_grid` expands the data grid (``subject``, ``orientation_type``, ``nnz``, ``alpha_SNR``) and the
noise types as scikit-learn's ``ParameterGrid`` does (keys sorted, the noise type varying
fastest), draws one seed per run as CaliBrain does (``RandomState(random_state).randint(0, 2**32)``),
simulates one trial per run, computes the chosen solver's posterior (`neurotorch.meeg.solvers`)
and writes ``posterior_summary_run{global_run_id:08d}_seed{seed}.h5`` plus ``run_manifest.csv``
(one row per run). `read_manifest` checks a manifest (one header, every summary inside its
folder), `aggregate_runs` concatenates the runs it lists (filtered by metadata) and
`calibrate_runs` fits CaliBrain's isotonic recalibration on one aggregate and evaluates it on
another.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from neurotorch._options import as_ints, as_names, check_int, check_number, check_option
from neurotorch.errors import (
    DataNotDownloadedError,
    DatasetExistsError,
    FormatError,
    ParameterError,
    UnsafePathError,
)
from neurotorch.io.atomic import TEMP_MARK, atomic_path, write_text
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
from neurotorch.meeg.summaries import PosteriorRun, read_posterior_summary

MANIFEST = "run_manifest.csv"
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
        dict(zip(keys, values, strict=True)) for values in itertools.product(*map(grid.get, keys))
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
        1, data.n_sources, nnz, generator=gen, n_components=data.n_components
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


def _new_output_folder(out: Path) -> Path:
    """A temporary sibling of ``out`` to write into; refuses an ``out`` that holds anything."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetExistsError(
            f"{out} already exists and is not empty; run_grid writes a new folder of runs "
            "(it never mixes its files with others): choose a new out_dir or remove this one."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}{TEMP_MARK}"))


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
) -> pd.DataFrame:
    """Simulate every grid configuration ``n_runs`` times and write summaries and the manifest.

    Parameters
    ----------
    builder
        Where the leadfields are loaded from (``<subject>_<orientation>_leadfield.npz``).
    out_dir
        A new (or empty) folder for the summaries and ``run_manifest.csv``. The runs are written
        into a temporary sibling folder renamed to ``out_dir`` at the end, so ``out_dir`` holds
        all of them or does not exist.
    data_grid
        Values of ``subject``, ``orientation_type`` (a name or a list of names), ``nnz`` (counts)
        and ``alpha_SNR`` (in [0, 1]); see `check_data_grid`.
    noise_types
        CaliBrain's ``noise_type`` values to cross with the data grid.
    n_runs, random_state
        Runs per configuration and the seed of the per-run seeds.
    config
        ERP settings.
    solver, solver_options
        CaliBrain's solver name (a key of `neurotorch.meeg.solvers.SOLVERS`; BMN learns its
        ``gamma``) and its options (``solver_params``, written to the manifest). eLORETA needs
        ``noise_types`` ``"oracle"`` / ``"baseline"``; sFlex needs leadfields with
        ``src_coords``. The manifest's ``solver`` column carries CaliBrain's name of the solver
        under each noise type (``BMN_joint``, ``gamma_lambda_map``, ``gamma_lambda_map_sflex``
        when the noise is learned).
    manifest_paths
        How the manifest names each summary: ``"relative"`` (to the manifest's folder; the
        folder can be moved; CaliBrain, which resolves paths against its working directory,
        reads it from that folder) or ``"absolute"`` (CaliBrain reads it from any working
        directory; the folder cannot be moved). `read_manifest` reads both.

    Returns
    -------
    pandas.DataFrame
        The manifest.
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
    configs = [
        (data, noise)
        for data in parameter_grid(grid)
        for noise in parameter_grid({"noise_type": noise_types})
    ]
    seeds = np.random.RandomState(random_state).randint(0, 2**32, size=len(configs) * n_runs)
    out = Path(out_dir).absolute()
    tmp = _new_output_folder(out)
    try:
        manifest = _write_runs(
            builder,
            tmp,
            runs=[config for config in configs for _ in range(n_runs)],
            seeds=seeds,
            n_runs=n_runs,
            config=config,
            solver=strategy,
            prefix=f"{out.as_posix()}/" if manifest_paths == "absolute" else "",
        )
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write_runs(
    builder: LeadfieldBuilder,
    folder: Path,
    *,
    runs: list[tuple[dict[str, Any], dict[str, Any]]],
    seeds: np.ndarray,
    n_runs: int,
    config: ERPConfig | None,
    solver: Solver,
    prefix: str,
) -> pd.DataFrame:
    """Simulate ``runs`` (with their ``seeds``), write their summaries and the manifest into
    ``folder``; the manifest names each summary as ``prefix + name``."""
    leadfields: dict[tuple[str, str], tuple[LeadfieldData, Any]] = {}
    params = json.dumps(solver.options(), sort_keys=True)
    rows = []
    for global_id, ((data_params, noise_params), seed) in enumerate(
        zip(runs, seeds, strict=True), start=1
    ):
        subject, orientation = data_params["subject"], data_params["orientation_type"]
        if (subject, orientation) not in leadfields:
            data = builder.get_leadfield(subject, orientation, "load", return_metadata=True)
            prepared = solver.prepare(torch.as_tensor(data.leadfield), data.src_coords)
            leadfields[subject, orientation] = data, prepared
        data, prepared = leadfields[subject, orientation]
        noise_type = noise_params["noise_type"]
        run = simulate_run(
            data,
            nnz=data_params["nnz"],
            alpha=data_params["alpha_SNR"],
            seed=int(seed),
            noise_type=noise_type,
            config=config,
            solver=solver,
            prepared=prepared,
        )
        name = layout.posterior_summary_name(global_id, int(seed))
        metadata = {
            "global_run_id": global_id,
            "run_id": (global_id - 1) % n_runs + 1,
            "nruns": n_runs,
            "solver": solver.calibrain_name(noise_type),
            "solver_params": params,
            **noise_params,
            **data_params,
            "n_sources": data.n_sources,
            "n_times": run["x_true"].shape[-1],
            "seed": int(seed),
            "posterior_filename": name,
            "sensor_kind": data.sensor_kind,
            "coil_type": data.coil_type,
            "sensor_units": data.sensor_units,
            "sensor_unitmult": data.sensor_unitmult,
            "gamma": run["gamma"],
            "noise_var": run["noise_var"],
        }
        q_basis = data.Q_basis if orientation == "free" else None
        write_posterior_summary(folder / name, run, q_basis=q_basis, metadata=metadata)
        rows.append({**metadata, "posterior_summary": prefix + name})
    manifest = pd.DataFrame(rows)
    write_text(folder / MANIFEST, manifest.to_csv(index=False))
    return manifest


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
    return manifest.assign(path=paths)


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
        accepted = value if isinstance(value, (list, tuple, set)) else [value]
        manifest = manifest[manifest[key].isin(accepted)]
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
