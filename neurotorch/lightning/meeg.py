"""DataModules of leadfield-simulated M/EEG trials and calibrator training data.

`SensorSimDataModule` and `CalibrationDataModule` build (or load) one leadfield, described by a
`neurotorch.meeg.leadfield.LeadfieldSpec`, and serve train/val/test datasets with independent
seed streams (`neurotorch.data.meeg.simulation.split_seed`); items are reproducible per index.
`CalibrationRunsDataModule` serves CaliBrain runs read from disk, split by run. The base class
owns loaders, epochs, resume and ``predict``.

In YAML the settings objects are plain mappings::

    data:
      class_path: neurotorch.lightning.meeg.CalibrationDataModule
      init_args:
        leadfield: {sensor: eeg, n_sources: 300}
        posterior: {solver: gamma_map, noise_type: baseline}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch.utils.data import Dataset, Subset

from neurotorch._docs import fill_doc
from neurotorch._options import as_settings, check_int
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
    TrialSimulation,
    resolve_leadfield,
    split_seed,
)
from neurotorch.data.partition import check_fractions, partition
from neurotorch.lightning.base import NeurotorchDataModule
from neurotorch.meeg.leadfield import LeadfieldData, LeadfieldSpec
from neurotorch.meeg.solvers import PosteriorSpec


class _LeadfieldDataModule(NeurotorchDataModule):
    """One leadfield, the trial grids and the part lengths; the family's datasets per part."""

    def __init__(
        self,
        *,
        leadfield: LeadfieldSpec | Mapping[str, Any] | None,
        nnz: int | Sequence[int],
        alpha: float | Sequence[float],
        lengths: dict[str, int],
        batch_size: int,
        num_workers: int,
        seed: int,
        streaming: bool,
        predict_part: str,
    ):
        check_int("seed", seed, minimum=0)  # split_seed and the generators need seed >= 0
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            streaming=streaming,
            predict_part=predict_part,
        )
        self.leadfield_spec = as_settings(LeadfieldSpec, leadfield, "leadfield")
        self.nnz, self.alpha = nnz, alpha
        self.lengths = {
            part: check_int(f"{part}_length", n, minimum=1) for part, n in lengths.items()
        }
        self._leadfield_data: LeadfieldData | None = None

    @property
    def leadfield_data(self) -> LeadfieldData:
        """The leadfield (loaded, simulated or drawn on first use); its trial grids are checked
        against it then."""
        if self._leadfield_data is None:
            data = resolve_leadfield(self.leadfield_spec)
            TrialSimulation(data, nnz=self.nnz, alpha=self.alpha)  # refuses grids it cannot draw
            self._leadfield_data = data
        return self._leadfield_data

    @property
    def n_sensors(self) -> int:
        """Sensors of the leadfield (the ``y`` rows a model reads)."""
        return self.leadfield_data.n_sensors

    @property
    def n_sources(self) -> int:
        """Sources of the leadfield."""
        return self.leadfield_data.n_sources

    def _part_options(self, part: str) -> dict[str, Any]:
        """The keyword arguments every dataset of ``part`` shares: leadfield, grids, seed and
        size (a length, or whole batches when streaming)."""
        options: dict[str, Any] = dict(
            leadfield=self.leadfield_data,
            nnz=self.nnz,
            alpha=self.alpha,
            seed=split_seed(self.seed, part),
        )
        if self.streaming:
            options.update(
                batch_size=self.batch_size,
                n_batches=-(-self.lengths[part] // self.batch_size),
                fresh_each_epoch=part == "train",
            )
        else:
            options["length"] = self.lengths[part]
        return options

    def describe_source(self) -> str:
        return self.leadfield_spec.describe()


@fill_doc
class SensorSimDataModule(_LeadfieldDataModule):
    """Simulated CaliBrain trials (`SimulatedSensorDataset`, or `SimulatedSensorBatches` when
    streaming) for train/val/test.

    Parameters
    ----------
    leadfield
        Which leadfield: a `neurotorch.meeg.leadfield.LeadfieldSpec` or its fields as a mapping
        (``{sensor: mag, n_sources: 300}``, ``{data_dir: synthetic}``); default: an EEG
        easycap-M43 forward model with 1284 sources, simulated in memory.
    %(meeg_nnz_alpha)s
    %(meeg_split_lengths)s
    %(batch_size)s
    %(num_workers)s
    %(seed)s
    streaming
        Generate whole batches at once (`SimulatedSensorBatches`; lengths are rounded up to
        whole batches, training draws new batches every epoch) instead of item by item; faster,
        but items then depend on the batch size.
    %(predict_part)s
    """

    def __init__(
        self,
        leadfield: LeadfieldSpec | None = None,
        nnz: Sequence[int] = PAPER_NNZ,
        alpha: Sequence[float] = PAPER_ALPHA,
        train_length: int = 2000,
        val_length: int = 200,
        test_length: int = 200,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        streaming: bool = False,
        predict_part: str = "test",
    ):
        super().__init__(
            leadfield=leadfield,
            nnz=nnz,
            alpha=alpha,
            lengths={"train": train_length, "val": val_length, "test": test_length},
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            streaming=streaming,
            predict_part=predict_part,
        )

    def build_dataset(self, part: str) -> Dataset:
        options = self._part_options(part)
        if self.streaming:
            return SimulatedSensorBatches(**options)
        return SimulatedSensorDataset(**options)


@fill_doc
class CalibrationDataModule(_LeadfieldDataModule):
    """Calibrator data: simulated trials with a CaliBrain solver's posterior
    (`CalibrationDataset`, or `CalibrationBatches` when streaming) for train/val/test.

    Parameters
    ----------
    leadfield
        Which leadfield: a `neurotorch.meeg.leadfield.LeadfieldSpec` or its fields as a mapping
        (``{sensor: mag, n_sources: 300}``, ``{data_dir: synthetic}``); default: an EEG
        easycap-M43 forward model with 1284 sources, simulated in memory.
    %(meeg_posterior)s
    %(meeg_nnz_alpha)s
    %(meeg_split_lengths)s
    %(batch_size)s
    %(num_workers)s
    %(seed)s
    streaming
        Generate whole batches at once (`CalibrationBatches`; lengths are rounded up to whole
        batches, training draws new batches every epoch) instead of item by item; faster, but
        items then depend on the batch size.
    %(predict_part)s
    """

    def __init__(
        self,
        leadfield: LeadfieldSpec | None = None,
        posterior: PosteriorSpec | None = None,
        nnz: Sequence[int] = PAPER_NNZ,
        alpha: Sequence[float] = PAPER_ALPHA,
        train_length: int = 2000,
        val_length: int = 200,
        test_length: int = 200,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        streaming: bool = False,
        predict_part: str = "test",
    ):
        super().__init__(
            leadfield=leadfield,
            nnz=nnz,
            alpha=alpha,
            lengths={"train": train_length, "val": val_length, "test": test_length},
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            streaming=streaming,
            predict_part=predict_part,
        )
        self.posterior = as_settings(PosteriorSpec, posterior, "posterior")

    def build_dataset(self, part: str) -> Dataset:
        options = self._part_options(part)
        if self.streaming:
            return CalibrationBatches(posterior=self.posterior, **options)
        return CalibrationDataset(posterior=self.posterior, **options)

    def describe_source(self) -> str:
        return f"{super().describe_source()}, {self.posterior.calibrain_name} posterior"


@fill_doc
class CalibrationRunsDataModule(NeurotorchDataModule):
    """CaliBrain runs read from disk (`CalibrationRunsDataset`: posterior summaries or aggregated
    NPZ runs), split by run into train/val/test (`neurotorch.data.partition`, seeded).

    Parameters
    ----------
    runs_dir
        A folder (or fsspec URL) of ``posterior_summary_*.h5`` (or, when it holds none,
        aggregated ``.npz``) runs.
    %(storage_options)s
    val_fraction, test_fraction
        Shares of the runs held out for validation and test (each at least one run).
    %(batch_size)s
    %(num_workers)s
    %(seed)s
    %(predict_part)s
    """

    def __init__(
        self,
        runs_dir: str,
        storage_options: dict[str, Any] | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        predict_part: str = "test",
    ):
        check_int("seed", seed, minimum=0)  # the partition's generator needs seed >= 0
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, seed=seed, predict_part=predict_part
        )
        self.runs_dir = os.fspath(runs_dir)
        self.storage_options = storage_options
        self.fractions = check_fractions(val_fraction, test_fraction)
        self._runs: CalibrationRunsDataset | None = None

    def build_dataset(self, part: str) -> Dataset:
        if self._runs is None:
            self._runs = CalibrationRunsDataset(self.runs_dir, self.storage_options)
        val, test = self.fractions
        parts = partition(range(len(self._runs)), val, test, seed=self.seed)
        return Subset(self._runs, parts[part])

    def describe_source(self) -> str:
        return f"CaliBrain runs in {self.runs_dir}"
