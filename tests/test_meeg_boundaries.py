"""M/EEG arguments and records checked at the boundary: raw-SI units in memory, leadfield files
kept, one subject per fMRI-informed dataset, seeds, silent sources, mid-epoch validation of the
isotonic calibrator and run ids in predictions."""

from __future__ import annotations

import json
import types

import h5py
import lightning as L
import numpy as np
import pytest
import torch
from record_ids import trainer
from scipy.optimize import isotonic_regression
from scipy.stats import norm

from neurotorch.errors import DatasetExistsError, ParameterError, ShapeMismatchError
from neurotorch.meeg.leadfield import (
    LeadfieldBuilder,
    LeadfieldData,
    LeadfieldSpec,
    load_leadfield_npz,
    random_leadfield,
    save_leadfield_npz,
)
from neurotorch.meeg.simulation import SensorSimulator, SourceSimulator

# -- raw SI leadfields built in memory ------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "units", "coil", "unitmult", "factor", "shown"),
    [
        (2, 107, 1, 0, 1e-3, "µV/nAm"),  # V/Am
        (2, 107, 1, None, 1e-3, "µV/nAm"),  # no multiplier: raw SI, as on load
        (1, 112, 3022, 0, 1e6, "fT/nAm"),  # T/Am
        (1, 201, 3012, 0, 1e6, "fT/m/nAm"),  # T/m/Am
        (2, 107, 1, -6, 1.0, "µV/nAm"),  # already µV/nAm: unchanged
    ],
    ids=["eeg-raw", "eeg-no-multiplier", "mag-raw", "grad-raw", "eeg-scaled"],
)
def test_raw_si_leadfield_in_memory_is_scaled_as_on_load(
    tmp_path, kind, units, coil, unitmult, factor, shown
):
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((6, 9)) * (1e-6 if units == 107 else 1e-13)
    coords = rng.standard_normal((9, 3))
    made = LeadfieldData(raw.copy(), kind, units, unitmult, coil, coords)
    np.testing.assert_allclose(made.leadfield, raw * factor, rtol=1e-15)
    assert made.units == shown
    back = load_leadfield_npz(save_leadfield_npz(tmp_path / "x_fixed_leadfield.npz", made))
    np.testing.assert_allclose(back.leadfield, made.leadfield, rtol=1e-15)
    assert (back.units, back.sensor_unitmult) == (made.units, made.sensor_unitmult)
    # a file holding the raw values scales to the same matrix
    np.savez(
        tmp_path / "raw_fixed_leadfield.npz",
        leadfield=raw,
        sensor_kind=kind,
        sensor_units=units,
        coil_type=coil,
        src_coords=coords,
        **({} if unitmult is None else {"sensor_unitmult": unitmult}),
    )
    loaded = load_leadfield_npz(tmp_path / "raw_fixed_leadfield.npz")
    np.testing.assert_allclose(loaded.leadfield, made.leadfield, rtol=1e-15)


def test_raw_si_leadfield_simulates_the_same_before_and_after_a_round_trip(tmp_path):
    from neurotorch.data.meeg.simulation import SimulatedSensorDataset

    rng = np.random.default_rng(1)
    volts = rng.standard_normal((8, 20)) * 1e-6  # V/Am: µV/nAm x 1e3
    lf = LeadfieldData(volts, sensor_kind=2, sensor_units=107, sensor_unitmult=0, coil_type=1)
    back = load_leadfield_npz(
        save_leadfield_npz(tmp_path / "r_fixed_leadfield.npz", lf), require_src_coords=False
    )
    first = SimulatedSensorDataset(lf, length=1, nnz=(2,), alpha=(0.5,))[0]
    second = SimulatedSensorDataset(back, length=1, nnz=(2,), alpha=(0.5,))[0]
    torch.testing.assert_close(first["y"], second["y"], rtol=0, atol=0)
    # µV: the noise-free part is (volts * 1e-3) @ x, x in nAm
    active = first["active_indices"][first["active_indices"] >= 0].numpy()
    clean = (volts * 1e-3)[:, active] @ first["x"][active].double().numpy()
    assert np.abs(clean).max() > 0
    noise = first["y"].double().numpy() - clean
    np.testing.assert_allclose(np.linalg.norm(noise) / np.linalg.norm(clean), 1.0, rtol=1e-3)


# -- a simulated leadfield never replaces an existing file ------------------------------------


@pytest.mark.slow
def test_simulate_keeps_an_existing_leadfield_file_unless_told_to_overwrite(tmp_path):
    builder = LeadfieldBuilder(tmp_path)
    mine = random_leadfield("fixed", 7, 11, seed=3)
    mine.src_coords = np.zeros((11, 3))
    path = save_leadfield_npz(builder.path("fsaverage", "fixed"), mine)
    before = path.read_bytes()
    with pytest.raises(DatasetExistsError, match="overwrite=True") as info:
        builder.get_leadfield("fsaverage", "fixed", "simulate", n_sources=20)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    np.testing.assert_array_equal(builder.get_leadfield("fsaverage", "fixed"), mine.leadfield)
    # in memory only: the file stays as it is
    memory = builder.get_leadfield("fsaverage", "fixed", "simulate", n_sources=20, save=False)
    assert memory.shape[1] == 20 and path.read_bytes() == before
    made = builder.get_leadfield(
        "fsaverage", "fixed", "simulate", n_sources=20, overwrite=True, return_metadata=True
    )
    np.testing.assert_array_equal(builder.get_leadfield("fsaverage", "fixed"), made.leadfield)
    with pytest.raises(ParameterError, match="overwrite"):
        builder.get_leadfield("fsaverage", "fixed", "simulate", overwrite="yes")


# -- fMRI-informed sensors of one subject ---------------------------------------------------


@pytest.mark.parametrize(
    ("subjects", "asked", "match"),
    [
        (["sub-01", "sub-02"], "sub-01", "holds 2 subjects .*one FMRIInformedSensors per subject"),
        (["sub-02"], "sub-01", "pass subject='sub-02'"),
        (["sub-02"], "01", "pass subject='sub-02'"),
    ],
    ids=["two-subjects", "another-subject", "another-subject-short-id"],
)
def test_fmri_informed_sensors_refuse_betas_of_other_subjects(tmp_path, subjects, asked, match):
    from neurotorch.data.meeg.from_fmri import FMRIInformedSensors

    betas = types.SimpleNamespace(subjects=subjects)  # refused before anything is read
    with pytest.raises(ParameterError, match=match):
        FMRIInformedSensors.from_laion_fmri(betas, tmp_path / "nothing-here", asked)


# -- seeds are integers >= 0 ----------------------------------------------------------------


def _fmri_sensors(seed):
    from neurotorch.data.meeg.from_fmri import FMRIInformedSensors

    lf = LeadfieldData(np.ones((3, 2)), src_coords=np.zeros((2, 3)))
    return FMRIInformedSensors([], np.zeros((1, 3)), lf, np.eye(4), seed=seed)


def _negative_seed_cases():
    from neurotorch.data.meeg.calibration import CalibrationBatches, CalibrationDataset
    from neurotorch.data.meeg.simulation import SimulatedSensorBatches, SimulatedSensorDataset
    from neurotorch.lightning.meeg import (
        CalibrationDataModule,
        CalibrationRunsDataModule,
        SensorSimDataModule,
    )

    lf = {"retrieve_mode": "random", "n_sensors": 8, "n_sources": 20}
    grid = {"nnz": (1,), "alpha": (0.5,)}
    return {
        "SimulatedSensorDataset": lambda s: SimulatedSensorDataset(lf, 4, seed=s, **grid),
        "SimulatedSensorBatches": lambda s: SimulatedSensorBatches(lf, 2, 2, seed=s, **grid),
        "CalibrationDataset": lambda s: CalibrationDataset(lf, 4, seed=s, **grid),
        "CalibrationBatches": lambda s: CalibrationBatches(lf, 2, 2, seed=s, **grid),
        "LeadfieldSpec": lambda s: LeadfieldSpec(retrieve_mode="random", seed=s),
        "random_leadfield": lambda s: random_leadfield("fixed", 4, 5, seed=s),
        "FMRIInformedSensors": _fmri_sensors,
        "SensorSimDataModule": lambda s: SensorSimDataModule(lf, seed=s, **grid),
        "CalibrationDataModule": lambda s: CalibrationDataModule(lf, seed=s, **grid),
        "CalibrationRunsDataModule": lambda s: CalibrationRunsDataModule("runs", seed=s),
    }


@pytest.mark.parametrize("what", sorted(_negative_seed_cases()))
def test_negative_or_fractional_seeds_are_refused_when_made(what):
    make = _negative_seed_cases()[what]
    with pytest.raises(ParameterError, match="seed must be at least 0, got -1"):
        make(-1)
    with pytest.raises(ParameterError, match="seed must be an integer"):
        make(1.5)
    make(0)  # the smallest seed is accepted


# -- silent sources are never active ---------------------------------------------------------


@pytest.fixture(scope="module")
def silent_leadfield() -> LeadfieldData:
    rng = np.random.default_rng(4)
    matrix = rng.standard_normal((12, 30))
    matrix[:, :10] = 0.0  # sources 0..9: no sensor sees them
    return LeadfieldData(matrix, src_coords=rng.standard_normal((30, 3)))


def test_silent_sources_are_never_drawn_as_active(silent_leadfield):
    from neurotorch.data.meeg.calibration import CalibrationDataset
    from neurotorch.data.meeg.simulation import SimulatedSensorBatches, SimulatedSensorDataset

    assert silent_leadfield.silent_sources.tolist() == list(range(10))
    items = SimulatedSensorDataset(silent_leadfield, length=40, nnz=(1, 2), alpha=(0.5,))
    batches = SimulatedSensorBatches(silent_leadfield, 8, 3, nnz=(1,), alpha=(0.5,))
    trials = [items[i] for i in range(len(items))]
    for batch in batches:
        trials += [{k: v[j] for k, v in batch.items()} for j in range(8)]
    for trial in trials:
        active = trial["active_indices"][trial["active_indices"] >= 0].numpy()
        assert active.min() >= 10, active
        x = trial["x"].double().numpy()
        assert not x[:10].any() and (np.abs(x[active]).max(axis=1) > 0).all()
        clean = silent_leadfield.leadfield @ x
        noise = trial["y"].double().numpy() - clean
        # the SNR is defined: signal, and noise at ||noise|| / ||L x|| = (1 - 0.5) / 0.5
        assert np.linalg.norm(clean) > 0 and float(trial["noise_var"]) > 0
        np.testing.assert_allclose(np.linalg.norm(noise) / np.linalg.norm(clean), 1.0, rtol=1e-3)
    # every calibration item has a positive noise variance and a posterior
    calibration = CalibrationDataset(silent_leadfield, length=20, nnz=(1,), alpha=(0.5,))
    for i in range(len(calibration)):
        assert float(calibration[i]["noise_var"]) > 0
    with pytest.raises(ParameterError, match="1..20 .*10 silent sources"):
        SimulatedSensorDataset(silent_leadfield, nnz=(21,), alpha=(0.5,))


def test_grid_runs_never_make_a_silent_source_active(silent_leadfield):
    from neurotorch.meeg.grid import simulate_run

    for seed in range(12):
        run = simulate_run(silent_leadfield, nnz=1, alpha=0.5, seed=seed)
        active = np.flatnonzero(np.abs(run["x_true"]).max(axis=1) > 0)
        assert len(active) == 1 and active[0] >= 10 and run["noise_var"] > 0


def test_sources_without_silent_ones_are_drawn_as_before():
    """Excluding no source draws from the same random numbers: the top-nnz of uniform scores."""
    sim = SourceSimulator(dtype=torch.float64)
    got = sim.simulate(6, 15, 3, generator=torch.Generator().manual_seed(9), silent=None)
    scores = torch.rand(6, 15, generator=torch.Generator().manual_seed(9))
    want = np.argsort(-scores.numpy(), axis=1)[:, :3]
    np.testing.assert_array_equal(np.sort(got.active_indices.numpy()), np.sort(want))
    excluded = sim.simulate(
        6, 15, 3, generator=torch.Generator().manual_seed(9), silent=torch.tensor([int(want[0, 0])])
    )
    masked = scores.numpy().copy()
    masked[:, int(want[0, 0])] = -1
    np.testing.assert_array_equal(
        np.sort(excluded.active_indices.numpy()), np.sort(np.argsort(-masked, axis=1)[:, :3])
    )


# -- the simulators name what does not fit ---------------------------------------------------


def test_sensor_simulator_names_a_dtype_mismatch_and_a_wrong_alpha_count():
    lf = random_leadfield("fixed", 5, 9, seed=0)
    gen = torch.Generator().manual_seed(0)
    sources = SourceSimulator(dtype=torch.float32).simulate(4, 9, 2, generator=gen)
    with pytest.raises(
        ParameterError, match="torch.float32 but the SensorSimulator is torch.float64"
    ):
        SensorSimulator(lf, dtype=torch.float64).simulate(sources, 0.5, gen)
    sensors = SensorSimulator(lf, dtype=torch.float32)
    with pytest.raises(ShapeMismatchError, match="alpha holds 3 values .* batch of 4 trials"):
        sensors.simulate(sources, torch.tensor([0.2, 0.5, 0.7]), gen)
    with pytest.raises(ShapeMismatchError, match="alpha holds 4 values"):
        sensors.simulate(sources, torch.full((4, 1), 0.5), gen)
    out = sensors.simulate(sources, torch.tensor([0.2, 0.4, 0.6, 0.8]), gen)
    clean = (lf.leadfield[None] @ sources.dense().double().numpy()).astype(np.float64)
    ratio = np.linalg.norm(
        (out.y.double().numpy() - clean).reshape(4, -1), axis=1
    ) / np.linalg.norm(clean.reshape(4, -1), axis=1)
    np.testing.assert_allclose(ratio, [0.8 / 0.2, 0.6 / 0.4, 0.4 / 0.6, 0.2 / 0.8], rtol=1e-4)


def test_the_runs_datamodule_is_exported_with_the_others():
    import neurotorch.lightning as lightning_exports
    from neurotorch.lightning.meeg import CalibrationRunsDataModule

    assert lightning_exports.CalibrationRunsDataModule is CalibrationRunsDataModule
    assert "CalibrationRunsDataModule" in lightning_exports.__all__


# -- the isotonic calibrator validates inside a training epoch --------------------------------


class _Record(L.Callback):
    """The raw training batches and the isotonic map at every validation."""

    def __init__(self):
        self.batches: list[dict] = []
        self.at_validation: list[tuple[int, np.ndarray]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append({k: batch[k].detach().clone() for k in ("x_true", "mean", "var")})

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:  # the map the validation uses
            self.at_validation.append((len(self.batches), pl_module.fitted.cpu().numpy().copy()))


def _isotonic_reference(batches: list[dict]) -> np.ndarray:
    """CaliBrain's isotonic fit of the time-averaged coverage of ``batches``, in numpy/scipy."""
    from neurotorch.meeg.calibration import FIT_LEVELS

    scores = []
    for b in batches:
        x, mu, var = (b[k].numpy() for k in ("x_true", "mean", "var"))
        n_times = x.shape[-1]
        scores.append(np.abs(x.mean(-1) - mu.mean(-1)).ravel() / np.sqrt(var / n_times).ravel())
    score = np.concatenate(scores).astype(np.float64)
    levels = np.asarray(FIT_LEVELS, np.float64)
    coverage = (score[:, None] <= norm.ppf((1 + levels) / 2)[None, :]).mean(axis=0)
    fitted = isotonic_regression(coverage, increasing=True).x
    return np.clip(np.concatenate([[0.0], fitted, [1.0]]), 0.0, 1.0)


@pytest.mark.slow
def test_isotonic_calibrator_validates_inside_the_epoch_on_the_batches_so_far(tmp_path):
    from neurotorch.lightning.meeg import CalibrationDataModule
    from neurotorch.models.calibrator import IsotonicCalibrator

    dm = CalibrationDataModule(
        leadfield={"retrieve_mode": "random", "n_sensors": 16, "n_sources": 40},
        posterior={"noise_var_scale": 0.05},
        nnz=[1, 3],
        alpha=[0.5],
        train_length=64,
        val_length=16,
        test_length=16,
        batch_size=8,
        streaming=True,
    )
    record = _Record()
    model = IsotonicCalibrator(output_dir=str(tmp_path))
    run = trainer(tmp_path, val_check_interval=0.5, callbacks=[record])
    run.fit(model, dm)
    assert [seen for seen, _ in record.at_validation] == [4, 8]
    for seen, fitted in record.at_validation:
        np.testing.assert_allclose(fitted, _isotonic_reference(record.batches[:seen]), atol=1e-12)
    assert not np.allclose(record.at_validation[0][1], record.at_validation[1][1])
    np.testing.assert_allclose(
        model.fitted.numpy(), _isotonic_reference(record.batches), atol=1e-12
    )
    report = json.loads((tmp_path / "calibration_val.json").read_text())
    assert len(report["coverage_after"]) == len(model.levels)


# -- predictions of runs carry the run's ids --------------------------------------------------


@pytest.mark.slow
def test_predictions_of_runs_carry_run_id_and_seed(tmp_path):
    from neurotorch.lightning.meeg import CalibrationRunsDataModule
    from neurotorch.models.calibrator import IsotonicCalibrator
    from neurotorch.synthetic.meeg import make_calibrain

    root = make_calibrain(tmp_path / "cb", size="tiny", progress=False)
    folder = root / "posterior_summaries"
    dm = CalibrationRunsDataModule(str(folder), val_fraction=0.25, test_fraction=0.5, batch_size=1)
    model = IsotonicCalibrator(output_dir=str(tmp_path / "out"))
    run = trainer(tmp_path)
    run.fit(model, dm)
    rows = run.predict(model, dm)
    assert len(rows) == 2
    for row in rows:
        run_id, seed = int(row["run_id"]), int(row["seed"])
        with h5py.File(folder / f"posterior_summary_run{run_id:08d}_seed{seed}.h5") as f:
            meta = json.loads(f.attrs["metadata_json"])
            x_hat = f["x_hat"][()]
        assert (meta["run_id"], meta["seed"]) == (run_id, seed)
        assert int(row["nnz"]) == meta["nnz"]
        np.testing.assert_allclose(row["center"][0].numpy(), x_hat.mean(-1), rtol=1e-5, atol=1e-6)


def test_a_batch_of_runs_of_several_shapes_is_named_not_an_attribute_error():
    """Runs of free and fixed orientation in one folder collate into lists; every calibrator
    entry point says so (it died with an "unexpected AttributeError")."""
    from neurotorch.data.collate import collate_items
    from neurotorch.errors import FormatError
    from neurotorch.models import IsotonicCalibrator, NeuralCalibrator

    def run(*shape):
        return {
            "x_true": torch.ones(shape),
            "mean": torch.zeros(shape),
            "var": torch.ones(shape[:-1]),
        }

    batch = collate_items([run(6, 10), run(6, 3, 10)])
    assert isinstance(batch["x_true"], list)  # what the calibrators are handed
    from neurotorch.models.calibrator import _standardized

    isotonic, neural = IsotonicCalibrator(), NeuralCalibrator()
    isotonic.fitted = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)  # as if fitted
    for call in (
        lambda: _standardized(batch, "time_averaged"),  # what training and testing count
        lambda: isotonic.forward(batch),
        lambda: neural.forward(batch),
    ):
        with pytest.raises(FormatError, match="orientation_type and subject"):
            call()
