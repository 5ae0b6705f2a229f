# ruff: noqa: E402  (a notebook imports where a step needs it)
# %% [markdown]
# # Quickstart 2 — M/EEG simulation and calibration
#
# Source imaging gives, for every brain source, a posterior: a best estimate and an uncertainty.
# Are its credible intervals honest? This notebook follows the CaliBrain recipe:
#
# 1. a CaliBrain data root: leadfields from real MNE forward models (EEG and MEG), posterior runs;
# 2. leadfield quality control: column norms and sensor topomaps;
# 3. simulating trials: ERP sources in nAm, sensor data in µV at a chosen SNR;
# 4. a PyTorch `DataLoader` of simulated trials with their Bayesian minimum-norm posterior;
# 5. coverage of the credible intervals and a Lightning run of CaliBrain's isotonic calibrator;
# 6. four inverse solvers (BMN, eLORETA, gamma-MAP, sFlex) on the same trials.
#
# Everything is synthetic and needs no download; point `LeadfieldBuilder` at a real
# `1284src_leadfield` folder (or set `CALIBRAIN_DATA`) to use real leadfields.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # progress bars print as text

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

from neurotorch.describe import describe
from neurotorch.synthetic.meeg import make_calibrain

root = make_calibrain(size="tiny", progress=False)  # reused if it already exists
figures = Path("figures")
print(describe(root))

# %% [markdown]
# ## 1. Leadfields
#
# A leadfield maps source activity (nAm) to sensors: µV/nAm for EEG, fT/nAm for MEG. Fixed
# orientation is `(n_sensors, n_sources)`; free orientation adds a component axis. Files are
# read without unpickling anything.

# %%
from neurotorch.meeg import LeadfieldBuilder

builder = LeadfieldBuilder(root / "1284src_leadfield")
eeg = builder.get_leadfield("fsaverage", "fixed", return_metadata=True)
meg = builder.get_leadfield("sub-meg01", "fixed", return_metadata=True)
for lf in (eeg, meg):
    print(lf.leadfield.shape, lf.units, "sources in metres, e.g.", np.round(lf.src_coords[0], 3))

# %% [markdown]
# ## 2. Quality control
#
# Column norms say how strongly each source reaches the sensors (deep sources are weak);
# the topomaps show every sensor's overall sensitivity and the field of one source.

# %%
from neurotorch.plotting.meeg import plot_leadfield_column_norms, plot_sensor_topomap

display(Image(filename=plot_leadfield_column_norms(eeg, figures / "eeg_norms.png")))
display(Image(filename=plot_sensor_topomap(eeg, figures / "eeg_source.png", source=10)))
display(Image(filename=plot_sensor_topomap(meg, figures / "meg_sensitivity.png")))

# %% [markdown]
# ## 3. Simulating trials
#
# The CaliBrain recipe: an epoch of −0.5…0.5 s at 250 Hz, `nnz` active sources with band-passed
# (1–5 Hz), Hann-windowed waveforms of log-normal peak amplitude (median 20 nAm), and white
# sensor noise scaled so that ‖noise‖ / ‖signal‖ = (1 − α) / α. Every draw takes a seeded
# `torch.Generator`, so the same seed gives the same trials anywhere.

# %%
from neurotorch.meeg import ERPConfig, SensorSimulator, SourceSimulator
from neurotorch.meeg.simulation import item_generator

generator = item_generator(seed=0, index=0)
sources = SourceSimulator().simulate(1, eeg.n_sources, 3, generator=generator)
sensors = SensorSimulator(eeg).simulate(sources, alpha=0.5, generator=generator)
times = ERPConfig().times

fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
top.plot(times, sources.waveforms[0].T)
top.set(ylabel="source (nAm)", title=f"3 active sources: {sources.active_indices[0].tolist()}")
bottom.plot(times, sensors.y[0].T, lw=0.5, color="0.4")
bottom.plot(times, sensors.y_clean[0].T, lw=0.8, color="tab:blue", alpha=0.5)
bottom.set(
    xlabel="time (s)", ylabel="EEG (µV)", title="64 sensors: noisy (grey) and clean (blue), α = 0.5"
)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. A DataLoader of trials with their posterior
#
# `CalibrationDataset` simulates trials on the fly (item `i` depends only on `(seed, i)`) and
# attaches the Bayesian minimum-norm posterior — mean and marginal variance per source. Its
# length is virtual: as many trials as you ask for.

# %%
from torch.utils.data import DataLoader

from neurotorch.data.meeg.calibration import CalibrationDataset

dataset = CalibrationDataset(eeg, length=64, nnz=(1, 3, 5), alpha=(0.3, 0.5, 0.9), seed=0)
print(dataset)
batch = next(iter(DataLoader(dataset, batch_size=16)))
print({key: tuple(value.shape) for key, value in batch.items() if hasattr(value, "shape")})

# %% [markdown]
# ## 5. Coverage and calibration
#
# A posterior is calibrated when its 90 % intervals contain the truth 90 % of the time. The
# runs stored in the CaliBrain root (one trial each, EEG and MEG) give empirical coverage
# curves; below the diagonal means over-confident intervals. These runs are under-confident:
# most sources are silent, and there the posterior keeps most of its prior width.

# %%
from neurotorch.meeg import read_run
from neurotorch.plotting.meeg import plot_coverage

runs = {
    path.stem.split("_seed")[0]: read_run(path)
    for path in sorted((root / "calibration_datasets").glob("*.npz"))
}
display(Image(filename=plot_coverage(runs, figures / "coverage.png")))

# %% [markdown]
# CaliBrain's calibrator learns the map nominal → empirical coverage by isotonic regression on
# training trials and builds intervals at the nominal level that reaches the wanted coverage.
# `CalibrationDataModule` + `IsotonicCalibrator` do this in one Lightning pass (the same run from
# the command line: `neurotorch fit --config configs/calibrator.yaml`). Here the posterior assumes
# 4× less sensor noise than there is, so its raw intervals miss their nominal coverage; after
# calibration the curve sits on the diagonal.

# %%
import logging

import lightning as L

from neurotorch.lightning import CalibrationDataModule
from neurotorch.models import IsotonicCalibrator

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # keep the output short
warnings.filterwarnings(
    "ignore", message=".*(configure_optimizers|LeafSpec|does not have many workers|__len__).*"
)
datamodule = CalibrationDataModule(
    leadfield={"data_dir": str(root)},  # the fsaverage EEG leadfield of this CaliBrain root
    posterior={"noise_var_scale": 0.25},  # BMN assuming a quarter of the noise variance
    nnz=[1, 3, 5],
    alpha=[0.3, 0.5, 0.7, 0.9],
    train_length=128,
    val_length=64,
    test_length=64,
    batch_size=32,
    streaming=True,
    seed=0,
)
calibrator = IsotonicCalibrator(output_dir="calibration-run")
trainer = L.Trainer(
    max_epochs=1,
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    num_sanity_val_steps=0,
    enable_progress_bar=False,
    enable_model_summary=False,
)
trainer.fit(calibrator, datamodule)
trainer.test(calibrator, datamodule, verbose=False)
display(Image(filename="calibration-run/coverage_test.png"))
report = calibrator.reports["test"]
before = report["metrics_before"]["mean_absolute_deviation"]
after = report["metrics_after"]["mean_absolute_deviation"]
assert after < before, "recalibration should bring coverage closer to nominal on held-out trials"

# %% [markdown]
# ## 6. Four inverse solvers, one set of trials
#
# CaliBrain compares the uncertainty of several inverse methods. The `solver` of `posterior=`
# gives the calibration datasets the posterior of Bayesian minimum norm (`"BMN"`, γ learned by evidence
# maximisation), eLORETA (`"eloreta"`), gamma-MAP (`"gamma_map"`, a prior variance per source,
# sparse) or sFlex (`"gamma_map_sflex"`, gamma-MAP on a smooth spatial basis). Item `i` depends
# only on `(seed, i)`, so the four datasets hold the same trials; here the noise variance is the
# pre-stimulus (baseline) estimate, as in CaliBrain's `"baseline"` runs. gamma-MAP switches
# most sources off (their prior variance shrinks towards zero, and below machine precision they are
# pruned): a silent source switched off is estimated as (almost exactly) zero with a tiny
# variance, so it is covered at every level — which is why its curve starts high.

# %%
from neurotorch.meeg import coverage_curve
from neurotorch.meeg.calibration import DEFAULT_LEVELS, calibration_metrics
from neurotorch.plotting.meeg import plot_coverage_curves

solvers = {"BMN": "BMN", "eLORETA": "eloreta", "gamma-MAP": "gamma_map", "sFlex": "gamma_map_sflex"}
curves, truths, switched_off = {}, [], {}
for name, solver in solvers.items():
    trials = CalibrationDataset(
        eeg,
        length=16,
        nnz=(1, 3, 5),
        alpha=(0.3, 0.5, 0.7),
        seed=1,
        posterior={"solver": solver, "noise_type": "baseline"},
    )
    batch = next(iter(DataLoader(trials, batch_size=16)))
    truths.append(batch["x_true"])
    var = batch["var"]
    switched_off[name] = float((var <= 1e-6 * var.amax(dim=1, keepdim=True)).float().mean())
    curves[name] = coverage_curve(
        batch["x_true"].numpy(), batch["mean"].numpy(), batch["var"].numpy(), DEFAULT_LEVELS
    )
title = "Four solvers, the same 16 EEG trials (baseline noise)"
display(
    Image(filename=plot_coverage_curves(DEFAULT_LEVELS, curves, figures / "solvers.png", title))
)
print({name: f"{share:.0%} of sources switched off" for name, share in switched_off.items()})
print(curves["gamma-MAP"])  # a coverage curve: empirical coverage at each nominal level
mad = {
    name: calibration_metrics(DEFAULT_LEVELS, c)["mean_absolute_deviation"]
    for name, c in curves.items()
}
assert all(bool((t == truths[0]).all()) for t in truths), "the four solvers saw the same trials"
assert switched_off["gamma-MAP"] > 0.5 and switched_off["BMN"] == 0.0, "gamma-MAP is sparse"
assert mad["eLORETA"] < mad["BMN"], "here eLORETA's intervals are the closest to nominal"
