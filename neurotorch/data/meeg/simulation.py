"""torch Datasets of leadfield-simulated M/EEG trials (CaliBrain's recipe).

* `SimulatedSensorDataset`: map-style, virtual length; item ``i`` depends only on ``(seed, i)``.
* `SimulatedSensorBatches`: iterable, yields whole batches generated at once (sharded over
  DataLoader workers and distributed ranks by `neurotorch.data.sharding`).

Units: sources nAm, sensors µV (EEG) or fT (MEG).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from neurotorch._docs import fill_doc
from neurotorch._options import (
    as_ints,
    as_settings,
    check_bool,
    check_int,
    check_number,
    check_option,
)
from neurotorch.data.sampling import split_for_ranks
from neurotorch.data.sharding import ResumableIterable, shard, units_per_rank
from neurotorch.errors import ParameterError
from neurotorch.meeg.leadfield import LeadfieldData, LeadfieldSpec
from neurotorch.meeg.simulation import ERPConfig, SensorSimulator, SourceSimulator, item_generator
from neurotorch.synthetic.resolve import is_synthetic, resolve_data_dir

PAPER_NNZ = (1, 3, 5, 10, 100)
PAPER_ALPHA = (0.1, 0.3, 0.5, 0.7, 0.9)
_SPLIT_CODES = {None: 0, "train": 0, "val": 1, "validation": 1, "test": 2}


def split_seed(seed: int, split: str | None) -> int:
    """A seed for ``split`` derived from ``seed`` (train keeps ``seed``; val/test get new streams)."""
    code = _SPLIT_CODES[check_option("split", split, _SPLIT_CODES)]
    if code == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), code]).generate_state(1, np.uint32)[0])


def resolve_leadfield(
    leadfield: LeadfieldData | LeadfieldSpec | Mapping[str, Any] | None,
) -> LeadfieldData:
    """The leadfield a dataset simulates from: ``leadfield`` itself, or the one a
    `LeadfieldSpec` (or a mapping of its fields, or ``None`` for the default) builds. A
    ``data_dir`` of ``"synthetic"`` is the built-in synthetic CaliBrain root
    (`neurotorch.synthetic.resolve.resolve_data_dir`), written on first use."""
    if isinstance(leadfield, LeadfieldData):
        return leadfield
    spec = as_settings(LeadfieldSpec, leadfield, "leadfield")
    if is_synthetic(spec.data_dir):
        spec = spec.replace(data_dir=str(resolve_data_dir("calibrain", spec.data_dir)))
    return spec.build()


def describe_leadfield(leadfield: LeadfieldData) -> str:
    """``"EEG fixed 64x300"``: sensor kind, orientation and shape, for a dataset's repr."""
    kinds: dict[int | None, str] = {2: "EEG", 1: "MEG"}
    kind = kinds.get(leadfield.sensor_kind, "random")
    shape = "x".join(map(str, leadfield.leadfield.shape))
    return f"{kind} {leadfield.orientation_type} leadfield {shape}"


@fill_doc
class TrialSimulation:
    """Draws batches of simulated trials (sources and sensors) from a leadfield.

    Parameters
    ----------
    %(meeg_leadfield)s
    %(meeg_nnz_alpha)s
    %(meeg_erp_config)s
    %(meeg_device)s
    dtype
        Floating-point type of the simulated trials.
    """

    def __init__(
        self,
        leadfield: LeadfieldData | LeadfieldSpec | Mapping[str, Any] | None,
        *,
        nnz: int | Sequence[int] = PAPER_NNZ,
        alpha: float | Sequence[float] = PAPER_ALPHA,
        config: ERPConfig | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.leadfield = resolve_leadfield(leadfield)
        self.nnz = tuple(as_ints("nnz", nnz, minimum=1))
        alphas = np.atleast_1d(np.asarray(alpha, dtype=object)).tolist()
        if not alphas:
            raise ParameterError("alpha is empty; give at least one SNR in [0, 1].")
        self.alpha = tuple(
            check_number(f"alpha[{k}]", a, minimum=0.0, maximum=1.0) for k, a in enumerate(alphas)
        )
        self.silent = torch.as_tensor(self.leadfield.silent_sources, dtype=torch.long)
        n_active = self.leadfield.n_sources - len(self.silent)
        if max(self.nnz) > n_active:
            silent = (
                f", less its {len(self.silent)} silent sources (all-zero leadfield columns, never "
                "drawn as active)"
                if len(self.silent)
                else ""
            )
            raise ParameterError(
                f"nnz values {self.nnz} must lie in 1..{n_active} (the source count of the "
                f"leadfield{silent})."
            )
        if config is not None and not isinstance(config, ERPConfig):
            config = ERPConfig(**config)
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
                SourceSimulator(self.config, device=self.device, dtype=self.dtype),
                SensorSimulator(self.leadfield, device=self.device, dtype=self.dtype),
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
            batch_size,
            self.leadfield.n_sources,
            nnz,
            generator=generator,
            n_components=sensor_sim.n_components,
            silent=self.silent,
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


@fill_doc
class SimulatedSensorDataset(Dataset):
    """Map-style simulated CaliBrain trials with a virtual length.

    Item ``i`` is drawn from a generator seeded by ``(seed, i)`` alone, so it is the same in any
    worker, on any rank and in any order. Keys: ``index`` (``i``), ``y`` (M, T) sensors, ``x``
    (N, T) or (N, K, T) sources, ``active_indices`` (max nnz,), padded with -1, ``alpha``,
    ``nnz``, ``noise_var`` (scalars).

    Parameters
    ----------
    %(meeg_leadfield)s
    length
        Virtual number of items.
    %(meeg_nnz_alpha)s
    %(seed)s
    %(meeg_erp_config)s
    return_sources
        Include the dense ``x`` (set ``False`` to save memory when only sensors are needed).
    %(meeg_device)s
    """

    def __init__(
        self,
        leadfield: LeadfieldData | LeadfieldSpec | Mapping[str, Any] | None = None,
        length: int = 1000,
        nnz: int | Sequence[int] = PAPER_NNZ,
        alpha: float | Sequence[float] = PAPER_ALPHA,
        seed: int = 0,
        config: ERPConfig | None = None,
        return_sources: bool = True,
        device: torch.device | str = "cpu",
    ):
        self.simulation = TrialSimulation(
            leadfield, nnz=nnz, alpha=alpha, config=config, device=device
        )
        self.length = check_int("length", length, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.return_sources = check_bool("return_sources", return_sources)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({describe_leadfield(self.simulation.leadfield)}, "
            f"{self.length} trials, nnz={list(self.simulation.nnz)}, "
            f"alpha={list(self.simulation.alpha)}, seed={self.seed}{self._describe_extra()})"
        )

    def _describe_extra(self) -> str:
        return ""

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        item = _first(self._batch(1, self.simulation.generator(self.seed, index)))
        item["index"] = torch.tensor(index)
        return item

    def _batch(self, batch_size: int, generator: torch.Generator) -> dict[str, Any]:
        return self.simulation.draw(batch_size, generator, dense_sources=self.return_sources)


@fill_doc
class SimulatedSensorBatches(ResumableIterable):
    """Iterable simulated trials, generated a whole batch at a time (use ``batch_size=None``).

    Batch ``b`` of epoch ``e`` is drawn from a generator seeded by ``(seed, e * n_batches + b)``
    and its trials carry ``index`` ``b * batch_size + j``. Batches are sharded over ranks and
    workers by `neurotorch.data.sharding` (the unit is a batch). Under DDP, when the batches do
    not divide by the number of ranks, the largest are halved (drawn whole, then cut) until every
    rank yields as many (`len`), so every trial is served once per epoch; only a batch of one
    trial cannot be split, and then the ranks short of one repeat a batch.
    With ``fresh_each_epoch`` every pass advances ``e`` (`set_epoch`, as `StreamLoader` does for
    training, or by itself when no one sets it), otherwise every pass repeats the same batches
    (use that for validation and test). Items differ from
    `SimulatedSensorDataset`'s (one random stream per batch, not per item).

    Parameters
    ----------
    %(meeg_leadfield)s
    batch_size, n_batches
        Trials per batch and batches per epoch.
    %(meeg_nnz_alpha)s
    %(seed)s
    %(meeg_erp_config)s
    return_sources
        Include the dense ``x``.
    %(meeg_device)s
    fresh_each_epoch
        Draw new batches every epoch (training); ``False`` repeats them (validation, test).
    """

    yields_batches = True  # whole batches: a loader passes them through (batch_size=None)

    def __init__(
        self,
        leadfield: LeadfieldData | LeadfieldSpec | Mapping[str, Any] | None = None,
        batch_size: int = 64,
        n_batches: int = 16,
        nnz: int | Sequence[int] = PAPER_NNZ,
        alpha: float | Sequence[float] = PAPER_ALPHA,
        seed: int = 0,
        config: ERPConfig | None = None,
        return_sources: bool = True,
        device: torch.device | str = "cpu",
        fresh_each_epoch: bool = True,
    ):
        self.simulation = TrialSimulation(
            leadfield, nnz=nnz, alpha=alpha, config=config, device=device
        )
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.n_batches = check_int("n_batches", n_batches, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.return_sources = check_bool("return_sources", return_sources)
        self.fresh_each_epoch = self.auto_advance = check_bool("fresh_each_epoch", fresh_each_epoch)

    def __len__(self) -> int:
        """Batches this rank yields per epoch (all its workers together)."""
        world_size = self.process_shard()[1]
        return units_per_rank(len(self._pieces(world_size)), world_size)

    def _pieces(self, world_size: int) -> list[np.ndarray]:
        """The trial indices of the epoch's batches, the largest halved until every rank gets
        as many (`neurotorch.data.sampling.split_for_ranks`)."""
        size = self.batch_size
        whole = [np.arange(b * size, (b + 1) * size) for b in range(self.n_batches)]
        return split_for_ranks(whole, world_size)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({describe_leadfield(self.simulation.leadfield)}, "
            f"{self.n_batches} batches of {self.batch_size} trials, "
            f"nnz={list(self.simulation.nnz)}, alpha={list(self.simulation.alpha)}, "
            f"seed={self.seed}, fresh_each_epoch={self.fresh_each_epoch}"
            f"{self._describe_extra()})"
        )

    def _describe_extra(self) -> str:
        return ""

    def _items_after(self, skip: int) -> Iterator[dict[str, Any]]:
        """This worker's batches of the pass after its first ``skip`` (those are not drawn)."""
        epoch = self.pass_epoch()
        rank, world_size, worker, num_workers = self.process_shard()
        pieces = self._pieces(world_size)
        for p in shard(len(pieces), rank, world_size, worker, num_workers)[skip:]:
            piece = pieces[int(p)]
            b, start = divmod(int(piece[0]), self.batch_size)
            gen = self.simulation.generator(self.seed, epoch * self.n_batches + b)
            batch = self._batch(self.batch_size, gen)
            if len(piece) < self.batch_size:  # a half: the whole batch is drawn, then cut
                batch = {key: value[start : start + len(piece)] for key, value in batch.items()}
            batch["index"] = torch.as_tensor(piece)
            yield batch

    def _batch(self, batch_size: int, generator: torch.Generator) -> dict[str, Any]:
        return self.simulation.draw(batch_size, generator, dense_sources=self.return_sources)
