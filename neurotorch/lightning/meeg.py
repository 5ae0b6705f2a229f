"""DataModules of leadfield-simulated M/EEG trials and calibrator training data.

Both build (or load) one leadfield in ``setup`` and give train/val/test datasets with
independent seed streams (`neurotorch.data.meeg.simulation.split_seed`); items are reproducible per index.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from torch.utils.data import Dataset, Subset

from neurotorch.data.meeg.calibration import (
    CalibrationBatches,
    CalibrationDataset,
    CalibrationRunsDataset,
)
from neurotorch.data.meeg.simulation import (
    PAPER_ALPHA,
    PAPER_NNZ,
    SimulatedSensorBatches,
    SimulatedSensorDataset,
    split_seed,
)
from neurotorch.data.partition import partition
from neurotorch.errors import ParameterError
from neurotorch.lightning.base import NeurotorchDataModule
from neurotorch.meeg.leadfield import LeadfieldData, build_leadfield
from neurotorch.meeg.solvers import check_solver, with_normalization

RUN_FRACTIONS = {"val": 0.15, "test": 0.15}  # calibration runs from disk: 70/15/15


class _LeadfieldDataModule(NeurotorchDataModule):
    """Shared leadfield options, split lengths and DataLoaders."""

    def __init__(
        self,
        data_dir: str | None = None,
        subject: str = "fsaverage",
        orientation_type: str = "fixed",
        retrieve_mode: str = "simulate",
        n_sources: int = 1284,
        n_sensors: int | None = None,
        sensor: str = "eeg",
        montage: str = "easycap-M43",
        nnz: Sequence[int] = PAPER_NNZ,
        alpha: Sequence[float] = PAPER_ALPHA,
        train_length: int = 2000,
        val_length: int = 200,
        test_length: int = 200,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        streaming: bool = False,
        storage_options: dict | None = None,
    ):
        for name, value in dict(
            batch_size=batch_size, train_length=train_length, val_length=val_length,
            test_length=test_length,
        ).items():  # fmt: skip
            if value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value}.")
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, seed=seed, streaming=streaming
        )
        self.save_hyperparameters()
        self.leadfield: LeadfieldData | None = None

    def _leadfield(self) -> LeadfieldData:
        if self.leadfield is None:
            hp = self.hparams
            self.leadfield = build_leadfield(
                hp.data_dir,
                hp.subject,
                hp.orientation_type,
                hp.retrieve_mode,
                hp.n_sources,
                hp.n_sensors,
                hp.sensor,
                hp.montage,
                hp.seed,
                hp.storage_options,
            )
        return self.leadfield

    def _split_options(self, split: str) -> tuple[int, int]:
        """(length or batch count, seed) of a split."""
        hp = self.hparams
        length = hp[f"{split}_length"]
        if hp.streaming:
            length = -(-length // hp.batch_size)
        return length, split_seed(hp.seed, split)

    def describe_source(self) -> str:
        hp = self.hparams
        return f"{hp.sensor} leadfield of {hp.subject} ({hp.retrieve_mode}, {hp.orientation_type})"


class SensorSimDataModule(_LeadfieldDataModule):
    """Simulated CaliBrain trials (`SimulatedSensorDataset`) for train/val/test.

    Parameters
    ----------
    data_dir, subject, orientation_type, retrieve_mode, n_sources, n_sensors, sensor, montage
        Which leadfield (see `neurotorch.meeg.leadfield.build_leadfield`); the default simulates an
        EEG easycap-M43 forward model in memory.
    nnz, alpha
        Grids of active-source counts and SNRs.
    train_length, val_length, test_length
        Virtual dataset lengths.
    batch_size, num_workers, seed
        DataLoader settings and the base seed.
    streaming
        Generate whole batches at once (`SimulatedSensorBatches`; lengths are rounded up to whole
        batches) instead of item by item; faster, but items then depend on the batch size.
    storage_options
        fsspec options when ``data_dir`` (or ``runs_dir``) is a URL such as
        ``s3://bucket/1284src_leadfield``.
    """

    def build_dataset(self, split: str) -> Dataset:
        hp = self.hparams
        length, seed = self._split_options(split)
        if hp.streaming:
            return SimulatedSensorBatches(
                self._leadfield(), hp.batch_size, length, hp.nnz, hp.alpha, seed,
                fresh_each_epoch=split == "train",
            )  # fmt: skip
        return SimulatedSensorDataset(self._leadfield(), length, hp.nnz, hp.alpha, seed)


class CalibrationDataModule(_LeadfieldDataModule):
    """Calibrator data: simulated trials with a CaliBrain solver's posterior, or CaliBrain runs
    from disk.

    Parameters
    ----------
    gamma, noise_var_scale, noise_type
        Prior variance (``"learn"``, ``"oracle"`` or nAm²), assumed/true noise variance and how
        the noise variance is set (``"oracle"``, ``"baseline"``, ``"adaptive_joint_learning"``);
        see `neurotorch.data.meeg.calibration.CalibrationDataset`.
    normalization
        CaliBrain's sLORETA normalisation of the BMN posterior.
    solver, solver_options
        CaliBrain's ``"BMN"`` (default), ``"eloreta"``, ``"gamma_map"`` or ``"gamma_map_sflex"``
        posterior, and its parameters (e.g. ``{"sigma": 0.02}``).
    runs_dir
        A folder (or fsspec URL) of ``posterior_summary_*.h5`` (or aggregated ``.npz``) runs; when
        given, the runs are split 70/15/15 (by ``seed``, `neurotorch.data.partition`) instead of
        simulating.
    **kwargs
        See `SensorSimDataModule`.
    """

    def __init__(
        self,
        gamma: float | str = "learn",
        noise_var_scale: float = 1.0,
        runs_dir: str | None = None,
        noise_type: str = "oracle",
        normalization: bool = False,
        solver: str = "BMN",
        solver_options: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_solver(solver, gamma, noise_type, with_normalization(solver_options, normalization))
        self.save_hyperparameters()

    def build_dataset(self, split: str) -> Dataset:
        hp = self.hparams
        if hp.runs_dir is not None:
            runs = CalibrationRunsDataset(os.fspath(hp.runs_dir), hp.storage_options)
            parts = partition(
                range(len(runs)), RUN_FRACTIONS["val"], RUN_FRACTIONS["test"], hp.seed
            )
            return Subset(runs, parts[split])
        length, seed = self._split_options(split)
        if hp.streaming:
            return CalibrationBatches(
                self._leadfield(), hp.batch_size, length, hp.nnz, hp.alpha, seed, hp.gamma,
                hp.noise_var_scale, fresh_each_epoch=split == "train", noise_type=hp.noise_type,
                normalization=hp.normalization, solver=hp.solver,
                solver_options=hp.solver_options,
            )  # fmt: skip
        return CalibrationDataset(
            self._leadfield(), length, hp.nnz, hp.alpha, seed, hp.gamma, hp.noise_var_scale,
            noise_type=hp.noise_type, normalization=hp.normalization, solver=hp.solver,
            solver_options=hp.solver_options,
        )  # fmt: skip
