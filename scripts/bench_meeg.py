"""Benchmark simulated CaliBrain trials: batched torch simulator vs a per-sample numpy loop.

Both simulate the same recipe (nnz ERP sources: band-passed, Hann-windowed, peak-normalised,
log-normal amplitudes; y = L x + noise at SNR alpha) with the same MNE leadfield in the same
process; the baseline does it trial by trial the way CaliBrain does (numpy RandomState, scipy
``butter`` + ``filtfilt`` per source, a dense ``L @ x``). Throughput counts trials with dense
sources ``x`` (N, T) and sensors ``y`` (M, T) produced.

    python scripts/bench_meeg.py            # EEG easycap-M43, 1284 sources, nnz 5 (~1 min)
    python scripts/bench_meeg.py --large    # also nnz 100 and Neuromag magnetometers, more trials
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.signal import butter, filtfilt

from neurotorch.meeg.forward import simulate_leadfield
from neurotorch.meeg.simulation import ERPConfig, SensorSimulator, SourceSimulator


def numpy_erp(cfg: ERPConfig, seed: int) -> np.ndarray:
    """One CaliBrain-style ERP waveform (length T) from its own RandomState."""
    rng = np.random.RandomState(seed)
    n_times, onset = cfg.n_times, cfg.onset_sample
    available = n_times - onset
    length = rng.randint(cfg.erp_min_length, available + 1)
    start = onset + rng.randint(0, available - length + 1)
    nyquist = cfg.sfreq / 2
    b, a = butter(4, [cfg.fmin / nyquist, cfg.fmax / nyquist], btype="band")
    segment = filtfilt(b, a, rng.randn(length)) * np.hanning(length)
    segment /= np.abs(segment).max()
    amplitude = np.clip(
        rng.lognormal(np.log(cfg.amplitude_median), cfg.amplitude_sigma), *cfg.amplitude_clip
    )
    out = np.zeros(n_times)
    out[start : start + length] = segment * amplitude
    return out


def numpy_trial(leadfield: np.ndarray, cfg: ERPConfig, nnz: int, alpha: float, seed: int):
    """One trial, CaliBrain style: dense sources, dense projection, scaled white noise."""
    rng = np.random.RandomState(seed)
    x = np.zeros((leadfield.shape[1], cfg.n_times))
    for index in rng.choice(leadfield.shape[1], size=nnz, replace=False):
        x[index] = numpy_erp(cfg, rng.randint(0, 2**32 - 1))
    y_clean = leadfield @ x
    eps = np.random.RandomState(seed + 1).normal(size=y_clean.shape)
    eta = (1 - alpha) / alpha * np.linalg.norm(y_clean) / np.linalg.norm(eps)
    return x, y_clean + eta * eps


def bench_numpy(leadfield: np.ndarray, nnz: int, alpha: float, n_trials: int) -> float:
    cfg = ERPConfig()
    start = time.perf_counter()
    for seed in range(n_trials):
        numpy_trial(leadfield, cfg, nnz, alpha, seed)
    return n_trials / (time.perf_counter() - start)


def bench_torch(
    leadfield: np.ndarray, nnz: int, alpha: float, n_trials: int, batch_size: int, dense: bool
) -> float:
    """Trials/s of the batched simulator; ``dense`` also materialises the (B, N, T) sources."""
    sources = SourceSimulator()
    sensors = SensorSimulator(leadfield)
    gen = torch.Generator().manual_seed(0)
    sources.simulate(2, leadfield.shape[1], nnz, generator=gen)  # build the filter operators once
    start = time.perf_counter()
    done = 0
    while done < n_trials:
        batch = sources.simulate(batch_size, leadfield.shape[1], nnz, generator=gen)
        sensors.simulate(batch, alpha, gen)
        if dense:
            batch.dense()
        done += batch_size
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="more trials, nnz 100 and MEG too")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; the best of each is kept"
    )
    args = parser.parse_args()
    n_numpy, n_torch = (300, 4096) if args.large else (60, 1024)
    setups = [("eeg", 5)] + ([("eeg", 100), ("mag", 5)] if args.large else [])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; alpha 0.5, 1284 sources, T = 250, "
        f"batch {args.batch_size}; best of {args.rounds} alternating rounds"
    )
    print(
        f"{'sensors':>8} {'nnz':>4} {'numpy loop':>11} {'torch batched':>14} {'ratio':>7}"
        f" {'torch + dense x':>16} {'ratio':>7}   (trials/s)"
    )
    for sensor, nnz in setups:
        leadfield = simulate_leadfield("fixed", n_sources=1284, sensor=sensor).leadfield
        baseline = batched = with_dense = 0.0
        for _ in range(args.rounds):
            baseline = max(baseline, bench_numpy(leadfield, nnz, 0.5, n_numpy))
            batched = max(
                batched, bench_torch(leadfield, nnz, 0.5, n_torch, args.batch_size, dense=False)
            )
            with_dense = max(
                with_dense, bench_torch(leadfield, nnz, 0.5, n_torch, args.batch_size, dense=True)
            )
        print(
            f"{sensor:>8} {nnz:>4} {baseline:>11.1f} {batched:>14.1f} {batched / baseline:>6.1f}x"
            f" {with_dense:>16.1f} {with_dense / baseline:>6.1f}x"
        )
    print(
        "torch batched: sources as (indices, waveforms) plus sensor data, the simulator's output; "
        "+ dense x also writes the (batch, sources, time) array the numpy loop builds per trial."
    )


if __name__ == "__main__":
    main()
