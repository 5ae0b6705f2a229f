"""Benchmark the posteriors of CaliBrain's solvers: neurotorch's batched torch code vs CaliBrain's
own per-trial numpy functions, on the same trials, leadfield and noise variance, in one process.

Each row times BMN (γ learned), eLORETA, gamma-MAP and sFlex for a fixed or free 1284-source EEG
leadfield (MNE, spherical head), 250 samples per trial, and prints trials per second, the ratio,
and the largest difference of the posterior means relative to their peak. Needs ``calibrain``
(the ``dev`` extra).

    python scripts/bench_solvers.py                 # 4 trials per solver and orientation (~2 min)
    python scripts/bench_solvers.py --trials 8
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from neurotorch.meeg.forward import simulate_leadfield
from neurotorch.meeg.simulation import ERPConfig, SensorSimulator, SourceSimulator
from neurotorch.meeg.solvers import SOLVERS, make_solver


def calibrain_solvers() -> dict:
    try:
        from calibrain.source_estimation import BMN, eloreta, gamma_map, gamma_map_sflex
    except ImportError as exc:
        raise SystemExit(
            f"error: this benchmark compares with CaliBrain, which is not installed ({exc}); "
            'install the dev extra: pip install -e ".[dev]"'
        ) from None
    logging.getLogger("calibrain").setLevel(logging.ERROR)
    return {
        "BMN": BMN,
        "eloreta": eloreta,
        "gamma_map": gamma_map,
        "gamma_map_sflex": gamma_map_sflex,
    }


def trials(leadfield: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` CaliBrain trials (nnz 5, alpha 0.5): sensor data and true noise variances."""
    gen = torch.Generator().manual_seed(0)
    k = leadfield.shape[2] if leadfield.ndim == 3 else 1
    sources = SourceSimulator(ERPConfig(), dtype=torch.float64).simulate(
        n, leadfield.shape[1], 5, generator=gen, n_components=k
    )
    sensors = SensorSimulator(leadfield, dtype=torch.float64).simulate(sources, 0.5, gen)
    return sensors.y, sensors.noise_var.to(torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials per solver and orientation")
    args = parser.parse_args()
    theirs_by_name = calibrain_solvers()
    quiet = logging.getLogger("bench-solvers")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.trials} trials")
    print(
        f"{'orientation':>11} {'solver':>16} {'CaliBrain':>10} {'neurotorch':>11} {'ratio':>7}"
        f" {'max |Δ mean| / peak':>20}   (trials/s)"
    )
    for orientation in ("fixed", "free"):
        data = simulate_leadfield(orientation, n_sources=1284, sensor="eeg")
        lf = data.leadfield
        k = lf.shape[2] if lf.ndim == 3 else 1
        flat = lf.reshape(lf.shape[0], -1)
        y, noise_var = trials(lf, args.trials)
        for solver in SOLVERS:
            start = time.perf_counter()  # the per-leadfield part (weights, basis) included
            strategy = make_solver(solver)
            prepared = strategy.prepare(torch.as_tensor(lf), data.src_coords)
            fit = strategy.fit(y, torch.as_tensor(lf), prepared, noise_var=noise_var)
            ours_rate = args.trials / (time.perf_counter() - start)
            start = time.perf_counter()
            try:
                refs = [
                    theirs_by_name[solver](
                        L=flat,
                        y=y[b].numpy(),
                        noise_var=float(noise_var[b]),
                        n_orient=k,
                        logger=quiet,
                        src_coords=data.src_coords,
                    )
                    for b in range(args.trials)
                ]
            except ValueError as exc:  # CaliBrain 1.0.3's eloreta fails for free orientation
                print(f"{orientation:>11} {solver:>16} {'fails':>10} {ours_rate:>11.2f}   ({exc})")
                continue
            theirs_rate = args.trials / (time.perf_counter() - start)
            mean = fit.posterior.mean.reshape(args.trials, flat.shape[1], -1).numpy()
            ref = np.stack([r["posterior_mean"].reshape(flat.shape[1], -1) for r in refs])
            diff = np.abs(mean - ref).max() / np.abs(ref).max()
            print(
                f"{orientation:>11} {solver:>16} {theirs_rate:>10.2f} {ours_rate:>11.2f}"
                f" {ours_rate / theirs_rate:>6.1f}x {diff:>20.1e}"
            )


if __name__ == "__main__":
    main()
