"""Interoperability with the real ``calibrain`` package: files both ways, posteriors, coverage,
recalibration and simulated-trial statistics on identical inputs."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from meeg_helpers import mag_problem, one_torch_thread  # noqa: F401 - a fixture
from scipy import stats

from neurotorch.meeg import layout
from neurotorch.meeg.calibration import (
    IsotonicRecalibration,
    calibration_metrics,
    coverage_curve,
    ellipsoid_coverage_curve,
)
from neurotorch.meeg.forward import forward_to_leadfield, simulate_leadfield
from neurotorch.meeg.leadfield import load_leadfield_npz, save_leadfield_npz
from neurotorch.meeg.posterior import bmn_posterior, learn_hyperparameters
from neurotorch.meeg.simulation import ERPConfig, SensorSimulator, SourceSimulator

calibrain = pytest.importorskip("calibrain")
mne = pytest.importorskip("mne")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
logging.getLogger("calibrain").setLevel(logging.ERROR)

#: neurotorch sensor set -> (CaliBrain coil name, number of channels kept)
SENSORS = {"eeg": ("eeg", 13), "mag": ("mag", 11), "grad": ("grad", 14)}
N_SOURCES = 23
LEVELS = np.array([0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0])
#: two-sample Kolmogorov-Smirnov critical constant at significance 1e-3
KS_C = np.sqrt(-np.log(1e-3 / 2) / 2)


def _ks_bound(n: int, m: int) -> float:
    return KS_C * np.sqrt((n + m) / (n * m))


def _extract_leadfield():
    """CaliBrain's own ``extract_leadfield`` (its module runs a script on import, so only the
    function and its helpers are taken from the installed source)."""
    source = Path(calibrain.__file__).with_name("extract_leadfield.py").read_text()
    tree = ast.parse(source)
    tree.body = [
        n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef))
    ]
    namespace: dict = {}
    exec(compile(tree, "calibrain/extract_leadfield.py", "exec"), namespace)  # noqa: S102
    return namespace["extract_leadfield"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One free MNE forward per sensor set, written where CaliBrain expects it."""
    root = tmp_path_factory.mktemp("calibrain")
    for sensor, (_, n_sensors) in SENSORS.items():
        simulate_leadfield(
            "free",
            N_SOURCES,
            sensor,
            n_sensors=n_sensors,
            forward_path=root / layout.forward_file(sensor),
        )
    return root


def _forward(root: Path, sensor: str):
    return mne.read_forward_solution(root / layout.forward_file(sensor), verbose=False)


@pytest.mark.parametrize("orientation", ["fixed", "free"])
@pytest.mark.parametrize("sensor", list(SENSORS))
def test_neurotorch_files_are_read_and_simulated_by_calibrain(root, tmp_path, sensor, orientation):
    data = forward_to_leadfield(_forward(root, sensor), orientation)
    save_leadfield_npz(tmp_path / layout.leadfield_name(sensor, orientation), data)
    builder = calibrain.LeadfieldBuilder(leadfield_dir=str(tmp_path))
    theirs = builder.get_leadfield(sensor, orientation, "load", return_metadata=True)
    np.testing.assert_array_equal(theirs.leadfield, data.leadfield)
    for key in ("sensor_kind", "sensor_units", "sensor_unitmult", "coil_type"):
        assert int(getattr(theirs, key)) == getattr(data, key), key
    np.testing.assert_array_equal(theirs.src_coords, data.src_coords)
    # CaliBrain simulates sources for the coil class and projects them through the leadfield
    x, active = calibrain.SourceSimulator().simulate(
        N_SOURCES, 3, orientation, int(theirs.coil_type), seed=4
    )
    assert x.shape[1:-1] == theirs.leadfield.shape[2:]
    _, y, _, _ = calibrain.SensorSimulator().simulate(x, theirs.leadfield, 0.5, seed=5)
    assert y.shape == (data.n_sensors, 250) and np.isfinite(y).all()


@pytest.mark.parametrize("orientation", ["fixed", "free"])
@pytest.mark.parametrize("sensor", list(SENSORS))
def test_calibrain_files_are_read_by_neurotorch(root, tmp_path, sensor, orientation):
    coil_name, _ = SENSORS[sensor]
    _extract_leadfield()(str(root / layout.FORWARD_DIR), sensor, coil_name, orientation, tmp_path)
    path = tmp_path / layout.leadfield_name(sensor, orientation)
    theirs = calibrain.LeadfieldBuilder(leadfield_dir=str(tmp_path)).get_leadfield(
        sensor, orientation, "load", return_metadata=True
    )
    ours = load_leadfield_npz(path, allow_pickle=True)
    # CaliBrain scales the float32 file in float32 (1e-3 and the product each rounded once),
    # neurotorch in float64
    np.testing.assert_allclose(ours.leadfield, theirs.leadfield, rtol=2.0**-23, atol=0)
    assert ours.sensor_unitmult == int(theirs.sensor_unitmult)
    fwd = _forward(root, sensor)
    assert ours.ch_names == fwd["info"]["ch_names"]
    np.testing.assert_array_equal(ours.src_coords, fwd["source_rr"])
    plain = load_leadfield_npz(path)  # without pickles: no channel names, nothing unpickled
    assert plain.ch_names is None and "info" in plain.skipped_keys
    # and both packages extract the same leadfield from the same forward
    reference = forward_to_leadfield(fwd, orientation)
    scale = np.abs(reference.leadfield).max()
    # CaliBrain's fixed leadfield is MNE's float32 rotation (3-term dot products)
    np.testing.assert_allclose(
        ours.leadfield, reference.leadfield, rtol=0, atol=4 * 2.0**-24 * scale
    )
    if orientation == "free":
        np.testing.assert_allclose(ours.Q_basis, reference.Q_basis, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 2])
@pytest.mark.parametrize("learn_noise", [False, True])
def test_posterior_equals_calibrain_bmn(k, learn_noise):
    from calibrain.source_estimation import BMN, BMN_joint

    rng = np.random.default_rng(k)
    shape = (17, 29) if k == 1 else (17, 29, k)
    lf = rng.standard_normal(shape)
    flat = lf.reshape(17, -1)
    y = flat @ (3.0 * rng.standard_normal((flat.shape[1], 40))) + 2.0 * rng.standard_normal(
        (17, 40)
    )
    if learn_noise:
        ref = BMN_joint(flat, y, n_orient=k, track_history=False)
    else:
        ref = BMN(flat, y, noise_var=4.0, n_orient=k)
    yt = torch.tensor(y)[None]
    gamma, noise_var = learn_hyperparameters(yt, torch.tensor(lf), None if learn_noise else 4.0)
    post = bmn_posterior(yt, torch.tensor(lf), gamma, noise_var)
    assert float(noise_var[0]) == pytest.approx(ref["noise_var"], rel=1e-9)
    mean = post.mean[0].reshape(flat.shape[1], -1).numpy()
    np.testing.assert_allclose(
        mean, ref["posterior_mean"], rtol=1e-8, atol=1e-10 * np.abs(mean).max()
    )
    cov = ref["posterior_cov"]
    diag_blocks = np.stack([cov[k * i : k * i + k, k * i : k * i + k] for i in range(29)])
    var = post.var[0].numpy().reshape(29, k)
    np.testing.assert_allclose(var, np.diagonal(diag_blocks, axis1=1, axis2=2), rtol=1e-8)
    if k > 1:
        np.testing.assert_allclose(post.cov_blocks[0].numpy(), diag_blocks, rtol=1e-8, atol=1e-12)


def _runs(n_sources: int, k: int, scale: float, seed: int):
    """Posterior-like runs: truth, mean and a (mis)specified variance, shapes (N[, K], T)."""
    rng = np.random.default_rng(seed)
    shape = (n_sources, 50) if k == 1 else (n_sources, k, 50)
    x = rng.standard_normal(shape) * 2.0
    mean = x + rng.standard_normal(shape) * 2.0
    var = np.full(shape[:-1], 4.0 * scale)
    return x, mean, var


@pytest.mark.parametrize("mode", ["time_averaged", "pointwise"])
def test_coverage_curves_equal_calibrain(mode):
    ue = calibrain.UncertaintyEstimator(nominal_coverages=LEVELS)
    x, mean, var = _runs(97, 1, 0.03, seed=0)
    curve = {
        "time_averaged": ue.calibration_curve_intervals_aggregated,
        "pointwise": ue.calibration_curve_intervals_pointwise,
    }[mode](x, mean, var)["empirical_coverages"]
    np.testing.assert_array_equal(coverage_curve(x, mean, var, LEVELS, mode=mode), curve)
    x, mean, var = _runs(61, 3, 0.05, seed=1)
    blocks = np.einsum("nk,kl->nkl", var, np.eye(3)) + 0.3  # correlated components
    # pruned sources (gamma-MAP): zero blocks, exact (zero) estimates of a silent and an
    # active source, and a rank-1 block
    blocks[:3] = 0.0
    x[0], mean[:2] = 0.0, 0.0
    blocks[3] = np.outer([1.0, 2.0, 0.5], [1.0, 2.0, 0.5])
    theirs = ue.calibration_curve_ellipsoid_eeg_free_aggregated(x, mean, blocks)
    ours = ellipsoid_coverage_curve(x, mean, blocks, LEVELS)
    np.testing.assert_array_equal(ours, theirs["empirical_coverages"])
    theirs = ue.calibration_curve_ellipsoid_eeg_free_pointwise(x, mean, blocks)
    ours = ellipsoid_coverage_curve(x, mean, blocks, LEVELS, mode="pointwise")
    np.testing.assert_array_equal(ours, theirs["empirical_coverages"])


def test_recalibrated_levels_and_metrics_equal_calibrain():
    ue = calibrain.UncertaintyEstimator(nominal_coverages=LEVELS)
    calibrator = calibrain.UncertaintyCalibrator(ue, calibrain.MetricEvaluator(ue))

    def dataset(seed):
        x, mean, var = _runs(211, 1, 0.04, seed)
        return dict(
            orientation_type="fixed",
            coil_type=1,
            x_true=x,
            x_hat=mean,
            posterior_var=var,
            n_sources=211,
            n_times=50,
        )

    train, test = dataset(2), dataset(3)
    result = calibrator.calibrate(train_data=train, test_data=test)
    train_curve = coverage_curve(train["x_true"], train["x_hat"], train["posterior_var"], LEVELS)
    recalibrated = IsotonicRecalibration().fit(LEVELS, train_curve).recalibrate(LEVELS)
    post = result["post_calibration"]
    # CaliBrain inverts on a 2001-point grid that contains every fitted level: exact
    np.testing.assert_allclose(recalibrated, post["recalibrated_nominal_coverages"], atol=1e-12)
    after = coverage_curve(test["x_true"], test["x_hat"], test["posterior_var"], recalibrated)
    np.testing.assert_array_equal(after, post["empirical_coverages"])
    for stage, curve in (("pre_calibration", None), ("post_calibration", after)):
        if curve is None:
            curve = coverage_curve(test["x_true"], test["x_hat"], test["posterior_var"], LEVELS)
        ours = calibration_metrics(LEVELS, curve)
        assert ours == pytest.approx(result[stage]["calibration_metrics"], abs=1e-12)


def test_simulated_free_sources_match_calibrain_statistics():
    """Per-component waveforms: peak amplitudes, ERP durations and the independence of the
    components follow the same distributions (KS bounds from the sample sizes)."""
    n_sources = 300
    x_cb, active = calibrain.SourceSimulator().simulate(n_sources, n_sources, "free", 1, seed=8)
    ours = SourceSimulator(ERPConfig(), dtype=torch.float64).simulate(
        1, n_sources, n_sources, generator=torch.Generator().manual_seed(8), n_components=3
    )
    x_nt = ours.waveforms[0].numpy()  # (nnz, 3, T)
    x_cb = x_cb[active]

    def summaries(x):
        flat = x.reshape(-1, x.shape[-1])
        peaks = np.abs(flat).max(-1)
        durations = (flat != 0).sum(-1)
        cos = np.einsum("nt,nt->n", x[:, 0], x[:, 1]) / np.linalg.norm(x[:, 0], axis=-1)
        cos = cos / np.linalg.norm(x[:, 1], axis=-1)
        return peaks, durations, np.abs(cos)

    for ours_stat, theirs_stat in zip(summaries(x_nt), summaries(x_cb), strict=True):
        result = stats.ks_2samp(ours_stat, theirs_stat)
        assert result.statistic < _ks_bound(len(ours_stat), len(theirs_stat))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_sensor_noise_scaling_equals_calibrain(alpha):
    rng = np.random.default_rng(0)
    lf = rng.standard_normal((9, 20))
    sources = SourceSimulator(dtype=torch.float64).simulate(
        1, 20, 4, generator=torch.Generator().manual_seed(1)
    )
    x = sources.dense()[0].numpy()
    y_clean, y, noise, _ = calibrain.SensorSimulator().simulate(x, lf, alpha, seed=3)
    ours = SensorSimulator(lf, dtype=torch.float64).simulate(
        sources, alpha, torch.Generator().manual_seed(3)
    )
    np.testing.assert_allclose(ours.y_clean[0].numpy(), y_clean, rtol=1e-12)
    for batch, (their_y, their_noise) in ((ours, (y, noise)),):
        np.testing.assert_allclose(
            np.linalg.norm(batch.noise[0].numpy()), np.linalg.norm(their_noise), rtol=1e-12
        )
        np.testing.assert_allclose(
            np.linalg.norm(batch.y[0].numpy() - batch.noise[0].numpy()),
            np.linalg.norm(their_y - their_noise),
            rtol=1e-12,
            atol=1e-12 * np.linalg.norm(y_clean),
        )


@pytest.mark.parametrize("mode", ["pointwise", "time_averaged"])
@pytest.mark.parametrize("k", [1, 3])
def test_error_metrics_equal_calibrain(mode, k):
    from neurotorch.meeg.metrics import earth_movers_distance, error_metrics, mean_posterior_std

    rng = np.random.default_rng(k)
    n = 31
    x, mean, var = _runs(n, k, 1.0, seed=k)
    x[rng.permutation(n)[:25]] = 0.0  # sparse truth, dense estimate
    var = var * rng.uniform(0.5, 2.0, var.shape)
    coords = rng.standard_normal((n, 3)) * 0.05
    evaluator = calibrain.MetricEvaluator(calibrain.UncertaintyEstimator())
    setting = "fixed" if k == 1 else "eeg_free"
    their_mode = "aggregated" if mode == "time_averaged" else "pointwise"
    kwargs = dict(x_true=x, x_hat=mean, setting=setting, mode=their_mode)
    ours = error_metrics(x, mean, mode)
    for name in ("mse", "mae", "rmse", "rmae"):
        assert ours[name] == pytest.approx(getattr(evaluator, name)(**kwargs), rel=1e-12), name
    uncert = var if k == 1 else np.stack([np.diag(v) for v in var])
    if k > 1:  # CaliBrain reads free uncertainty as the full (NK, NK) covariance
        full = np.zeros((n * k, n * k))
        for i in range(n):
            full[k * i : k * i + k, k * i : k * i + k] = uncert[i]
        uncert = full
    theirs = evaluator.mean_posterior_std(
        posterior_uncert=uncert, setting=setting, mode=their_mode, n_times=50
    )
    assert mean_posterior_std(var, 50, mode) == pytest.approx(theirs, rel=1e-12)
    their_emd = evaluator.emd(coords=coords, **kwargs)
    # POT's network simplex and the LP reach the same optimum up to solver tolerance
    assert earth_movers_distance(x, mean, coords, mode) == pytest.approx(their_emd, rel=1e-7)


@pytest.mark.parametrize("k", [1, 3])
def test_sloreta_normalised_posterior_equals_calibrain(k):
    from calibrain.source_estimation import BMN

    from neurotorch.meeg.posterior import sloreta_weights, unweight_posterior, weight_leadfield

    rng = np.random.default_rng(10 + k)
    shape = (15, 26) if k == 1 else (15, 26, k)
    lf = rng.standard_normal(shape)
    flat = lf.reshape(15, -1)
    y = flat @ rng.standard_normal((flat.shape[1], 30)) + 0.5 * rng.standard_normal((15, 30))
    ref = BMN(flat, y, noise_var=0.25, n_orient=k, normalization=True)
    yt = torch.tensor(y)[None]
    weights = sloreta_weights(torch.tensor(lf))
    weighted = weight_leadfield(torch.tensor(lf), weights)
    gamma, noise = learn_hyperparameters(yt, weighted, 0.25)
    post = unweight_posterior(bmn_posterior(yt, weighted, gamma, noise), weights)
    mean = post.mean[0].reshape(flat.shape[1], -1).numpy()
    np.testing.assert_allclose(
        mean, ref["posterior_mean"], rtol=1e-8, atol=1e-10 * np.abs(mean).max()
    )
    diag = np.diag(ref["posterior_cov"]).reshape(26, k).squeeze()
    np.testing.assert_allclose(post.var[0].numpy(), diag, rtol=1e-8)


@pytest.mark.parametrize("normalization", [False, True])
def test_calibration_dataset_posterior_equals_calibrain(normalization):
    """A simulated calibration item's posterior is CaliBrain's BMN on the item's own data."""
    from calibrain.source_estimation import BMN

    from neurotorch.data.meeg.calibration import CalibrationDataset
    from neurotorch.meeg.leadfield import random_leadfield

    leadfield = random_leadfield("free", 12, 19, seed=3)
    item = CalibrationDataset(
        leadfield,
        length=1,
        nnz=(2,),
        alpha=(0.4,),
        posterior={"options": {"normalization": normalization}},
    )[0]
    y = item["y"].double().numpy()
    ref = BMN(
        leadfield.leadfield.reshape(12, -1),
        y,
        noise_var=float(item["assumed_noise_var"]),
        n_orient=3,
        normalization=normalization,
    )
    expected = ref["posterior_mean"].reshape(19, 3, -1)
    # items are float32: one rounding of values of this size
    np.testing.assert_allclose(
        item["mean"].numpy(), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max()
    )
    diag = np.diag(ref["posterior_cov"]).reshape(19, 3)
    np.testing.assert_allclose(item["var"].numpy(), diag, rtol=1e-5)


def test_calibrain_loads_and_aggregates_neurotorch_posterior_summaries(synthetic_root):
    """EEG and MEG, fixed and free: CaliBrain discovers, loads and concatenates the summaries of
    a synthetic root, with the arrays neurotorch reads from them."""
    from calibrain import calibration_dataset as cd

    from neurotorch.meeg.summaries import read_posterior_summary
    from neurotorch.synthetic.meeg import SUMMARY_DIR

    summaries = list(cd.discover_posterior_summaries(synthetic_root / SUMMARY_DIR))
    assert len(summaries) == 4
    for summary in summaries:
        theirs = cd.concatenate_summaries([summary])
        ours = read_posterior_summary(summary.path)
        np.testing.assert_array_equal(theirs["x_true"], ours.x_true)
        assert summary.metadata["coil_type"] in (1, 3022)


@pytest.mark.parametrize(
    ("solver", "noise_type", "calibrain_name", "manifest_paths"),
    [
        ("BMN", "oracle", "BMN", "relative"),
        ("BMN", "adaptive_joint_learning", "BMN_joint", "absolute"),
        ("eloreta", "oracle", "eloreta", "absolute"),
        ("gamma_map", "oracle", "gamma_map", "relative"),
        ("gamma_map", "adaptive_joint_learning", "gamma_lambda_map", "absolute"),
        ("gamma_map_sflex", "baseline", "gamma_map_sflex", "relative"),
        ("gamma_map_sflex", "adaptive_joint_learning", "gamma_lambda_map_sflex", "absolute"),
    ],
)
def test_grid_manifest_is_aggregated_and_calibrated_like_calibrain(
    tmp_path, monkeypatch, solver, noise_type, calibrain_name, manifest_paths
):
    """CaliBrain reads neurotorch's run manifest (relative paths from the manifest's folder,
    absolute ones from anywhere), finds CaliBrain's solver name in it, concatenates the runs and
    calibrates them to the same curves and recalibrated levels as `calibrate_runs`."""
    from calibrain import calibration_dataset as cd
    from calibrain.run_manifest import summaries_from_manifest

    from neurotorch.meeg.grid import MANIFEST, aggregate_runs, calibrate_runs, run_grid
    from neurotorch.meeg.leadfield import LeadfieldBuilder

    for orientation in layout.ORIENTATIONS:
        data = simulate_leadfield(orientation, 17, "eeg", n_sensors=9)
        save_leadfield_npz(tmp_path / layout.leadfield_name("s1", orientation), data)
    grid = {
        "subject": ["s1"],
        "orientation_type": ["fixed", "free"],
        "nnz": [2],
        "alpha_SNR": [0.4],
    }
    run_grid(
        LeadfieldBuilder(tmp_path),
        tmp_path / "runs",
        grid,
        (noise_type,),
        n_runs=4,
        solver=solver,
        solver_options={"max_iter": 40} if solver.startswith("gamma") else None,
        manifest_paths=manifest_paths,
    )
    # CaliBrain resolves manifest paths against the working directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path / "runs" if manifest_paths == "relative" else elsewhere)
    manifest = tmp_path / "runs" / MANIFEST
    summaries = summaries_from_manifest(manifest)
    assert {s.metadata["solver"] for s in summaries} == {calibrain_name}
    ue = calibrain.UncertaintyEstimator(nominal_coverages=LEVELS)
    for orientation in layout.ORIENTATIONS:
        picked = cd.filter_summaries_by_metadata(summaries, {"orientation_type": orientation})
        train, test = cd.concatenate_summaries(picked[:2]), cd.concatenate_summaries(picked[2:])
        theirs = calibrain.UncertaintyCalibrator(ue, calibrain.MetricEvaluator(ue)).calibrate(
            train_data=train, test_data=test
        )
        ids = [s.metadata["global_run_id"] for s in picked]
        ours = calibrate_runs(
            aggregate_runs(manifest, global_run_id=ids[:2]),
            aggregate_runs(manifest, global_run_id=ids[2:]),
            LEVELS,
        )
        np.testing.assert_array_equal(
            ours["coverage_before"], theirs["pre_calibration"]["empirical_coverages"]
        )
        np.testing.assert_allclose(
            ours["recalibrated_levels"],
            theirs["post_calibration"]["recalibrated_nominal_coverages"],
            atol=1e-12,
        )
        np.testing.assert_array_equal(
            ours["coverage_after"], theirs["post_calibration"]["empirical_coverages"]
        )


def test_mne_eloreta_and_gamma_map_equal_calibrains():
    """CaliBrain's eLORETA and gamma-MAP against MNE's, on the same fixed MEG forward and data."""
    from calibrain.source_estimation import eloreta
    from calibrain.source_estimation import gamma_map as calibrain_gamma_map

    from neurotorch.meeg.inverse import gamma_map, minimum_norm

    fwd, info, data, y = mag_problem()
    lf = data.leadfield
    quiet = logging.getLogger("calibrain-interop")
    theirs = eloreta(lf, y, 4.0, n_orient=1, logger=quiet)["posterior_mean"]
    ours = minimum_norm(fwd, info, y, 4.0, "eLORETA", lambda2=1.0)
    # same weight iteration (stops at a 1e-6 relative change); the forward is float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * np.abs(theirs).max())
    theirs = calibrain_gamma_map(lf, y, 4.0, n_orient=1, logger=quiet)["posterior_mean"]
    ours = gamma_map(fwd, info, y, 4.0, alpha=1.0)
    # MNE prunes gammas that CaliBrain keeps; those sources carry < 1e-3 of the peak
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3 * np.abs(theirs).max())


def _sparse_problem(k: int, n_sensors: int, n_sources: int, amplitude: float, noise_sd):
    """A random leadfield (``k`` components), two active source components of ``amplitude``,
    40 samples with noise of standard deviation ``noise_sd`` (scalar or per sensor)."""
    rng = np.random.default_rng(k)
    shape = (n_sensors, n_sources) if k == 1 else (n_sensors, n_sources, k)
    lf = rng.standard_normal(shape) * 0.3
    flat = lf.reshape(n_sensors, -1)
    x = np.zeros((flat.shape[1], 40))
    x[[2, 11]] = amplitude * rng.standard_normal((2, 40))
    return lf, flat, flat @ x + noise_sd * rng.standard_normal((n_sensors, 40))


def _assert_same_posterior(post, ref: dict) -> None:
    """A one-trial posterior equals a CaliBrain solver's output (mean and marginal variances) to
    1e-8 / 1e-7 of their peaks: the precision of two float64 runs of a 1e-11 stopping rule."""
    n_coeff = ref["posterior_cov"].shape[0]
    mean = post.mean[0].numpy().reshape(n_coeff, -1)
    var = post.var[0].numpy().ravel()
    theirs = ref["posterior_mean"].reshape(n_coeff, -1)
    np.testing.assert_allclose(mean, theirs, rtol=0, atol=1e-8 * np.abs(mean).max())
    np.testing.assert_allclose(var, np.diag(ref["posterior_cov"]), rtol=0, atol=1e-7 * var.max())


def _n_const2(flat: np.ndarray, y: np.ndarray, noise_var: float) -> float:
    """CaliBrain's gamma-MAP unit of gamma, from its whitened data and leadfield."""
    y_w, l_w = y / np.sqrt(noise_var), flat / np.sqrt(noise_var)
    return np.linalg.norm(y_w @ y_w.T, "fro") / np.abs(l_w).sum(1).max() ** 2


def test_eloreta_posterior_against_calibrain():
    """Same mean; CaliBrain's variance is, exactly, the one of ``(S^2 / (S^2 + 1))^2`` in place of
    ``S^2 / (S^2 + 1)`` (an aliased in-place product) times the noise variance once more (it
    whitens twice). The posterior itself is checked against its own model in
    tests/test_meeg_solvers.py."""
    from calibrain.source_estimation import eloreta

    from neurotorch.meeg.eloreta import eloreta_posterior, eloreta_weights

    rng = np.random.default_rng(11)
    lf = rng.standard_normal((17, 29)) * 0.3
    y = lf @ (3.0 * rng.standard_normal((29, 40))) + 2.0 * rng.standard_normal((17, 40))
    quiet = logging.getLogger("calibrain-interop")
    for noise_var in (4.0, 0.01):
        ref = eloreta(lf, y, noise_var, n_orient=1, logger=quiet)
        post = eloreta_posterior(torch.tensor(y)[None], torch.tensor(lf), noise_var)
        mean = post.mean[0].numpy()
        np.testing.assert_allclose(
            mean, ref["posterior_mean"], rtol=0, atol=1e-9 * np.abs(mean).max()
        )
        prior = noise_var * eloreta_weights(torch.tensor(lf)).numpy()
        _, s, vt = np.linalg.svd(lf * np.sqrt(prior) / np.sqrt(noise_var), full_matrices=False)
        shrink = s**2 / (s**2 + 1.0)
        leads = np.sqrt(prior)[:, None] * vt.T
        ours = prior - np.einsum("ik,k,ik->i", leads, shrink, leads)
        np.testing.assert_allclose(post.var[0].numpy(), ours, rtol=1e-9)
        theirs = noise_var * (prior - np.einsum("ik,k,ik->i", leads, shrink**2, leads))
        np.testing.assert_allclose(np.diag(ref["posterior_cov"]), theirs, rtol=1e-8)


@pytest.mark.parametrize("k", [1, 3])
def test_gamma_map_posterior_against_calibrain(k):
    """The same iterations (count, pruned set, gammas in CaliBrain's units); at a tight tolerance
    the same posterior. CaliBrain forms its posterior from the covariance of the iterate before
    the last, so at its default tolerance the two differ by about the last step."""
    from calibrain.source_estimation import gamma_map

    from neurotorch.meeg.sparse_bayes import gamma_map_posterior

    lf, flat, y = _sparse_problem(k, 17, 29, 3.0, 0.5)
    quiet = logging.getLogger("calibrain-interop")
    for tol, max_iter in ((1e-6, 300), (1e-11, 20000)):
        ref = gamma_map(flat, y, 0.25, n_orient=k, logger=quiet, tol=tol, max_iter=max_iter)
        res = gamma_map_posterior(
            torch.tensor(y)[None], torch.tensor(lf), 0.25, max_iter=max_iter, tol=tol
        )
        assert int(res.n_iter[0]) == ref["n_iter"]
        gamma = res.gamma[0].numpy().ravel()
        np.testing.assert_array_equal(np.flatnonzero(gamma), ref["active_indices"])
        np.testing.assert_allclose(
            gamma, ref["gammas_full"] * _n_const2(flat, y, 0.25), rtol=1e-7, atol=0
        )
        mean = res.posterior.mean[0].numpy().reshape(flat.shape[1], -1)
        var = res.posterior.var[0].numpy().ravel()
        close = 1e-8 if tol < 1e-10 else 1e-4
        peak = np.abs(mean).max()
        np.testing.assert_allclose(mean, ref["posterior_mean"], rtol=0, atol=close * peak)
        np.testing.assert_allclose(
            var, np.diag(ref["posterior_cov"]), rtol=0, atol=close * var.max()
        )


@pytest.mark.parametrize(
    ("solver", "orientation"), [("eloreta", "fixed"), ("gamma_map", "fixed"), ("gamma_map", "free")]
)
def test_calibration_dataset_solver_means_equal_calibrain(solver, orientation):
    """A calibration item's posterior mean is CaliBrain's solver on the item's own data and
    assumed noise variance (its free eLORETA does not run: CaliBrain 1.0.3 fails there)."""
    from calibrain.source_estimation import eloreta, gamma_map

    from neurotorch.data.meeg.calibration import CalibrationDataset
    from neurotorch.meeg.leadfield import random_leadfield

    leadfield = random_leadfield(orientation, 12, 19, seed=4)
    item = CalibrationDataset(
        leadfield,
        length=1,
        nnz=(2,),
        alpha=(0.4,),
        posterior={"solver": solver, "noise_type": "baseline"},
    )[0]
    k = 3 if orientation == "free" else 1
    ref = {"eloreta": eloreta, "gamma_map": gamma_map}[solver](
        leadfield.leadfield.reshape(12, -1),
        item["y"].double().numpy(),
        float(item["assumed_noise_var"]),
        n_orient=k,
        logger=logging.getLogger("calibrain-interop"),
    )
    expected = ref["posterior_mean"].reshape(item["mean"].shape)
    # float32 items; gamma-MAP: CaliBrain's posterior lags one iterate (see above)
    close = 1e-5 if solver == "eloreta" else 1e-4
    np.testing.assert_allclose(
        item["mean"].numpy(), expected, rtol=0, atol=close * np.abs(expected).max()
    )


@pytest.mark.parametrize("k", [1, 3])
def test_gamma_map_with_learned_sensor_noise_against_calibrain(k):
    """``noise_var=None`` is CaliBrain's ``gamma_lambda_map``: the same iterations, pruned set
    and per-sensor noise; at a tight tolerance the same posterior (its posterior lags one iterate
    in gamma and noise, as in `test_gamma_map_posterior_against_calibrain`)."""
    from calibrain.source_estimation import gamma_lambda_map

    from neurotorch.meeg.sparse_bayes import gamma_map_posterior

    # free sources need more sensors, or the per-sensor noise absorbs every source
    n_sensors = 17 if k == 1 else 60
    noise_sd = 0.3 * np.linspace(0.5, 2.0, n_sensors)[:, None]  # heteroscedastic sensors
    lf, flat, y = _sparse_problem(k, n_sensors, 29, 10.0, noise_sd)
    quiet = logging.getLogger("calibrain-interop")
    for tol, max_iter in ((1e-6, 300), (1e-11, 20000)):
        ref = gamma_lambda_map(flat, y, n_orient=k, logger=quiet, tol=tol, max_iter=max_iter)
        res = gamma_map_posterior(
            torch.tensor(y)[None], torch.tensor(lf), None, max_iter=max_iter, tol=tol
        )
        # near 1e-11 rounding (eigh here, SVD there) may move the last step by one
        slack = 0 if tol > 1e-10 else 1
        assert abs(int(res.n_iter[0]) - len(ref["err_gamma_hist"])) <= slack
        gamma = res.gamma[0].numpy().ravel()
        assert gamma.any()
        np.testing.assert_array_equal(np.flatnonzero(gamma), ref["active_indices"])
        np.testing.assert_allclose(res.noise_var[0].numpy(), ref["lambdas"], rtol=1e-8)
        if tol < 1e-10:
            _assert_same_posterior(res.posterior, ref)


def test_calibration_dataset_gamma_map_with_learned_noise_equals_calibrain():
    """``solver="gamma_map", noise_type="adaptive_joint_learning"``: the item's posterior mean
    and learned noise are CaliBrain's ``gamma_lambda_map`` on the item's own data."""
    from calibrain.source_estimation import gamma_lambda_map

    from neurotorch.data.meeg.calibration import CalibrationDataset
    from neurotorch.meeg.leadfield import random_leadfield

    leadfield = random_leadfield("fixed", 12, 19, seed=4)
    item = CalibrationDataset(
        leadfield,
        length=1,
        nnz=(2,),
        alpha=(0.6,),
        posterior={"solver": "gamma_map", "noise_type": "adaptive_joint_learning"},
    )[0]
    ref = gamma_lambda_map(
        leadfield.leadfield, item["y"].double().numpy(), logger=logging.getLogger("quiet")
    )
    expected = ref["posterior_mean"]
    assert float(item["assumed_noise_var"]) == pytest.approx(ref["noise_var"], rel=1e-6)
    # float32 items; CaliBrain's posterior lags one iterate
    np.testing.assert_allclose(
        item["mean"].numpy(), expected, rtol=0, atol=1e-4 * np.abs(expected).max()
    )


@pytest.mark.parametrize("normalize", ["sym", "row", None])
def test_spatial_basis_equals_calibrains(normalize):
    from calibrain.source_estimation import compute_B

    from neurotorch.meeg.forward import cortical_shell
    from neurotorch.meeg.sparse_bayes import spatial_basis

    rr, _ = cortical_shell(60, center=(0.0, 0.0, 0.0))
    theirs = compute_B(0.02, threshold_factor=2.5, normalize=normalize, src_coords=rr).toarray()
    ours = spatial_basis(rr, 0.02, 2.5, normalize).numpy()
    assert 0.05 < (theirs > 0).mean() < 0.9  # a kernel that is neither diagonal nor full
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("learn_noise", [False, True])
@pytest.mark.parametrize("k", [1, 3])
def test_sflex_posterior_against_calibrain(k, learn_noise):
    """``gamma_map_sflex`` (known noise) and ``gamma_lambda_map_sflex`` (per-sensor noise): the
    same iterations and pruned set, and at a tight tolerance the same posterior of the sources."""
    from calibrain.source_estimation import gamma_lambda_map_sflex, gamma_map_sflex

    from neurotorch.meeg.forward import cortical_shell
    from neurotorch.meeg.solvers import make_solver
    from neurotorch.meeg.sparse_bayes import gamma_map_posterior

    # small enough for CaliBrain's loops at a 1e-11 tolerance (the free case: 60 coefficients,
    # three sources kept with learned noise)
    n_sources, n_sensors = (30, 20) if k == 1 else (20, 36)
    rr, _ = cortical_shell(n_sources, center=(0.0, 0.0, 0.0))
    lf, flat, y = _sparse_problem(k, n_sensors, n_sources, 5.0, 0.5)
    basis = make_solver("gamma_map_sflex", {"sigma": 0.02}).prepare(torch.tensor(lf), rr).basis
    quiet = logging.getLogger("calibrain-interop")
    for tol, max_iter in ((1e-6, 300), (1e-11, 20000)):
        common = dict(n_orient=k, sigma=0.02, src_coords=rr, logger=quiet, tol=tol)
        if learn_noise:
            ref = gamma_lambda_map_sflex(flat, y, max_iter=max_iter, **common)
            n_iter = len(ref["err_gamma_hist"])
        else:
            ref = gamma_map_sflex(flat, y, 0.25, max_iter=max_iter, **common)
            n_iter = ref["n_iter"]
        res = gamma_map_posterior(
            torch.tensor(y)[None],
            torch.tensor(lf),
            None if learn_noise else 0.25,
            max_iter=max_iter,
            tol=tol,
            basis=basis,
        )
        slack = 0 if tol > 1e-10 else 1  # rounding at a 1e-11 stopping rule
        assert abs(int(res.n_iter[0]) - n_iter) <= slack
        gamma = res.gamma[0].numpy().ravel()
        np.testing.assert_array_equal(np.flatnonzero(gamma), ref["active_indices"])
        if tol < 1e-10:
            _assert_same_posterior(res.posterior, ref)


def test_calibration_dataset_sflex_equals_calibrain():
    """sFlex items on an MNE leadfield (its source positions give the basis) carry CaliBrain's
    ``gamma_map_sflex`` mean of the item's own data."""
    from calibrain.source_estimation import gamma_map_sflex

    from neurotorch.data.meeg.calibration import CalibrationDataset

    leadfield = simulate_leadfield("fixed", 30, "eeg", n_sensors=16)
    item = CalibrationDataset(
        leadfield,
        length=1,
        nnz=(2,),
        alpha=(0.5,),
        posterior={"solver": "gamma_map_sflex", "options": {"sigma": 0.015}},
    )[0]
    ref = gamma_map_sflex(
        leadfield.leadfield,
        item["y"].double().numpy(),
        float(item["assumed_noise_var"]),
        sigma=0.015,
        src_coords=leadfield.src_coords,
        logger=logging.getLogger("quiet"),
    )
    expected = ref["posterior_mean"]
    # float32 items; CaliBrain's posterior lags one iterate
    np.testing.assert_allclose(
        item["mean"].numpy(), expected, rtol=0, atol=1e-4 * np.abs(expected).max()
    )


def test_parity_script_prints_agreement():
    """``scripts/calibrain_parity.py`` runs and reports what the parity table says: equal pruned
    sets, and neurotorch's eLORETA intervals at their nominal coverage."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "calibrain_parity.py"
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    assert out.count("same_pruned True") == 8 and "same_pruned False" not in out
    assert "coverage: neurotorch 0.900" in out
    assert len([line for line in out.splitlines() if "iterations" in line]) == 12


@pytest.mark.parametrize(
    ("solver", "n_true"), [("gamma_map", 1), ("gamma_map", 3), ("gamma_map_sflex", 2)]
)
def test_earth_movers_distance_of_sparse_estimates_equals_calibrains(solver, n_true):
    """The EMD of gamma-MAP and sFlex estimates (one or a few true sources against many
    estimated ones, masses down to ~1e-14 of the total) is CaliBrain's (POT's) value."""
    from neurotorch.meeg.forward import cortical_shell
    from neurotorch.meeg.metrics import earth_movers_distance
    from neurotorch.meeg.solvers import fit_posterior

    rng = np.random.default_rng(n_true)
    coords, _ = cortical_shell(150, center=(0.0, 0.0, 0.0))
    lf = rng.standard_normal((30, 150))
    x = np.zeros((150, 40))
    x[rng.choice(150, n_true, replace=False)] = 10.0 * rng.standard_normal((n_true, 40))
    y = lf @ x + rng.standard_normal((30, 40))
    fit = fit_posterior(
        solver, torch.tensor(y)[None], torch.tensor(lf), noise_var=1.0, src_coords=coords
    )
    mean = fit.posterior.mean[0].numpy()
    assert (np.abs(mean).sum(1) > 0).sum() > 20 * n_true  # many estimated sources
    evaluator = calibrain.MetricEvaluator(calibrain.UncertaintyEstimator())
    for mode, theirs in (("pointwise", "pointwise"), ("time_averaged", "aggregated")):
        expected = evaluator.emd(x_true=x, x_hat=mean, coords=coords, setting="fixed", mode=theirs)
        ours = earth_movers_distance(x, mean, coords, mode)
        assert ours == pytest.approx(expected, rel=1e-8), mode


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    from neurotorch.synthetic.meeg import make_calibrain

    return make_calibrain(
        tmp_path_factory.mktemp("synthetic") / "root", size="tiny", progress=False
    )


def test_calibrain_calibrates_the_aggregated_free_meg_runs_of_make_calibrain(synthetic_root):
    """The aggregated free-orientation MEG NPZ carries ``Q_basis``: CaliBrain's own loader and
    calibrator accept it, with the coverage `calibrate_runs` finds on the same run."""
    from calibrain.workflows.calibration import _load_npz_dataset

    from neurotorch.meeg.grid import calibrate_runs
    from neurotorch.meeg.summaries import read_aggregated_run
    from neurotorch.synthetic.meeg import AGGREGATED_DIR

    runs = [read_aggregated_run(p) for p in sorted((synthetic_root / AGGREGATED_DIR).glob("*.npz"))]
    (meg_free,) = [
        r for r in runs if r.orientation_type == "free" and r.metadata["coil_type"] == 3022
    ]
    assert meg_free.Q_basis.shape == (meg_free.x_true.shape[0], 3, 2)
    data = _load_npz_dataset(meg_free.path)
    ue = calibrain.UncertaintyEstimator(nominal_coverages=LEVELS)
    theirs = calibrain.UncertaintyCalibrator(ue, calibrain.MetricEvaluator(ue)).calibrate(
        train_data=data, test_data=data
    )
    ours = calibrate_runs(meg_free, meg_free, LEVELS)
    np.testing.assert_array_equal(
        ours["coverage_before"], theirs["pre_calibration"]["empirical_coverages"]
    )
