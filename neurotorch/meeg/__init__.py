"""M/EEG in the CaliBrain conventions: leadfields, forward models, simulation, posteriors, calibration.

Reading files needs only numpy/h5py; the torch parts (`simulation`, `posterior`) and MNE
(`forward`) are imported on first use of their names.
"""

from __future__ import annotations

from neurotorch._lazy import lazy_exports

_EXPORTS = {
    "CoverageCurve": "neurotorch.meeg.calibration",
    "IsotonicRecalibration": "neurotorch.meeg.calibration",
    "calibration_metrics": "neurotorch.meeg.calibration",
    "coverage_curve": "neurotorch.meeg.calibration",
    "ellipsoid_coverage_curve": "neurotorch.meeg.calibration",
    "LeadfieldBuilder": "neurotorch.meeg.leadfield",
    "LeadfieldData": "neurotorch.meeg.leadfield",
    "LeadfieldSpec": "neurotorch.meeg.leadfield",
    "build_leadfield": "neurotorch.meeg.leadfield",
    "load_leadfield_npz": "neurotorch.meeg.leadfield",
    "save_leadfield_npz": "neurotorch.meeg.leadfield",
    "simulate_leadfield": "neurotorch.meeg.forward",
    "aggregate_runs": "neurotorch.meeg.grid",
    "calibrate_runs": "neurotorch.meeg.grid",
    "plan_grid": "neurotorch.meeg.grid",
    "read_manifest": "neurotorch.meeg.grid",
    "run_grid": "neurotorch.meeg.grid",
    "gamma_map": "neurotorch.meeg.inverse",
    "minimum_norm": "neurotorch.meeg.inverse",
    "eloreta_operator": "neurotorch.meeg.eloreta",
    "eloreta_posterior": "neurotorch.meeg.eloreta",
    "eloreta_weights": "neurotorch.meeg.eloreta",
    "earth_movers_distance": "neurotorch.meeg.metrics",
    "error_metrics": "neurotorch.meeg.metrics",
    "mean_posterior_std": "neurotorch.meeg.metrics",
    "GaussianPosterior": "neurotorch.meeg.posterior",
    "baseline_noise_var": "neurotorch.meeg.posterior",
    "bmn_posterior": "neurotorch.meeg.posterior",
    "learn_hyperparameters": "neurotorch.meeg.posterior",
    "SOLVERS": "neurotorch.meeg.solvers",
    "PosteriorSpec": "neurotorch.meeg.solvers",
    "fit_posterior": "neurotorch.meeg.solvers",
    "make_solver": "neurotorch.meeg.solvers",
    "gamma_map_posterior": "neurotorch.meeg.sparse_bayes",
    "spatial_basis": "neurotorch.meeg.sparse_bayes",
    "ERPConfig": "neurotorch.meeg.simulation",
    "SensorSimulator": "neurotorch.meeg.simulation",
    "SourceSimulator": "neurotorch.meeg.simulation",
    "PosteriorRun": "neurotorch.meeg.summaries",
    "read_aggregated_run": "neurotorch.meeg.summaries",
    "read_posterior_summary": "neurotorch.meeg.summaries",
    "read_run": "neurotorch.meeg.summaries",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
