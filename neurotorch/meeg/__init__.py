"""M/EEG in the CaliBrain conventions: leadfields, forward models, simulation, posteriors, calibration.

Reading files needs only numpy/h5py; the torch parts (`simulation`, `posterior`) and MNE
(`forward`) are imported on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IsotonicRecalibration": "calibration",
    "calibration_metrics": "calibration",
    "coverage_curve": "calibration",
    "ellipsoid_coverage_curve": "calibration",
    "LeadfieldBuilder": "leadfield",
    "LeadfieldData": "leadfield",
    "load_leadfield_npz": "leadfield",
    "save_leadfield_npz": "leadfield",
    "simulate_leadfield": "forward",
    "aggregate_runs": "grid",
    "calibrate_runs": "grid",
    "run_grid": "grid",
    "gamma_map": "inverse",
    "minimum_norm": "inverse",
    "eloreta_operator": "eloreta",
    "eloreta_posterior": "eloreta",
    "eloreta_weights": "eloreta",
    "earth_movers_distance": "metrics",
    "error_metrics": "metrics",
    "mean_posterior_std": "metrics",
    "GaussianPosterior": "posterior",
    "baseline_noise_var": "posterior",
    "bmn_posterior": "posterior",
    "learn_hyperparameters": "posterior",
    "SOLVERS": "solvers",
    "fit_posterior": "solvers",
    "prepare_solver": "solvers",
    "gamma_map_posterior": "sparse_bayes",
    "spatial_basis": "sparse_bayes",
    "ERPConfig": "simulation",
    "SensorSimulator": "simulation",
    "SourceSimulator": "simulation",
    "PosteriorRun": "summaries",
    "read_aggregated_run": "summaries",
    "read_posterior_summary": "summaries",
    "read_run": "summaries",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
