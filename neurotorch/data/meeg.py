"""torch Datasets of leadfield-simulated M/EEG trials, calibrator training data and fMRI-informed sensors.

* `SimulatedSensorDataset`: map-style, virtual length; item ``i`` depends only on ``(seed, i)``.
* `SimulatedSensorBatches`: iterable, yields whole batches generated at once (sharded over
  DataLoader workers and distributed ranks).
* `CalibrationDataset` / `CalibrationBatches`: simulated trials plus the Bayesian minimum-norm
  posterior, per item or per batch.
* `CalibrationRunsDataset`: the same items read from CaliBrain posterior summaries / NPZ runs.
* `FMRIInformedSensors`: a betas dataset whose trials get sensor data ``L s + noise``.

Units: sources nAm, sensors µV (EEG) or fT (MEG), coordinates as documented per argument.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from neurotorch.data.sharding import ShardedIterable, shard, units_per_rank
from neurotorch.errors import DataNotDownloadedError, ParameterError
from neurotorch.io.storage import DataRoot
from neurotorch.meeg import layout
from neurotorch.meeg.leadfield import (
    RANDOM_SENSORS,
    LeadfieldBuilder,
    LeadfieldData,
    random_leadfield,
)
from neurotorch.meeg.posterior import (
    NOISE_TYPES,
    bmn_posterior,
    known_noise_var,
    learn_hyperparameters,
    sloreta_weights,
    unweight_posterior,
    weight_leadfield,
)
from neurotorch.meeg.simulation import ERPConfig, SensorSimulator, SourceSimulator, item_generator
from neurotorch.meeg.summaries import find_files, find_posterior_summaries, read_run

PAPER_NNZ = (1, 3, 5, 10, 100)
PAPER_ALPHA = (0.1, 0.3, 0.5, 0.7, 0.9)
_SPLIT_CODES = {None: 0, "train": 0, "val": 1, "validation": 1, "test": 2}


def split_seed(seed: int, split: str | None) -> int:
    """A seed for ``split`` derived from ``seed`` (train keeps ``seed``; val/test get new streams)."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of train, val, test (or None), got {split!r}.")
    code = _SPLIT_CODES[split]
    if code == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), code]).generate_state(1, np.uint32)[0])


def build_leadfield(
    leadfield_dir: str | os.PathLike | None = None,
    subject: str = "fsaverage",
    orientation_type: str = "fixed",
    retrieve_mode: str = "simulate",
    n_sources: int = 1284,
    n_sensors: int | None = None,
    sensor: str = "eeg",
    montage: str = "easycap-M43",
    seed: int = 0,
    storage_options: dict | None = None,
) -> LeadfieldData:
    """Get a leadfield for the datasets: load it, simulate it with MNE or draw it at random.

    ``"load"`` reads ``<subject>_<orientation>_leadfield.npz`` from ``leadfield_dir`` (default
    ``$CALIBRAIN_DATA/1284src_leadfield``; a local folder or an fsspec URL read with
    ``storage_options``); ``"simulate"`` builds the forward model in memory and ``"random"``
    draws the matrix -- neither writes anything (use `LeadfieldBuilder` to save).
    """
    if retrieve_mode == "simulate":
        from neurotorch.meeg.forward import simulate_leadfield

        return simulate_leadfield(orientation_type, n_sources, sensor, montage, n_sensors)
    if retrieve_mode == "random":
        return random_leadfield(
            orientation_type, RANDOM_SENSORS if n_sensors is None else n_sensors, n_sources, seed
        )
    if retrieve_mode != "load":
        raise ValueError(
            f"retrieve_mode must be 'load', 'simulate' or 'random', got {retrieve_mode!r}."
        )
    return LeadfieldBuilder(leadfield_dir, storage_options).get_leadfield(
        subject, orientation_type, "load", return_metadata=True
    )


class TrialSimulation:
    """Draws batches of simulated trials (sources and sensors) from a leadfield.

    Parameters
    ----------
    leadfield
        Fixed ``(M, N)`` or free ``(M, N, K)`` leadfield.
    nnz, alpha
        Grids the number of active sources (one value per draw) and the SNR (one value per
        trial) are drawn from.
    config
        ERP settings.
    device, dtype
        Where the simulation runs.
    """

    def __init__(
        self,
        leadfield: LeadfieldData,
        nnz: Sequence[int] = PAPER_NNZ,
        alpha: Sequence[float] = PAPER_ALPHA,
        config: ERPConfig | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.leadfield = leadfield
        self.nnz = tuple(int(n) for n in nnz)
        self.alpha = tuple(float(a) for a in alpha)
        if not self.nnz or max(self.nnz) > leadfield.n_sources or min(self.nnz) < 1:
            raise ParameterError(
                f"nnz values {self.nnz} must lie in 1..{leadfield.n_sources} (the source count)."
            )
        if not self.alpha or not all(0.0 <= a <= 1.0 for a in self.alpha):
            raise ParameterError(f"alpha values {self.alpha} must lie in [0, 1].")
        self.config = config or ERPConfig()
        self.device = torch.device(device)
        self.dtype = dtype
        self._sims: tuple[SourceSimulator, SensorSimulator] | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_sims"] = None
        return state

    @property
    def simulators(self) -> tuple[SourceSimulator, SensorSimulator]:
        """The source and sensor simulators, created on first use in each process."""
        if self._sims is None:
            self._sims = (
                SourceSimulator(self.config, self.device, self.dtype),
                SensorSimulator(self.leadfield, self.device, self.dtype),
            )
        return self._sims

    def generator(self, seed: int, index: int) -> torch.Generator:
        return item_generator(seed, index, self.device)

    def draw(
        self, batch_size: int, generator: torch.Generator, dense_sources: bool = True
    ) -> dict[str, Any]:
        """One batch: ``y`` (B, M, T), ``x`` (dense sources), ``active_indices`` (B, max nnz;
        padded with -1), ``alpha``, ``nnz``, ``noise_var`` (B,)."""
        source_sim, sensor_sim = self.simulators
        pick = torch.randint(len(self.nnz), (1,), generator=generator, device=self.device)
        nnz = self.nnz[int(pick)]
        alpha_idx = torch.randint(
            len(self.alpha), (batch_size,), generator=generator, device=self.device
        )
        alpha = torch.tensor(self.alpha, dtype=self.dtype, device=self.device)[alpha_idx]
        sources = source_sim.simulate(
            batch_size, self.leadfield.n_sources, nnz, generator, sensor_sim.n_components
        )
        sensors = sensor_sim.simulate(sources, alpha, generator)
        padded = torch.full((batch_size, max(self.nnz)), -1, dtype=torch.long, device=self.device)
        padded[:, :nnz] = sources.active_indices
        out = {
            "y": sensors.y,
            "active_indices": padded,
            "alpha": alpha,
            "nnz": torch.full((batch_size,), nnz, dtype=torch.long, device=self.device),
            "noise_var": sensors.noise_var,
        }
        if dense_sources:
            out["x"] = sources.dense()
        return out


def _first(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: value[0] for key, value in batch.items()}


class SimulatedSensorDataset(Dataset):
    """Map-style simulated CaliBrain trials with a virtual length.

    Item ``i`` is drawn from a generator seeded by ``(seed, i)`` alone, so it is the same in any
    worker, on any rank and in any order. Keys: ``index`` (``i``), ``y`` (M, T) sensors, ``x`` (N, T) or (N, K, T)
    sources, ``active_indices`` (max nnz,), padded with -1, ``alpha``, ``nnz``, ``noise_var`` (scalars).

    Parameters
    ----------
    leadfield
        The forward model (see `build_leadfield`).
    length
        Virtual number of items.
    nnz, alpha, config, device
        See `TrialSimulation`.
    seed
        Base seed.
    return_sources
        Include the dense ``x`` (set ``False`` to save memory when only sensors are needed).
    """

    def __init__(
        self,
        leadfield: LeadfieldData,
        length: int = 1000,
        nnz: Sequence[int] = PAPER_NNZ,
        alpha: Sequence[float] = PAPER_ALPHA,
        seed: int = 0,
        config: ERPConfig | None = None,
        return_sources: bool = True,
        device: torch.device | str = "cpu",
    ):
        self.simulation = TrialSimulation(leadfield, nnz, alpha, config, device)
        self.length = int(length)
        self.seed = int(seed)
        self.return_sources = return_sources

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        item = _first(self._batch(1, self.simulation.generator(self.seed, index)))
        item["index"] = torch.tensor(index)
        return item

    def _batch(self, batch_size: int, generator: torch.Generator) -> dict[str, Any]:
        return self.simulation.draw(batch_size, generator, dense_sources=self.return_sources)


class SimulatedSensorBatches(ShardedIterable):
    """Iterable simulated trials, generated a whole batch at a time (use ``batch_size=None``).

    Batch ``b`` of epoch ``e`` is drawn from a generator seeded by ``(seed, e * n_batches + b)``
    and its trials carry ``index`` ``b * batch_size + j``. Batches are sharded over ranks and
    workers by `neurotorch.data.sharding` (the unit is a batch): every rank yields
    ``ceil(n_batches / world_size)`` batches (`len`), every batch is produced at least once per
    epoch, and the padding repeats the first batches.
    With ``fresh_each_epoch`` every iteration advances ``e`` (in the main process, or in
    persistent DataLoader workers), otherwise every iteration repeats the same batches (use that
    for validation and test); `set_epoch` sets ``e`` explicitly. Items differ from
    `SimulatedSensorDataset`'s (one random stream per batch, not per item).
    """

    def __init__(
        self,
        leadfield: LeadfieldData,
        batch_size: int = 64,
        n_batches: int = 16,
        nnz: Sequence[int] = PAPER_NNZ,
        alpha: Sequence[float] = PAPER_ALPHA,
        seed: int = 0,
        config: ERPConfig | None = None,
        return_sources: bool = True,
        device: torch.device | str = "cpu",
        fresh_each_epoch: bool = True,
    ):
        self.simulation = TrialSimulation(leadfield, nnz, alpha, config, device)
        self.batch_size = int(batch_size)
        self.n_batches = int(n_batches)
        self.seed = int(seed)
        self.return_sources = return_sources
        self.fresh_each_epoch = fresh_each_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw different batches in each epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches this rank yields per epoch (all its workers together)."""
        return units_per_rank(self.n_batches, self.process_shard()[1])

    def __iter__(self):
        epoch = self.epoch
        if self.fresh_each_epoch:
            self.epoch += 1
        for b in shard(self.n_batches, *self.process_shard()):
            gen = self.simulation.generator(self.seed, epoch * self.n_batches + int(b))
            batch = self._batch(self.batch_size, gen)
            batch["index"] = int(b) * self.batch_size + torch.arange(self.batch_size)
            yield batch

    def _batch(self, batch_size: int, generator: torch.Generator) -> dict[str, Any]:
        return self.simulation.draw(batch_size, generator, dense_sources=self.return_sources)


def posterior_item(
    batch: dict[str, Any],
    leadfield: torch.Tensor,
    gamma: float | str,
    noise_var_scale: float,
    noise_type: str = "oracle",
    config: ERPConfig | None = None,
    normalization: bool = False,
) -> dict[str, Any]:
    """Add the BMN posterior (``mean``, ``var``, ``cov_blocks``) of simulated trials to ``batch``.

    ``gamma``: ``"learn"`` (CaliBrain's evidence maximisation, see `learn_hyperparameters`),
    ``"oracle"`` (each trial's mean source power ``mean(x**2)``) or a number (nAm²).
    ``noise_type``: ``"oracle"`` (the true noise variance), ``"baseline"`` (the pre-stimulus
    estimate of `baseline_noise_var`, timing from ``config``) -- both times ``noise_var_scale`` --
    or ``"adaptive_joint_learning"`` (learned with ``gamma``, which must then be ``"learn"``).
    ``normalization`` applies CaliBrain's sLORETA normalisation (its ``BMN(normalization=True)``):
    the posterior is computed for ``x = W x'`` with a BMN prior on ``x'``.
    """
    x, y = batch["x"], batch["y"]
    weights = sloreta_weights(leadfield) if normalization else None
    if weights is not None:
        leadfield = weight_leadfield(leadfield, weights)
    assumed = known_noise_var(noise_type, y, batch["noise_var"], config or ERPConfig())
    if assumed is not None:
        assumed = assumed * float(noise_var_scale)
    if gamma == "learn":
        prior_var, assumed = learn_hyperparameters(y, leadfield, assumed)
    elif gamma == "oracle":
        prior_var = x.double().flatten(1).pow(2).mean(dim=1)
    else:
        prior_var = torch.full((x.shape[0],), float(gamma), dtype=torch.float64, device=x.device)
    post = bmn_posterior(y, leadfield, prior_var, assumed)
    if weights is not None:
        post = unweight_posterior(post, weights)
    batch.update(
        mean=post.mean,
        var=post.var,
        gamma=prior_var.to(x.dtype),
        assumed_noise_var=assumed.to(x.dtype),
    )
    if post.cov_blocks is not None:
        batch["cov_blocks"] = post.cov_blocks
    batch["x_true"] = batch.pop("x")
    return batch


def _positive_number(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)) and float(value) > 0)
    except (TypeError, ValueError):
        return False


class _PosteriorMixin:
    """Adds the BMN posterior to every simulated batch (see `posterior_item`)."""

    gamma: float | str
    noise_var_scale: float
    noise_type: str
    normalization: bool
    simulation: TrialSimulation

    def _init_posterior(
        self, gamma: float | str, noise_var_scale: float, noise_type: str, normalization: bool
    ) -> None:
        if noise_type not in NOISE_TYPES:
            raise ParameterError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}.")
        if noise_type == "adaptive_joint_learning" and gamma != "learn":
            raise ParameterError(
                "noise_type='adaptive_joint_learning' learns the noise together with gamma; "
                "pass gamma='learn'."
            )
        if noise_type == "oracle" and any(a >= 1.0 for a in self.simulation.alpha):
            raise ParameterError(
                "Calibration data with noise_type='oracle' need alpha < 1: the posterior needs a "
                "noise variance."
            )
        if gamma not in ("learn", "oracle") and not _positive_number(gamma):
            raise ParameterError(
                f"gamma must be 'learn', 'oracle' or a positive number, got {gamma!r}."
            )
        if not _positive_number(noise_var_scale):
            raise ParameterError(f"noise_var_scale must be > 0, got {noise_var_scale!r}.")
        self.gamma = gamma
        self.noise_var_scale = float(noise_var_scale)
        self.noise_type = noise_type
        self.normalization = bool(normalization)

    def _batch(self, batch_size: int, generator: torch.Generator) -> dict[str, Any]:
        batch = self.simulation.draw(batch_size, generator, dense_sources=True)
        leadfield = self.simulation.simulators[1].leadfield
        return posterior_item(
            batch,
            leadfield,
            self.gamma,
            self.noise_var_scale,
            self.noise_type,
            self.simulation.config,
            self.normalization,
        )


class CalibrationDataset(_PosteriorMixin, SimulatedSensorDataset):
    """Calibrator training items: simulated trials and their Bayesian minimum-norm posterior.

    Keys: ``y`` (M, T), ``x_true`` (N, T) or (N, K, T), ``mean`` (like ``x_true``), ``var`` (N,)
    or (N, K), ``cov_blocks`` (N, K, K, free only), ``alpha``, ``nnz``, ``noise_var`` (true),
    ``assumed_noise_var``, ``gamma``, ``active_indices``. Item ``i`` depends only on ``(seed, i)``.

    Parameters
    ----------
    leadfield, length, nnz, alpha, seed, config, device
        As in `SimulatedSensorDataset`; with ``noise_type="oracle"``, ``alpha`` must be < 1.
    gamma
        ``"learn"`` (CaliBrain's evidence maximisation, the default), ``"oracle"`` (each trial's
        mean source power) or a source prior variance (nAm²).
    noise_var_scale
        Assumed / true (or baseline) noise variance; values other than 1 misspecify the posterior.
    noise_type
        CaliBrain's ``"oracle"`` (true noise variance), ``"baseline"`` (pre-stimulus estimate)
        or ``"adaptive_joint_learning"`` (learned jointly with ``gamma="learn"``).
    normalization
        CaliBrain's sLORETA normalisation of the BMN posterior (see `posterior_item`).
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
    ):
        super().__init__(leadfield, length, nnz, alpha, seed, config, True, device)
        self._init_posterior(gamma, noise_var_scale, noise_type, normalization)


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
        self._init_posterior(gamma, noise_var_scale, noise_type, normalization)


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


def mask_voxel_coords_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (mm) coordinates of a 3-D mask's True voxels, in C order (the voxel-array order)."""
    ijk = np.argwhere(np.asarray(mask, dtype=bool))
    return ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


class FMRIInformedSensors(Dataset):
    """A betas dataset whose trials also carry leadfield-simulated sensor data.

    For trial ``i`` the source amplitudes ``s`` (nAm) are that trial's betas sampled at the
    leadfield's source positions: each source (head frame, m) is mapped to T1w mm by
    ``head_to_t1w`` and takes the beta of the nearest masked voxel, times ``nam_per_unit``.
    **Sources outside the mask** -- farther than ``max_distance_mm`` from every masked voxel
    centre (default: half a voxel diagonal, i.e. the source's own voxel is not in the mask) -- get
    amplitude 0; ``in_mask`` tells which. Sensors: ``y = L s + eta * eps`` with
    ``||eta eps|| / ||L s|| = (1 - alpha) / alpha`` and ``eps`` drawn from ``(seed, i)``.

    Parameters
    ----------
    betas_dataset
        Map-style dataset of dicts with ``betas`` (n_voxels,) float32.
    voxel_coords_mm
        ``(n_voxels, 3)`` T1w world coordinates (mm) of the betas' voxels, in the betas' order
        (see `mask_voxel_coords_mm`).
    leadfield
        A fixed-orientation leadfield with ``src_coords``.
    head_to_t1w
        4x4 affine from head coordinates (m) to T1w world coordinates (mm).
    alpha
        SNR in (0, 1].
    seed
        Base seed of the sensor noise.
    max_distance_mm
        Farthest a source may lie from a masked voxel centre and still be inside.
    nam_per_unit
        Source amplitude (nAm) per beta unit.

    Items are the wrapped items plus ``sensors`` (M,) and ``sources`` (N,) float32 tensors.
    """

    def __init__(
        self,
        betas_dataset: Dataset,
        voxel_coords_mm: np.ndarray,
        leadfield: LeadfieldData,
        head_to_t1w: np.ndarray,
        alpha: float = 0.5,
        seed: int = 0,
        max_distance_mm: float | None = None,
        nam_per_unit: float = 1.0,
    ):
        from scipy.spatial import cKDTree

        if leadfield.orientation_type != "fixed" or leadfield.src_coords is None:
            raise ValueError(
                "FMRIInformedSensors needs a fixed-orientation leadfield with src_coords."
            )
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha}.")
        coords = np.asarray(voxel_coords_mm, dtype=np.float64)
        transform = np.asarray(head_to_t1w, dtype=np.float64)
        src_mm = leadfield.src_coords @ transform[:3, :3].T + transform[:3, 3]
        tree = cKDTree(coords)
        if max_distance_mm is None:
            spacing = np.median(tree.query(coords[: min(len(coords), 2000)], k=2)[0][:, 1])
            max_distance_mm = 0.5 * np.sqrt(3.0) * spacing + 1e-6
        distance, nearest = tree.query(src_mm)
        self.in_mask = distance <= max_distance_mm
        if not self.in_mask.any():
            raise ValueError(
                "No leadfield source falls inside the betas' mask; check head_to_t1w (head metres -> "
                "T1w millimetres) and voxel_coords_mm."
            )
        self.betas_dataset = betas_dataset
        self.voxel_index = torch.as_tensor(nearest, dtype=torch.long)
        self.source_weight = torch.as_tensor(
            self.in_mask * float(nam_per_unit), dtype=torch.float32
        )
        self.leadfield = torch.as_tensor(leadfield.leadfield, dtype=torch.float32)
        self.alpha = float(alpha)
        self.seed = int(seed)

    @classmethod
    def from_laion_fmri(
        cls,
        betas_dataset: Dataset,
        fmri_root: str | os.PathLike,
        subject: str = "sub-01",
        alpha: float = 0.5,
        seed: int = 0,
        storage_options: dict | None = None,
        **kwargs: Any,
    ) -> FMRIInformedSensors:
        """Pair a LAION-fMRI `neurotorch.data.betas.BetasDataset` with the subject's leadfield.

        Reads the fixed leadfield and ``<subject>_head-to-T1w.txt`` from
        ``<fmri_root>/derivatives/meeg/`` (see `neurotorch.synthetic.meeg.write_subject_leadfields`)
        and the voxel grid's affine from the subject's anatomical brain mask; the voxel order is
        ``betas_dataset.voxel_mask(subject)`` in C order. ``fmri_root`` may be an fsspec URL
        (with ``storage_options``). ``kwargs`` go to the constructor.
        """
        import nibabel as nib

        from neurotorch.fmri import layout as fmri_layout
        from neurotorch.meeg.leadfield import load_leadfield_npz, read_transform

        root = DataRoot(fmri_root, storage_options)
        meeg_dir, options = layout.FMRI_MEEG_DIR, root.storage_options
        leadfield = load_leadfield_npz(
            root.path(meeg_dir, layout.leadfield_file(subject, "fixed")), storage_options=options
        )
        transform = read_transform(root.path(meeg_dir, layout.head_to_t1w_name(subject)), options)
        affine = nib.load(root.local_path(fmri_layout.anatomical_brain_mask(subject))).affine
        coords = mask_voxel_coords_mm(betas_dataset.voxel_mask(subject), affine)
        return cls(betas_dataset, coords, leadfield, transform, alpha, seed, **kwargs)

    def __len__(self) -> int:
        return len(self.betas_dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.betas_dataset[index])
        betas = torch.as_tensor(item["betas"], dtype=torch.float32)
        sources = betas[self.voxel_index] * self.source_weight
        clean = self.leadfield @ sources
        eps = torch.randn(clean.shape, generator=item_generator(self.seed, index))
        eta = 0.0
        if self.alpha < 1.0 and clean.norm() > 0:
            eta = (1.0 - self.alpha) / self.alpha * clean.double().norm() / eps.double().norm()
        item["sensors"] = clean + float(eta) * eps
        item["sources"] = sources
        return item


# -- load_dataset builders -------------------------------------------------------------------
_LEADFIELD_KEYS = (
    "leadfield_dir",
    "subject",
    "orientation_type",
    "retrieve_mode",
    "n_sources",
    "n_sensors",
    "sensor",
    "montage",
    "storage_options",
)


def _leadfield_from_config(config: dict[str, Any]) -> LeadfieldData:
    given = config.pop("leadfield", None)
    options = {key: config.pop(key) for key in _LEADFIELD_KEYS if key in config}
    return given if given is not None else build_leadfield(**options)


def build_meeg_sim(split: str | None = None, streaming: bool = False, **config: Any) -> Dataset:
    """``load_dataset("meeg-sim", ...)``: `SimulatedSensorDataset` (or `SimulatedSensorBatches`
    with ``streaming=True``). Leadfield options: ``leadfield`` or the `build_leadfield` keys;
    ``split`` ("train", "val", "test") picks an independent seed stream."""
    leadfield = _leadfield_from_config(config)
    config["seed"] = split_seed(config.get("seed", 0), split)
    cls = SimulatedSensorBatches if streaming else SimulatedSensorDataset
    return cls(leadfield, **config)


def build_meeg_calibration(
    split: str | None = None, streaming: bool = False, **config: Any
) -> Dataset:
    """``load_dataset("meeg-calibration", ...)``: `CalibrationRunsDataset` when ``files`` is given,
    else a simulated `CalibrationDataset` (`CalibrationBatches` with ``streaming=True``)."""
    if "files" in config:
        return CalibrationRunsDataset(config["files"], config.get("storage_options"))
    leadfield = _leadfield_from_config(config)
    config["seed"] = split_seed(config.get("seed", 0), split)
    return (CalibrationBatches if streaming else CalibrationDataset)(leadfield, **config)
