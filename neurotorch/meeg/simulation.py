"""Batched torch simulation of CaliBrain trials: ERP-like sources and noisy sensor data.

The recipe (CaliBrain's): an epoch ``tmin..tmax`` at ``sfreq``; ``nnz`` active sources drawn
without replacement; each waveform is white noise, zero-phase 4th-order Butterworth band-pass
``fmin..fmax`` (scipy ``filtfilt``), Hann window, peak-normalised, scaled by a peak amplitude
~ LogNormal(median, sigma) clipped to ``amplitude_clip`` nAm, and placed after the stimulus onset
(random duration >= ``erp_min_length`` samples and random start when ``random_erp_timing``).
Free orientation (`ERPConfig.free_recipe`): CaliBrain's ``"components"`` gives every component of an
active source its own waveform (own timing, band-limited noise and amplitude); ``"orientation"``
draws one waveform and a random unit orientation per source.
Sensors: ``y = L x + eta * eps`` with white ``eps`` and ``eta`` such that
``||eta eps|| / ||L x|| = (1 - alpha) / alpha`` per trial (Frobenius norms over sensors x time);
``alpha = 0`` is pure noise with ``||eta eps|| = ||L x||`` (CaliBrain's convention).

Filtering is exact and batched: ``filtfilt`` is linear, so for every segment length ``D`` the
operator ``diag(hann_D) @ filtfilt_D`` is computed once (with scipy) and applied as a matrix
product on the simulator's device.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from neurotorch._options import check_option
from neurotorch.errors import ParameterError, ShapeMismatchError
from neurotorch.meeg.leadfield import LeadfieldData

#: Free-orientation recipes; the first is CaliBrain's.
FREE_RECIPES = ("components", "orientation")


@dataclass(frozen=True)
class ERPConfig:
    """Timing, band and amplitude of the simulated ERP waveforms (CaliBrain defaults).

    ``free_recipe`` is how free-orientation sources are drawn: ``"components"`` (CaliBrain's, an
    independent waveform per component) or ``"orientation"`` (one waveform along a random unit
    orientation).
    """

    tmin: float = -0.5
    tmax: float = 0.5
    stim_onset: float = 0.0
    sfreq: float = 250.0
    fmin: float = 1.0
    fmax: float = 5.0
    amplitude_median: float = 20.0
    amplitude_sigma: float = 0.2
    amplitude_clip: tuple[float, float] = (2.5, 50.0)
    random_erp_timing: bool = True
    erp_min_length: int = 82
    free_recipe: str = "components"

    def __post_init__(self) -> None:
        check_option("free_recipe", self.free_recipe, FREE_RECIPES)
        if not (self.tmin <= self.stim_onset < self.tmax and self.sfreq > 0):
            raise ParameterError(
                f"ERPConfig needs tmin <= stim_onset < tmax and sfreq > 0; got tmin={self.tmin}, "
                f"stim_onset={self.stim_onset}, tmax={self.tmax}, sfreq={self.sfreq}."
            )
        if not 0 < self.fmin < self.fmax < self.sfreq / 2:
            raise ParameterError(
                f"The ERP band needs 0 < fmin < fmax < sfreq/2; got {self.fmin}..{self.fmax} Hz "
                f"at {self.sfreq} Hz."
            )

    @property
    def times(self) -> np.ndarray:
        """Sample times in seconds (``np.arange(tmin, tmax, 1/sfreq)``)."""
        return np.arange(self.tmin, self.tmax, 1.0 / self.sfreq)

    @property
    def n_times(self) -> int:
        return len(self.times)

    @property
    def onset_sample(self) -> int:
        """First sample at or after the stimulus onset."""
        return int(np.searchsorted(self.times, self.stim_onset - 1e-12))

    @property
    def n_post(self) -> int:
        """Samples available after the onset."""
        return self.n_times - self.onset_sample


@lru_cache(maxsize=256)
def erp_operator(length: int, config: ERPConfig) -> np.ndarray:
    """``diag(hann) @ filtfilt``: the ``(length, length)`` linear map noise -> windowed segment.

    Cached per process; treat the returned array as read-only.
    """
    from scipy.signal import butter, filtfilt

    nyquist = config.sfreq / 2.0
    b, a = butter(4, [config.fmin / nyquist, config.fmax / nyquist], btype="band")
    filtered = filtfilt(b, a, np.eye(length), axis=0)
    return np.hanning(length)[:, None] * filtered


def item_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from ``(seed, index)`` only, identical in any worker or rank."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state[0]) << 31 ^ int(state[1]))
    return gen


@dataclass
class SourceBatch:
    """Sparse description of a batch of simulated source activity (nAm).

    Attributes
    ----------
    active_indices
        ``(B, nnz)`` indices of the active sources.
    waveforms
        ``(B, nnz, T)`` (fixed) or ``(B, nnz, K, T)`` (free) moments of the active sources.
    amplitudes
        Sampled peak amplitudes (nAm): ``(B, nnz)``, or ``(B, nnz, K)`` when every component has
        its own waveform.
    orientations
        ``(B, nnz, K)`` unit orientations (free ``"orientation"`` recipe), else ``None``.
    n_sources
        Total number of sources.
    """

    active_indices: torch.Tensor
    waveforms: torch.Tensor
    amplitudes: torch.Tensor
    orientations: torch.Tensor | None
    n_sources: int

    @property
    def n_components(self) -> int:
        """1 for fixed orientation, else K."""
        return 1 if self.waveforms.ndim == 3 else int(self.waveforms.shape[2])

    def dense(self) -> torch.Tensor:
        """``(B, n_sources, T)`` (fixed) or ``(B, n_sources, K, T)`` (free) source time courses."""
        batch, nnz = self.waveforms.shape[:2]
        out = self.waveforms.new_zeros(batch, self.n_sources, *self.waveforms.shape[2:])
        index = self.active_indices.reshape(batch, nnz, *[1] * (self.waveforms.ndim - 2))
        out.scatter_(1, index.expand_as(self.waveforms), self.waveforms)
        return out


class SourceSimulator:
    """Draws batches of CaliBrain ERP sources with torch, on one device.

    Parameters
    ----------
    config
        Timing, band and amplitude settings.
    device, dtype
        Where and in which precision the waveforms are made (the filter operators are computed in
        float64 and cast once).
    """

    def __init__(
        self,
        config: ERPConfig | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.config = config or ERPConfig()
        if self.config.n_post < self.config.erp_min_length:
            raise ParameterError(
                f"Only {self.config.n_post} samples follow the onset; erp_min_length is "
                f"{self.config.erp_min_length}."
            )
        self.device = torch.device(device)
        self.dtype = dtype
        self._operators: dict[int, torch.Tensor] = {}

    def _operator(self, length: int) -> torch.Tensor:
        if length not in self._operators:
            op = erp_operator(length, self.config)
            self._operators[length] = torch.as_tensor(op, dtype=self.dtype, device=self.device)
        return self._operators[length]

    def draw_timing(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment lengths and start offsets (samples after the onset) for ``n`` waveforms."""
        cfg = self.config
        if not cfg.random_erp_timing:
            full = torch.full((n,), cfg.n_post, dtype=torch.long, device=self.device)
            return full, torch.zeros_like(full)
        lengths = torch.randint(
            cfg.erp_min_length, cfg.n_post + 1, (n,), generator=generator, device=self.device
        )
        room = (cfg.n_post - lengths + 1).to(self.dtype)
        u = torch.rand(n, generator=generator, device=self.device, dtype=self.dtype)
        starts = torch.minimum((u * room).long(), cfg.n_post - lengths)
        return lengths, starts

    def draw_amplitudes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Peak amplitudes (nAm): LogNormal(log median, sigma), clipped."""
        cfg = self.config
        z = torch.randn(n, generator=generator, device=self.device, dtype=torch.float64)
        amp = torch.exp(np.log(cfg.amplitude_median) + cfg.amplitude_sigma * z)
        low, high = cfg.amplitude_clip
        return amp.clamp(low, high).to(self.dtype)

    def waveforms(
        self,
        noise: torch.Tensor,
        lengths: torch.Tensor,
        starts: torch.Tensor,
        amplitudes: torch.Tensor,
    ) -> torch.Tensor:
        """Turn white ``noise`` (R, n_post) into placed ERP waveforms (R, T).

        Row ``r`` uses ``noise[r, :lengths[r]]``, is filtered, windowed, peak-normalised, scaled
        by ``amplitudes[r]`` and written from sample ``onset + starts[r]``.
        """
        cfg = self.config
        n_rows = noise.shape[0]
        out = noise.new_zeros(n_rows, cfg.n_times)
        for length in torch.unique(lengths).tolist():
            rows = torch.nonzero(lengths == length).squeeze(1)
            segment = noise[rows, :length] @ self._operator(length).T
            peak = (
                segment.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(segment.dtype).tiny)
            )
            segment = segment / peak * amplitudes[rows, None]
            columns = (
                cfg.onset_sample + starts[rows, None] + torch.arange(length, device=out.device)
            )
            out[rows[:, None], columns] = segment
        return out

    def simulate(
        self,
        batch_size: int,
        n_sources: int,
        nnz: int,
        *,
        generator: torch.Generator,
        n_components: int = 1,
        silent: torch.Tensor | np.ndarray | None = None,
    ) -> SourceBatch:
        """Draw ``batch_size`` trials of ``nnz`` active sources among ``n_sources``.

        ``n_components`` is 1 for fixed orientation, else the number of free components (3 for
        EEG, 2 for reduced MEG); free sources follow `ERPConfig.free_recipe`. ``silent``: indices
        of sources never drawn as active (`LeadfieldData.silent_sources`: no sensor sees them, so
        a trial of them alone would have no signal and its SNR no meaning); the others are
        drawn as without it, from the same random numbers.
        """
        n_silent = 0 if silent is None else len(silent)
        if not 0 < nnz <= n_sources - n_silent:
            visible = f" ({n_silent} of the {n_sources} are silent)" if n_silent else ""
            raise ParameterError(
                f"nnz must be in 1..{n_sources - n_silent}, the sources that can be active"
                f"{visible}; got {nnz}."
            )
        free_recipe = self.config.free_recipe
        scores = torch.rand(batch_size, n_sources, generator=generator, device=self.device)
        if n_silent:  # scores lie in [0, 1): a silent source never ranks among the top nnz
            scores[:, torch.as_tensor(silent, dtype=torch.long, device=self.device)] = -1.0
        active = scores.topk(nnz, dim=1).indices
        per_source = n_components if n_components > 1 and free_recipe == "components" else 1
        n = batch_size * nnz * per_source
        lengths, starts = self.draw_timing(n, generator)
        noise = torch.randn(
            n, self.config.n_post, generator=generator, device=self.device, dtype=self.dtype
        )
        amplitudes = self.draw_amplitudes(n, generator)
        waves = self.waveforms(noise, lengths, starts=starts, amplitudes=amplitudes)
        shape = (batch_size, nnz, n_components) if per_source > 1 else (batch_size, nnz)
        waves, amplitudes = waves.reshape(*shape, -1), amplitudes.reshape(shape)
        orientations = None
        if n_components > 1 and per_source == 1:
            orient = torch.randn(
                batch_size,
                nnz,
                n_components,
                generator=generator,
                device=self.device,
                dtype=self.dtype,
            )
            orientations = orient / orient.norm(dim=-1, keepdim=True)
            waves = orientations[..., None] * waves[:, :, None, :]
        return SourceBatch(
            active_indices=active,
            waveforms=waves,
            amplitudes=amplitudes,
            orientations=orientations,
            n_sources=n_sources,
        )


@dataclass
class SensorBatch:
    """Simulated sensor data (µV or fT) for a batch of trials.

    ``noise_var`` is ``eta**2``, the variance of each noise entry.
    """

    y: torch.Tensor
    y_clean: torch.Tensor
    noise: torch.Tensor
    noise_var: torch.Tensor


class SensorSimulator:
    """Projects `SourceBatch` activity through a leadfield and adds white noise at SNR alpha.

    Parameters
    ----------
    leadfield
        `LeadfieldData`, numpy array or torch tensor, ``(M, N)`` or ``(M, N, K)``.
    device
        Defaults to the tensor's device (``"cpu"`` for numpy input).
    dtype
        Precision of the simulation.
    """

    def __init__(
        self,
        leadfield: LeadfieldData | np.ndarray | torch.Tensor,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        if isinstance(leadfield, LeadfieldData):
            leadfield = leadfield.leadfield
        if device is None:
            device = leadfield.device if isinstance(leadfield, torch.Tensor) else "cpu"
        self.leadfield = torch.as_tensor(leadfield, dtype=dtype, device=device)
        self.device = self.leadfield.device
        self.dtype = dtype

    @property
    def n_components(self) -> int:
        return 1 if self.leadfield.ndim == 2 else int(self.leadfield.shape[2])

    def project(self, sources: SourceBatch) -> torch.Tensor:
        """Noise-free sensor data ``L x`` (B, M, T), using only the active columns."""
        k = sources.n_components
        if k != self.n_components:
            raise ShapeMismatchError(
                f"The leadfield has {self.n_components} component(s) per source but the sources have "
                f"{k}; simulate them with n_components={self.n_components}."
            )
        if sources.n_sources != self.leadfield.shape[1]:
            raise ShapeMismatchError(
                f"The sources were drawn among {sources.n_sources} sources but the leadfield has "
                f"{self.leadfield.shape[1]}; simulate them with n_sources="
                f"{self.leadfield.shape[1]}."
            )
        if sources.waveforms.dtype != self.dtype:
            raise ParameterError(
                f"The sources are {sources.waveforms.dtype} but the SensorSimulator is "
                f"{self.dtype}; make the SourceSimulator and the SensorSimulator with the same "
                f"dtype (e.g. both dtype={self.dtype})."
            )
        columns = self.leadfield[:, sources.active_indices]  # (M, B, nnz[, K])
        batch = columns.shape[1]
        columns = columns.permute(1, 0, *range(2, columns.ndim)).reshape(
            batch, columns.shape[0], -1
        )
        return torch.bmm(columns, sources.waveforms.reshape(batch, columns.shape[2], -1))

    def add_noise(
        self, y_clean: torch.Tensor, alpha: float | torch.Tensor, generator: torch.Generator
    ) -> SensorBatch:
        """Add ``eta * eps`` with ``||eta eps|| / ||y_clean|| = (1 - alpha) / alpha`` per trial.

        ``alpha = 0`` returns pure noise ``eta * eps`` with ``||eta eps|| = ||y_clean||``.
        """
        batch = y_clean.shape[0]
        alpha = torch.as_tensor(alpha, dtype=torch.float64, device=self.device)
        if alpha.ndim > 1 or alpha.numel() not in (1, batch):
            raise ShapeMismatchError(
                f"alpha holds {alpha.numel()} values (shape {tuple(alpha.shape)}) for a batch of "
                f"{batch} trials; give one alpha for all trials or one per trial."
            )
        alpha = alpha.reshape(-1).expand(batch)
        if not bool(((alpha >= 0) & (alpha <= 1)).all()):
            raise ParameterError("alpha (SNR) must lie in [0, 1].")
        eps = torch.randn(y_clean.shape, generator=generator, device=self.device, dtype=self.dtype)
        signal_norm = y_clean.double().flatten(1).norm(dim=1)
        eps_norm = eps.double().flatten(1).norm(dim=1)
        pure = alpha == 0
        ratio = torch.where(pure, 1.0, (1.0 - alpha) / torch.where(pure, 1.0, alpha))
        eta = ratio * signal_norm / eps_norm
        noise = eps * eta.to(self.dtype)[:, None, None]
        signal = torch.where(pure[:, None, None], 0.0, y_clean)
        return SensorBatch(
            y=signal + noise, y_clean=y_clean, noise=noise, noise_var=(eta**2).to(self.dtype)
        )

    def simulate(
        self, sources: SourceBatch, alpha: float | torch.Tensor, generator: torch.Generator
    ) -> SensorBatch:
        """``y = L x + noise`` for a batch of sources."""
        return self.add_noise(self.project(sources), alpha, generator)
