"""Calibrator training data: simulated trials with the posterior of a CaliBrain solver
(`neurotorch.meeg.solvers`), per item (`CalibrationDataset`) or per batch (`CalibrationBatches`),
and the same items read from CaliBrain posterior summaries or NPZ runs
(`CalibrationRunsDataset`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from neurotorch._docs import fill_doc
from neurotorch._options import as_settings
from neurotorch.data.meeg.simulation import (
    PAPER_ALPHA,
    PAPER_NNZ,
    SimulatedSensorBatches,
    SimulatedSensorDataset,
    TrialSimulation,
)
from neurotorch.errors import DataNotDownloadedError, ParameterError
from neurotorch.io.storage import DataRoot, is_url
from neurotorch.meeg.leadfield import LeadfieldData, LeadfieldSpec
from neurotorch.meeg.posterior import known_noise_var
from neurotorch.meeg.simulation import ERPConfig
from neurotorch.meeg.solvers import PosteriorSpec, Solver
from neurotorch.meeg.summaries import find_files, find_posterior_summaries, read_run


def add_posterior(
    batch: dict[str, Any],
    *,
    leadfield: torch.Tensor,
    spec: PosteriorSpec,
    solver: Solver,
    prepared: Any,
    config: ERPConfig,
) -> dict[str, Any]:
    """Add ``solver``'s posterior (``mean``, ``var``, ``cov_blocks``) of simulated trials to
    ``batch``, as ``spec`` says (see `neurotorch.meeg.solvers.PosteriorSpec`): the noise
    variance of ``spec.noise_type`` times ``spec.noise_var_scale``, and ``spec.gamma`` (an
    ``"oracle"`` gamma is each trial's mean source power ``mean(x**2)``). ``prepared`` is
    ``solver.prepare``'s result for this leadfield."""
    x, y = batch["x"], batch["y"]
    assumed = known_noise_var(spec.noise_type, y, true_noise_var=batch["noise_var"], config=config)
    if assumed is not None:
        assumed = assumed * spec.noise_var_scale
    gamma = spec.gamma
    if gamma == "oracle":
        gamma = x.double().flatten(1).pow(2).mean(dim=1)
    fit = solver.fit(y, leadfield, prepared, noise_var=assumed, gamma=gamma)
    batch.update(
        mean=fit.posterior.mean,
        var=fit.posterior.var,
        gamma=fit.gamma.to(x.dtype),
        assumed_noise_var=fit.noise_var.to(x.dtype),
    )
    if fit.posterior.cov_blocks is not None:
        batch["cov_blocks"] = fit.posterior.cov_blocks
    batch["x_true"] = batch.pop("x")
    return batch


class _PosteriorMixin:
    """Adds the posterior of `posterior` to every simulated batch (see `add_posterior`)."""

    posterior: PosteriorSpec
    simulation: TrialSimulation

    def _init_posterior(self, posterior: PosteriorSpec | Mapping[str, Any] | None) -> None:
        self.posterior = as_settings(PosteriorSpec, posterior, "posterior")
        self._solver = self.posterior.make_solver()
        leadfield = self.simulation.leadfield
        if self._solver.needs_src_coords and leadfield.src_coords is None:
            raise ParameterError(
                f"solver={self.posterior.solver!r} needs the source positions (src_coords) of "
                "the leadfield, and this leadfield has none: load or simulate one with positions."
            )
        if self.posterior.noise_type == "oracle" and max(self.simulation.alpha) >= 1.0:
            raise ParameterError(
                "Calibration data with noise_type='oracle' need alpha < 1: the posterior needs a "
                f"noise variance, and alpha={max(self.simulation.alpha)} has no noise."
            )
        self._prepared: Any = None

    def _describe_extra(self) -> str:
        return f", solver={self.posterior.calibrain_name}"

    def _batch(self, batch_size: int, generator: torch.Generator) -> dict[str, Any]:
        batch = self.simulation.draw(batch_size, generator, dense_sources=True)
        leadfield = self.simulation.simulators[1].leadfield
        if self._prepared is None:  # once per leadfield and process
            self._prepared = self._solver.prepare(leadfield, self.simulation.leadfield.src_coords)
        return add_posterior(
            batch,
            leadfield=leadfield,
            spec=self.posterior,
            solver=self._solver,
            prepared=self._prepared,
            config=self.simulation.config,
        )


@fill_doc
class CalibrationDataset(_PosteriorMixin, SimulatedSensorDataset):
    """Calibrator training items: simulated trials and a CaliBrain solver's posterior.

    Keys: ``y`` (M, T), ``x_true`` (N, T) or (N, K, T), ``mean`` (like ``x_true``), ``var`` (N,)
    or (N, K), ``cov_blocks`` (N, K, K, free only), ``alpha``, ``nnz``, ``noise_var`` (true),
    ``assumed_noise_var``, ``gamma`` (BMN's prior variance, or the mean of the per-source prior
    variances of eLORETA / gamma-MAP), ``active_indices``, ``index``. Item ``i`` depends only on
    ``(seed, i)``.

    Parameters
    ----------
    %(meeg_leadfield)s
    length
        Virtual number of items.
    %(meeg_nnz_alpha)s
        With ``noise_type="oracle"``, ``alpha`` must be < 1.
    %(seed)s
    %(meeg_posterior)s
    %(meeg_erp_config)s
    %(meeg_device)s
    """

    def __init__(
        self,
        leadfield: LeadfieldData | LeadfieldSpec | Mapping[str, Any] | None = None,
        length: int = 1000,
        nnz: int | Sequence[int] = PAPER_NNZ,
        alpha: float | Sequence[float] = PAPER_ALPHA,
        seed: int = 0,
        posterior: PosteriorSpec | Mapping[str, Any] | None = None,
        config: ERPConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        super().__init__(
            leadfield,
            length=length,
            nnz=nnz,
            alpha=alpha,
            seed=seed,
            config=config,
            return_sources=True,
            device=device,
        )
        self._init_posterior(posterior)


@fill_doc
class CalibrationBatches(_PosteriorMixin, SimulatedSensorBatches):
    """`CalibrationDataset`'s items generated a whole batch at a time (iterable; ``batch_size=None``
    in the DataLoader). Sharding and seeding as in `SimulatedSensorBatches`.

    Parameters
    ----------
    %(meeg_leadfield)s
    batch_size, n_batches
        Trials per batch and batches per epoch.
    %(meeg_nnz_alpha)s
    %(seed)s
    %(meeg_posterior)s
    %(meeg_erp_config)s
    %(meeg_device)s
    fresh_each_epoch
        Draw new batches every epoch (training); ``False`` repeats them (validation, test).
    """

    def __init__(
        self,
        leadfield: LeadfieldData | LeadfieldSpec | Mapping[str, Any] | None = None,
        batch_size: int = 64,
        n_batches: int = 16,
        nnz: int | Sequence[int] = PAPER_NNZ,
        alpha: float | Sequence[float] = PAPER_ALPHA,
        seed: int = 0,
        posterior: PosteriorSpec | Mapping[str, Any] | None = None,
        config: ERPConfig | None = None,
        device: torch.device | str = "cpu",
        fresh_each_epoch: bool = True,
    ):
        super().__init__(
            leadfield,
            batch_size=batch_size,
            n_batches=n_batches,
            nnz=nnz,
            alpha=alpha,
            seed=seed,
            config=config,
            return_sources=True,
            device=device,
            fresh_each_epoch=fresh_each_epoch,
        )
        self._init_posterior(posterior)


class CalibrationRunsDataset(Dataset):
    """CaliBrain runs read from disk: one item per posterior summary (.h5) or aggregated run (.npz).

    Items carry ``x_true``, ``mean``, ``var``, ``cov_blocks`` (free) as float32 tensors, plus the
    numeric run metadata present in the file (``alpha``, ``nnz``, ``seed``, ``run_id``).

    Parameters
    ----------
    files
        Paths or URLs, or one folder (or URL prefix such as ``s3://bucket/runs``) searched for
        ``posterior_summary_run*_seed*.h5`` (or, when it holds none, ``*.npz``).
    storage_options
        fsspec options for URLs (``endpoint_url``, ``anon``, ...). Remote HDF5 summaries are
        read from cached local copies, NPZ runs into memory; nothing stays open between items.
    """

    def __init__(
        self,
        files: str | os.PathLike | Sequence[str | os.PathLike],
        storage_options: dict | None = None,
    ):
        given: list[str | os.PathLike]
        if isinstance(files, (str, os.PathLike)):
            folder: DataRoot | None = DataRoot(files, storage_options)
            given = [files]
        else:
            folder, given = None, list(files)
        paths: list[str | os.PathLike]
        if folder is not None and folder.isdir():
            paths = list(find_posterior_summaries(folder) or find_files(folder, "*.npz"))
        else:
            paths = given
            missing = [p for p in paths if not is_url(p) and not os.path.isfile(p)]
            if missing:
                raise DataNotDownloadedError(
                    f"Calibration run file(s) not found: {', '.join(map(str, missing[:3]))}; give "
                    "a folder of posterior_summary_*.h5 or .npz runs, or existing files."
                )
        if not paths:
            raise DataNotDownloadedError(
                f"No posterior summaries or calibration runs found in {files}; point files= at a "
                "folder of posterior_summary_*.h5 or calibration .npz runs."
            )
        self.paths = paths
        self.storage_options = storage_options

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        first = self.paths[0]
        where = os.path.dirname(os.fspath(first)) or "."
        kinds = sorted({os.path.splitext(os.fspath(p))[1] for p in self.paths})
        return f"CalibrationRunsDataset({len(self.paths)} runs ({', '.join(kinds)}) in {where})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        run = read_run(self.paths[index], self.storage_options)
        item: dict[str, Any] = {
            "x_true": torch.as_tensor(run.x_true, dtype=torch.float32),
            "mean": torch.as_tensor(run.x_hat, dtype=torch.float32),
            "var": torch.as_tensor(run.var, dtype=torch.float32),
        }
        if run.cov_blocks is not None:
            item["cov_blocks"] = torch.as_tensor(run.cov_blocks, dtype=torch.float32)
        renames = {"alpha_SNR": "alpha", "nnz": "nnz", "seed": "seed", "run_id": "run_id"}
        for key, name in renames.items():
            value = run.metadata.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                item[name] = torch.tensor(value)
        return item
