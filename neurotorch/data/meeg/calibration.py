"""Calibrator training data: simulated trials with the posterior of a CaliBrain solver (BMN,
eLORETA or gamma-MAP), per item
(`CalibrationDataset`) or per batch (`CalibrationBatches`), and the same items read from CaliBrain
posterior summaries or NPZ runs (`CalibrationRunsDataset`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from neurotorch.data.meeg.simulation import (
    PAPER_ALPHA,
    PAPER_NNZ,
    SimulatedSensorBatches,
    SimulatedSensorDataset,
    TrialSimulation,
)
from neurotorch.errors import DataNotDownloadedError, ParameterError
from neurotorch.io.storage import DataRoot, is_url
from neurotorch.meeg.leadfield import LeadfieldData
from neurotorch.meeg.posterior import known_noise_var
from neurotorch.meeg.simulation import ERPConfig
from neurotorch.meeg.solvers import (
    check_solver,
    fit_posterior,
    prepare_solver,
    with_normalization,
)
from neurotorch.meeg.summaries import find_files, find_posterior_summaries, read_run


def posterior_item(
    batch: dict[str, Any],
    leadfield: torch.Tensor,
    gamma: float | str,
    noise_var_scale: float,
    noise_type: str = "oracle",
    config: ERPConfig | None = None,
    solver: str = "BMN",
    prepared: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Add ``solver``'s posterior (``mean``, ``var``, ``cov_blocks``) of simulated trials to
    ``batch`` (see `neurotorch.meeg.solvers`).

    ``gamma`` (BMN only): ``"learn"`` (CaliBrain's evidence maximisation, see
    `learn_hyperparameters`), ``"oracle"`` (each trial's mean source power ``mean(x**2)``) or a
    number (nAm²). ``noise_type``: ``"oracle"`` (the true noise variance), ``"baseline"`` (the
    pre-stimulus estimate of `baseline_noise_var`, timing from ``config``) -- both times
    ``noise_var_scale`` -- or ``"adaptive_joint_learning"`` (learned with the prior: one variance
    for BMN, one per sensor for gamma-MAP). ``prepared``: `prepare_solver`'s result for this
    leadfield, with the solver's options (e.g. BMN's ``normalization``, CaliBrain's sLORETA
    normalisation).
    """
    x, y = batch["x"], batch["y"]
    assumed = known_noise_var(noise_type, y, batch["noise_var"], config or ERPConfig())
    if assumed is not None:
        assumed = assumed * float(noise_var_scale)
    if gamma == "oracle":
        gamma = x.double().flatten(1).pow(2).mean(dim=1)
    fit = fit_posterior(solver, y, leadfield, assumed, gamma, prepared)
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


def _positive_number(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)) and float(value) > 0)
    except (TypeError, ValueError):
        return False


class _PosteriorMixin:
    """Adds ``solver``'s posterior to every simulated batch (see `posterior_item`)."""

    gamma: float | str
    noise_var_scale: float
    noise_type: str
    solver: str
    solver_options: dict[str, Any]
    simulation: TrialSimulation

    def _init_posterior(
        self,
        gamma: float | str,
        noise_var_scale: float,
        noise_type: str,
        normalization: bool,
        solver: str,
        solver_options: Mapping[str, Any] | None,
    ) -> None:
        if gamma not in ("learn", "oracle") and not _positive_number(gamma):
            raise ParameterError(
                f"gamma must be 'learn', 'oracle' or a positive number, got {gamma!r}."
            )
        options = with_normalization(solver_options, normalization)
        check_solver(solver, gamma, noise_type, options)
        if solver == "gamma_map_sflex" and self.simulation.leadfield.src_coords is None:
            raise ParameterError(
                "solver='gamma_map_sflex' needs the source positions (src_coords) of the "
                "leadfield, and this leadfield has none: load or simulate one with positions."
            )
        if noise_type == "oracle" and any(a >= 1.0 for a in self.simulation.alpha):
            raise ParameterError(
                "Calibration data with noise_type='oracle' need alpha < 1: the posterior needs a "
                "noise variance."
            )
        if not _positive_number(noise_var_scale):
            raise ParameterError(f"noise_var_scale must be > 0, got {noise_var_scale!r}.")
        self.gamma = gamma
        self.noise_var_scale = float(noise_var_scale)
        self.noise_type = noise_type
        self.solver = solver
        self.solver_options = options
        self._prepared: dict[str, Any] | None = None

    def _batch(self, batch_size: int, generator: torch.Generator) -> dict[str, Any]:
        batch = self.simulation.draw(batch_size, generator, dense_sources=True)
        leadfield = self.simulation.simulators[1].leadfield
        if self._prepared is None:  # once per leadfield and process
            self._prepared = prepare_solver(
                self.solver, leadfield, self.simulation.leadfield.src_coords, self.solver_options
            )
        return posterior_item(
            batch,
            leadfield,
            self.gamma,
            self.noise_var_scale,
            self.noise_type,
            self.simulation.config,
            self.solver,
            self._prepared,
        )


class CalibrationDataset(_PosteriorMixin, SimulatedSensorDataset):
    """Calibrator training items: simulated trials and a CaliBrain solver's posterior.

    Keys: ``y`` (M, T), ``x_true`` (N, T) or (N, K, T), ``mean`` (like ``x_true``), ``var`` (N,)
    or (N, K), ``cov_blocks`` (N, K, K, free only), ``alpha``, ``nnz``, ``noise_var`` (true),
    ``assumed_noise_var``, ``gamma``, ``active_indices``. Item ``i`` depends only on ``(seed, i)``.

    Parameters
    ----------
    leadfield, length, nnz, alpha, seed, config, device
        As in `SimulatedSensorDataset`; with ``noise_type="oracle"``, ``alpha`` must be < 1.
    gamma
        BMN's source prior variance: ``"learn"`` (CaliBrain's evidence maximisation, the
        default), ``"oracle"`` (each trial's mean source power) or a value (nAm²). The item's
        ``gamma`` is that value, or for eLORETA / gamma-MAP the mean of their per-source prior
        variances.
    noise_var_scale
        Assumed / true (or baseline) noise variance; values other than 1 misspecify the posterior.
    noise_type
        CaliBrain's ``"oracle"`` (true noise variance), ``"baseline"`` (pre-stimulus estimate)
        or ``"adaptive_joint_learning"`` (learned jointly with the prior, ``gamma="learn"``).
    normalization
        CaliBrain's sLORETA normalisation of the BMN posterior (see `posterior_item`).
    solver
        CaliBrain's ``"BMN"`` (default), ``"eloreta"`` (`neurotorch.meeg.eloreta`) or
        ``"gamma_map"`` (`neurotorch.meeg.sparse_bayes`). eLORETA needs a noise variance
        (``noise_type`` ``"oracle"`` or ``"baseline"``); gamma-MAP with
        ``"adaptive_joint_learning"`` learns one per sensor (CaliBrain's ``gamma_lambda_map``);
        ``"gamma_map_sflex"`` is gamma-MAP on a spatial basis of the source positions (sFlex;
        the leadfield needs ``src_coords``).
    solver_options
        CaliBrain's solver parameters, e.g. ``{"sigma": 0.02}`` for sFlex (see
        `neurotorch.meeg.solvers.SOLVER_OPTIONS`).
    """

    def __init__(
        self,
        leadfield: LeadfieldData,
        length: int = 1000,
        nnz: Sequence[int] = PAPER_NNZ,
        alpha: Sequence[float] = PAPER_ALPHA,
        seed: int = 0,
        gamma: float | str = "learn",
        noise_var_scale: float = 1.0,
        config: ERPConfig | None = None,
        device: torch.device | str = "cpu",
        noise_type: str = "oracle",
        normalization: bool = False,
        solver: str = "BMN",
        solver_options: Mapping[str, Any] | None = None,
    ):
        super().__init__(leadfield, length, nnz, alpha, seed, config, True, device)
        self._init_posterior(
            gamma, noise_var_scale, noise_type, normalization, solver, solver_options
        )


class CalibrationBatches(_PosteriorMixin, SimulatedSensorBatches):
    """`CalibrationDataset`'s items generated a whole batch at a time (iterable; ``batch_size=None``
    in the DataLoader). Sharding and seeding as in `SimulatedSensorBatches`."""

    def __init__(
        self,
        leadfield: LeadfieldData,
        batch_size: int = 64,
        n_batches: int = 16,
        nnz: Sequence[int] = PAPER_NNZ,
        alpha: Sequence[float] = PAPER_ALPHA,
        seed: int = 0,
        gamma: float | str = "learn",
        noise_var_scale: float = 1.0,
        config: ERPConfig | None = None,
        device: torch.device | str = "cpu",
        fresh_each_epoch: bool = True,
        noise_type: str = "oracle",
        normalization: bool = False,
        solver: str = "BMN",
        solver_options: Mapping[str, Any] | None = None,
    ):
        super().__init__(
            leadfield,
            batch_size,
            n_batches,
            nnz,
            alpha,
            seed,
            config,
            True,
            device,
            fresh_each_epoch,
        )
        self._init_posterior(
            gamma, noise_var_scale, noise_type, normalization, solver, solver_options
        )


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
        single = isinstance(files, (str, os.PathLike))
        folder = DataRoot(files, storage_options) if single else None
        if folder is not None and folder.isdir():
            paths = find_posterior_summaries(folder) or find_files(folder, "*.npz")
        else:
            paths = [files] if single else list(files)
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
