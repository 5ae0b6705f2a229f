"""CaliBrain's ``DataGenerator`` workflow: a parameter grid of simulated runs, their posterior
summaries and run manifest, and the aggregation and calibration of the runs.

`run_grid` expands the data grid (``subject``, ``orientation_type``, ``nnz``, ``alpha_SNR``) and the
noise types as scikit-learn's ``ParameterGrid`` does (keys sorted, the noise type varying
fastest), draws one seed per run as CaliBrain does (``RandomState(random_state).randint(0, 2**32)``),
simulates one trial per run, computes the chosen solver's posterior (`neurotorch.meeg.solvers`:
BMN with a learned prior variance, eLORETA or gamma-MAP) and writes
``posterior_summary_run{global_run_id:08d}_seed{seed}.h5`` plus ``run_manifest.csv`` (one row per
run, summary paths relative to the manifest's folder). `aggregate_runs` concatenates the runs a
manifest lists (filtered by metadata) and `calibrate_runs` fits CaliBrain's isotonic
recalibration on one aggregate and evaluates it on another.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from neurotorch.errors import FormatError, ParameterError
from neurotorch.io.atomic import atomic_path, write_text
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
from neurotorch.meeg.solvers import (
    check_solver,
    fit_posterior,
    full_posterior_cov,
    prepare_solver,
    resolve_options,
)
from neurotorch.meeg.summaries import PosteriorRun, read_posterior_summary

MANIFEST = "run_manifest.csv"
DATA_KEYS = ("alpha_SNR", "nnz", "orientation_type", "subject")
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


def simulate_run(
    data: LeadfieldData,
    nnz: int,
    alpha: float,
    seed: int,
    noise_type: str = "oracle",
    config: ERPConfig | None = None,
    index: int = 0,
    solver: str = "BMN",
    prepared: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One CaliBrain run: a trial drawn from ``(seed, index)`` and ``solver``'s posterior (BMN
    with a learned ``gamma``, eLORETA or gamma-MAP; float64).

    ``prepared``: `prepare_solver`'s result for this leadfield (default options otherwise).
    Returns ``x_true``, ``x_hat``, the full ``posterior_cov``, ``gamma`` (BMN's, or the mean
    per-source prior variance) and ``noise_var``.
    """
    check_solver(solver, "learn", noise_type)
    if noise_type == "oracle" and alpha >= 1.0:
        raise ParameterError("alpha_SNR = 1 has no noise: use a noise_type other than 'oracle'.")
    config = config or ERPConfig()
    gen = item_generator(seed, index)
    sources = SourceSimulator(config, dtype=torch.float64).simulate(
        1, data.n_sources, nnz, gen, data.n_components
    )
    sensors = SensorSimulator(data, dtype=torch.float64).simulate(sources, alpha, gen)
    leadfield = torch.as_tensor(data.leadfield)
    known = known_noise_var(noise_type, sensors.y, sensors.noise_var, config)
    if prepared is None:
        prepared = prepare_solver(solver, leadfield, data.src_coords)
    fit = fit_posterior(solver, sensors.y, leadfield, known, prepared=prepared)
    noise_var = float(fit.noise_var[0])
    return {
        "x_true": sources.dense()[0].numpy(),
        "x_hat": fit.posterior.mean[0].numpy(),
        "posterior_cov": full_posterior_cov(
            data.leadfield,
            fit.prior_blocks[0].numpy(),
            fit.sensor_noise_var[0].numpy(),
            None if fit.basis is None else fit.basis.numpy(),
        ),
        "gamma": float(fit.gamma[0]),
        "noise_var": noise_var,
    }


def write_posterior_summary(
    path: Path, run: dict[str, Any], q_basis: np.ndarray | None, metadata: dict[str, Any]
) -> None:
    """Write a CaliBrain ``posterior_summary_*.h5`` (``Q_basis`` NaN when there is none)."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        for key in ("x_true", "x_hat", "posterior_cov"):
            handle.create_dataset(key, data=run[key])
        handle.create_dataset("Q_basis", data=q_basis if q_basis is not None else np.nan)
        handle.attrs["metadata_json"] = json.dumps(metadata)


def run_grid(
    builder: LeadfieldBuilder,
    out_dir: str | os.PathLike,
    data_grid: Mapping[str, Sequence[Any]],
    noise_types: Sequence[str] = ("oracle",),
    n_runs: int = 2,
    random_state: int = 42,
    config: ERPConfig | None = None,
    solver: str = "BMN",
    solver_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Simulate every grid configuration ``n_runs`` times and write summaries and the manifest.

    Parameters
    ----------
    builder
        Where the leadfields are loaded from (``<subject>_<orientation>_leadfield.npz``).
    out_dir
        Folder for the summaries and ``run_manifest.csv`` (created; existing files of the same
        names are replaced).
    data_grid
        Lists of ``subject``, ``orientation_type``, ``nnz`` and ``alpha_SNR`` values.
    noise_types
        CaliBrain's ``noise_type`` values to cross with the data grid.
    n_runs, random_state
        Runs per configuration and the seed of the per-run seeds.
    config
        ERP settings.
    solver
        CaliBrain's ``"BMN"`` (``gamma`` learned; the default), ``"eloreta"`` or
        ``"gamma_map"`` or ``"gamma_map_sflex"`` (eLORETA needs ``noise_types`` ``"oracle"`` /
        ``"baseline"``; sFlex needs leadfields with ``src_coords``).
    solver_options
        CaliBrain's solver parameters (`neurotorch.meeg.solvers.SOLVER_OPTIONS`), written to the
        manifest as ``solver_params``.

    Returns
    -------
    pandas.DataFrame
        The manifest.
    """
    unknown = set(data_grid) - set(DATA_KEYS)
    if unknown or set(data_grid) != set(DATA_KEYS):
        raise ParameterError(
            f"data_grid needs exactly the keys {DATA_KEYS}; got {sorted(data_grid)}."
        )
    if int(n_runs) < 1:
        raise ParameterError(f"n_runs must be >= 1, got {n_runs}.")
    if not noise_types or set(noise_types) - set(NOISE_TYPES):
        raise ParameterError(f"noise_types must be among {NOISE_TYPES}, got {noise_types}.")
    for noise_type in noise_types:
        check_solver(solver, "learn", noise_type, solver_options)
    if "oracle" in noise_types and max(data_grid["alpha_SNR"]) >= 1.0:
        raise ParameterError("alpha_SNR = 1 has no noise: use a noise_type other than 'oracle'.")
    configs = [
        (data, noise) for data in parameter_grid(data_grid)
        for noise in parameter_grid({"noise_type": list(noise_types)})
    ]  # fmt: skip
    seeds = np.random.RandomState(random_state).randint(0, 2**32, size=len(configs) * n_runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    leadfields: dict[tuple[str, str], tuple[LeadfieldData, dict[str, Any]]] = {}
    params = json.dumps(resolve_options(solver, solver_options), sort_keys=True)
    rows = []
    runs = [config for config in configs for _ in range(n_runs)]
    for global_id, ((data_params, noise_params), seed) in enumerate(
        zip(runs, seeds, strict=True), start=1
    ):
        subject, orientation = data_params["subject"], data_params["orientation_type"]
        if (subject, orientation) not in leadfields:
            data = builder.get_leadfield(subject, orientation, "load", return_metadata=True)
            prepared = prepare_solver(
                solver, torch.as_tensor(data.leadfield), data.src_coords, solver_options
            )
            leadfields[subject, orientation] = data, prepared
        data, prepared = leadfields[subject, orientation]
        run = simulate_run(
            data, int(data_params["nnz"]), float(data_params["alpha_SNR"]), int(seed),
            noise_params["noise_type"], config, solver=solver, prepared=prepared,
        )  # fmt: skip
        name = layout.posterior_summary_name(global_id, int(seed))
        metadata = {
            "global_run_id": global_id, "run_id": (global_id - 1) % n_runs + 1, "nruns": n_runs,
            "solver": solver, "solver_params": params, **noise_params, **data_params, "n_sources": data.n_sources,
            "n_times": run["x_true"].shape[-1], "seed": int(seed), "posterior_filename": name,
            "sensor_kind": data.sensor_kind, "coil_type": data.coil_type,
            "sensor_units": data.sensor_units, "sensor_unitmult": data.sensor_unitmult,
            "gamma": run["gamma"], "noise_var": run["noise_var"],
        }  # fmt: skip
        q_basis = data.Q_basis if orientation == "free" else None
        write_posterior_summary(out / name, run, q_basis, metadata)
        rows.append({**metadata, "posterior_summary": name})
    manifest = pd.DataFrame(rows)
    write_text(out / MANIFEST, manifest.to_csv(index=False))
    return manifest


def aggregate_runs(manifest_path: str | os.PathLike, **criteria: Any) -> PosteriorRun:
    """Concatenate (along sources) the runs of a manifest whose metadata match ``criteria``
    (a value, or a list of accepted values), in manifest order.

    All selected runs must share orientation, coil class and number of samples.
    """
    manifest_path = Path(manifest_path)
    manifest = pd.read_csv(manifest_path)
    for key, value in criteria.items():
        if key not in manifest:
            raise ParameterError(f"{manifest_path} has no column {key!r} to filter on.")
        accepted = value if isinstance(value, (list, tuple, set)) else [value]
        manifest = manifest[manifest[key].isin(accepted)]
    if manifest.empty:
        raise ParameterError(f"No run in {manifest_path} matches {criteria}.")
    runs = [read_posterior_summary(manifest_path.parent / p) for p in manifest["posterior_summary"]]
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
        np.concatenate([r.x_true for r in runs]),
        np.concatenate([r.x_hat for r in runs]),
        np.concatenate([r.var for r in runs]),
        blocks,
        metadata={"n_runs": len(runs), **criteria},
        path=manifest_path,
    )


def _curve(run: PosteriorRun, levels: np.ndarray, mode: str) -> np.ndarray:
    if run.cov_blocks is None:
        return coverage_curve(run.x_true, run.x_hat, run.var, levels, mode)
    return ellipsoid_coverage_curve(run.x_true, run.x_hat, run.cov_blocks, levels, mode)


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
