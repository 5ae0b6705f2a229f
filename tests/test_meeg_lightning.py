"""Calibrators and DataModules end to end with a plain Lightning Trainer."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from neurotorch.lightning.meeg import CalibrationDataModule, SensorSimDataModule
from neurotorch.meeg.calibration import DEFAULT_LEVELS, coverage_curve
from neurotorch.models.calibrator import IsotonicCalibrator, NeuralCalibrator

pytestmark = pytest.mark.slow

DATA = dict(
    leadfield={"retrieve_mode": "random", "n_sensors": 24, "n_sources": 24},
    nnz=(3, 5),
    alpha=(0.3, 0.6),
    train_length=64,
    val_length=32,
    test_length=32,
    batch_size=16,
    streaming=True,
)
MISSPECIFIED = {"noise_var_scale": 0.05}


def _trainer(tmp_path, epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )


def test_isotonic_calibrator_reports_before_and_after(tmp_path, capsys):
    dm = CalibrationDataModule(posterior=MISSPECIFIED, **DATA)
    model = IsotonicCalibrator(output_dir=str(tmp_path))
    trainer = _trainer(tmp_path, 1)
    trainer.fit(model, dm)
    trainer.test(model, dm)
    report = json.loads((tmp_path / "calibration_test.json").read_text())
    assert (tmp_path / "coverage_test.png").stat().st_size > 0
    assert str(tmp_path / "calibration_test.json") in capsys.readouterr().out
    # the "before" curve is the coverage of the test split, recomputed here with numpy
    batches = list(dm.test_dataloader())
    stacked = {k: torch.cat([b[k] for b in batches]).numpy() for k in ("x_true", "mean", "var")}
    np.testing.assert_allclose(
        report["coverage_before"],
        coverage_curve(stacked["x_true"], stacked["mean"], stacked["var"]),
        atol=1e-9,
    )
    before, after = report["metrics_before"], report["metrics_after"]
    assert after["mean_absolute_deviation"] < before["mean_absolute_deviation"]
    assert report["levels"] == pytest.approx(DEFAULT_LEVELS.tolist())


@pytest.mark.parametrize(("solver", "num_workers"), [("eloreta", 0), ("gamma_map", 2)])
def test_isotonic_calibrator_on_eloreta_and_gamma_map_posteriors(tmp_path, solver, num_workers):
    """The other CaliBrain solvers through a real Trainer: each batch carries the solver's
    posterior of its own trials (with the misspecified noise), and recalibration helps."""
    from neurotorch.meeg.solvers import fit_posterior

    posterior = {**MISSPECIFIED, "solver": solver}
    dm = CalibrationDataModule(posterior=posterior, num_workers=num_workers, **DATA)
    model = IsotonicCalibrator(output_dir=str(tmp_path))
    trainer = _trainer(tmp_path, 1)
    trainer.fit(model, dm)
    trainer.test(model, dm)
    report = json.loads((tmp_path / "calibration_test.json").read_text())
    before, after = report["metrics_before"], report["metrics_after"]
    assert after["mean_absolute_deviation"] < before["mean_absolute_deviation"]
    batch = next(iter(dm.test_dataloader()))
    fit = fit_posterior(
        solver,
        batch["y"].double(),
        torch.as_tensor(dm.leadfield_data.leadfield),
        noise_var=batch["assumed_noise_var"].double(),
    )
    assert torch.allclose(batch["assumed_noise_var"].double(), 0.05 * batch["noise_var"].double())
    scale = fit.posterior.mean.abs().amax()
    assert torch.allclose(batch["mean"].double(), fit.posterior.mean, rtol=0, atol=1e-5 * scale)
    assert torch.allclose(batch["var"].double(), fit.posterior.var, rtol=1e-4, atol=0)


def test_neural_calibrator_trains(tmp_path):
    L.seed_everything(0)
    dm = CalibrationDataModule(posterior=MISSPECIFIED, **DATA)
    model = NeuralCalibrator(hidden=8, lr=0.01, output_dir=str(tmp_path))
    trainer = _trainer(tmp_path, 3)
    trainer.fit(model, dm)
    trainer.test(model, dm)
    report = json.loads((tmp_path / "calibration_test.json").read_text())
    assert (
        report["metrics_after"]["mean_absolute_deviation"]
        < report["metrics_before"]["mean_absolute_deviation"]
    )
    assert (tmp_path / "coverage_val.png").exists()


@pytest.mark.parametrize("levels", [[0.9, 0.5], [0.5, 0.5], []])
def test_calibrators_refuse_levels_out_of_order(levels):
    # the neural head's initial increments were log(expm1(<= 0)): NaN half-widths after fit
    for model in (NeuralCalibrator, IsotonicCalibrator):
        with pytest.raises(ValueError, match="increasing order"):
            model(levels=levels)


@pytest.mark.parametrize("streaming", [True, False])
def test_sizes_count_items_for_batched_and_item_datasets(streaming):
    lengths = {"train": 23, "val": 11, "test": 7}  # primes: whole batches of 5 round them up
    settings = {f"{part}_length": n for part, n in lengths.items()}
    dm = SensorSimDataModule(**{**DATA, **settings, "streaming": streaming, "batch_size": 5})
    dm.setup("fit")
    served = {part: sum(len(batch["y"]) for batch in dm.dataloader(part)) for part in lengths}
    assert dm.sizes() == served
    assert served == (
        {part: -(-n // 5) * 5 for part, n in lengths.items()} if streaming else lengths
    )


def test_sensor_sim_datamodule_splits_differ():
    dm = SensorSimDataModule(**{**DATA, "streaming": False})
    dm.setup("fit")
    train, val = next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))
    assert train["y"].shape == (16, 24, 250)
    assert not torch.equal(dm.datasets["train"][0]["y"], dm.datasets["val"][0]["y"])
    assert val["x"].shape == (16, 24, 250)


def _cli(init_args: dict, tmp_path):
    from lightning.pytorch.cli import LightningCLI

    config = {
        "model": {"class_path": "neurotorch.models.IsotonicCalibrator"},
        "data": {
            "class_path": "neurotorch.lightning.meeg.CalibrationDataModule",
            "init_args": init_args,
        },
        "trainer": {
            "logger": False,
            "enable_checkpointing": False,
            "default_root_dir": str(tmp_path),
        },
    }
    return LightningCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=config,
        save_config_callback=None,
    )


def test_config_settings_are_nested_mappings_checked_when_parsed(tmp_path, capsys):
    """A LightningCLI config gives the leadfield and posterior settings as plain nested
    mappings; a typo in a choice is refused when the config is parsed, before any data work."""
    from neurotorch.meeg.leadfield import LeadfieldSpec
    from neurotorch.meeg.solvers import PosteriorSpec

    cli = _cli(
        {
            "leadfield": {"retrieve_mode": "random", "n_sensors": 8, "n_sources": 12},
            "posterior": {
                "solver": "gamma_map",
                "noise_type": "baseline",
                "options": {"tol": 1e-5},
            },
            "nnz": [1, 2],
            "train_length": 8,
        },
        tmp_path,
    )
    dm = cli.datamodule
    assert dm.leadfield_spec == LeadfieldSpec(retrieve_mode="random", n_sensors=8, n_sources=12)
    assert dm.posterior == PosteriorSpec(
        solver="gamma_map", noise_type="baseline", options={"max_iter": 300, "tol": 1e-5}
    )
    assert (dm.n_sensors, dm.n_sources) == (8, 12)
    assert repr(dm).startswith(
        "CalibrationDataModule(random fixed leadfield (random), gamma_map posterior; not set up"
    )
    for setting, key, typo in (
        ("posterior", "solver", "gamma_mapp"),
        ("leadfield", "sensor", "megg"),
    ):
        with pytest.raises(SystemExit):
            _cli({setting: {key: typo}}, tmp_path)
        assert typo in capsys.readouterr().err
