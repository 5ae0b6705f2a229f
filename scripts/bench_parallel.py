"""Units per second of the execution layer: one process, and 2 local Dask workers.

    python scripts/bench_parallel.py [--units 16] [--seconds 0.5] [--repeat 3] [--lnm-size small]
        [--grid-runs 2]

Three measurements, each interleaved A/B/A/B in the same run on the same units:

* throughput: CPU-bound units (a seeded matrix product sized to take ``--seconds`` each) run in a
  plain ``for`` loop, then by `run_units` with 2 local workers (a Dask ``LocalCluster``, started
  once outside the timing; its start is reported) — the ratio is the scale-out on this machine;
* real units: the ``maps`` units of lesion network mapping (one batch file × two lesions each) on
  a synthetic connectome, in a loop, by `run_units` in this process and on the 2 workers, beside
  `network_map` in one process (every core) on the same data;
* grid units: the runs of a calibration grid (`neurotorch.meeg.grid.plan_grid`, BMN on the tiny
  synthetic CaliBrain leadfields, 8 configurations × ``--grid-runs``), in a loop, by `run_units`
  in this process and on the 2 workers;
* engine overhead per unit: units that do nothing (no file either), `run_units` in this process
  and on 2 workers, against a plain loop (milliseconds per unit).

The machine's load average (1 min) is printed before and after every repeat: other work on a
shared machine slows every engine, and the workers' share of 2 cores most.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"  # one thread per unit, in this process and in every worker it starts

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from neurotorch.connectome import network_map  # noqa: E402
from neurotorch.connectome.lnm_units import plan_network_map  # noqa: E402
from neurotorch.io.atomic import write_json  # noqa: E402
from neurotorch.meeg import LeadfieldBuilder  # noqa: E402
from neurotorch.meeg.grid import plan_grid  # noqa: E402
from neurotorch.parallel import run_units  # noqa: E402
from neurotorch.synthetic.connectome import make_connectome_dataset  # noqa: E402
from neurotorch.synthetic.meeg import make_calibrain  # noqa: E402

GRID = {"subject": "fsaverage", "orientation_type": ["fixed", "free"], "nnz": [1, 5]}


@dataclass(frozen=True)
class ProductUnit:
    """A seeded ``n × n`` matrix product repeated ``repeats`` times; writes its trace (atomic)."""

    out: str
    index: int
    n: int
    repeats: int

    @property
    def key(self) -> str:
        return f"product-{self.index:04d}"

    @property
    def lock_path(self) -> None:
        return None

    def done(self) -> bool:
        return (Path(self.out) / f"{self.key}.json").exists()

    def run(self) -> float:
        a = np.random.default_rng(self.index).standard_normal((self.n, self.n))
        b = a
        for _ in range(self.repeats):
            b = np.tanh(a @ b / self.n)
        value = float(np.trace(b))
        write_json(Path(self.out) / f"{self.key}.json", {"trace": value})
        return value


@dataclass(frozen=True)
class NoopUnit:
    """A unit that does nothing (never done, no file): what is left is the engine's cost."""

    index: int
    lock_path = None

    @property
    def key(self) -> str:
        return f"noop-{self.index:05d}"

    def done(self) -> bool:
        return False

    def run(self) -> int:
        return self.index


def make_units(folder: Path, count: int, n: int, repeats: int) -> list[ProductUnit]:
    folder.mkdir(parents=True, exist_ok=True)
    return [ProductUnit(str(folder), k, n, repeats) for k in range(count)]


def calibrate(seconds: float) -> tuple[int, int]:
    """Matrix size and repeats so that one unit takes about ``seconds`` on one thread (the best of
    three timings of 8 repeats: the first call also warms the math library up)."""
    n, probe = 256, 8
    one = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(3):
            unit = ProductUnit(tmp, attempt, n, probe)
            start = time.perf_counter()
            unit.run()
            one = min(one, (time.perf_counter() - start) / probe)
    return n, max(1, round(seconds / max(one, 1e-6)))


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def lnm_units(connectome: Path, folder: Path) -> list:
    """The ``maps`` units of lesion network mapping on the synthetic connectome (2 lesions each)."""
    plan = plan_network_map(
        folder, connectome / "lesions", connectome / "batches", lesions_per_unit=2
    )
    return plan.units("maps")


def lnm_inputs(connectome: Path) -> tuple[Path, Path]:
    return connectome / "lesions", connectome / "batches"


def grid_units(leadfields: Path, folder: Path, n_runs: int) -> list:
    """The units of a calibration grid: 8 configurations × ``n_runs`` runs."""
    grid = {**GRID, "alpha_SNR": [0.3, 0.7]}
    return plan_grid(LeadfieldBuilder(leadfields), folder, grid, n_runs=n_runs).units()


def on_every_core(action) -> None:
    """Run ``action`` with torch on every core (this script pins one thread per unit)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    try:
        action()
    finally:
        torch.set_num_threads(1)


def load() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=0.5, help="CPU time per unit")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lnm-size", default="small", choices=["tiny", "small", "bench"])
    parser.add_argument("--noop-units", type=int, default=500, help="units of the overhead")
    parser.add_argument("--grid-runs", type=int, default=2, help="runs per grid configuration")
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    n, repeats = calibrate(args.seconds)
    engines = {
        "loop": lambda work, client: [u.run() for u in work],
        "in-process": lambda work, client: run_units(work, progress=False),
        "dask-2": lambda work, client: run_units(work, scheduler=client, progress=False),
    }
    rows: dict[str, list[float]] = {}
    loads: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        connectome = make_connectome_dataset(root / "connectome", size=args.lnm_size)
        n_lnm = len(lnm_units(connectome, root / "count"))
        leadfields = make_calibrain(root / "calibrain", size="tiny") / "1284src_leadfield"
        n_grid = 8 * args.grid_runs
        start = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
        client = Client(cluster)
        cluster_start = time.perf_counter() - start
        with cluster, client:
            for r in range(args.repeat):  # interleaved: every engine once per repeat
                before = load()
                for name, engine in engines.items():
                    work = make_units(root / f"work-{name}-{r}", args.units, n, repeats)
                    rows.setdefault(f"work/{name}", []).append(
                        timed(lambda e=engine, w=work: e(w, client))
                    )
                    noop = [NoopUnit(k) for k in range(args.noop_units)]
                    rows.setdefault(f"noop/{name}", []).append(
                        timed(lambda e=engine, w=noop: e(w, client))
                    )
                for name, engine in engines.items():
                    work = lnm_units(connectome, root / f"lnm-{name}-{r}")
                    rows.setdefault(f"lnm/{name}", []).append(
                        timed(lambda e=engine, w=work: e(w, client))
                    )
                for name, engine in engines.items():
                    work = grid_units(leadfields, root / f"grid-{name}-{r}", args.grid_runs)
                    rows.setdefault(f"grid/{name}", []).append(
                        timed(lambda e=engine, w=work: e(w, client))
                    )
                rows.setdefault("lnm/network_map", []).append(
                    timed(lambda: on_every_core(lambda: network_map(*lnm_inputs(connectome))))
                )
                loads.append((before, load()))
    best = {name: min(times) for name, times in rows.items()}

    def overhead_ms(name: str) -> float:
        return 1000 * (best[f"noop/{name}"] - best["noop/loop"]) / args.noop_units

    report = {
        "cores": os.cpu_count(),
        "load_1min_before_after_each_repeat": loads,
        "units": args.units,
        "seconds_per_unit": statistics.median(rows["work/loop"]) / args.units,
        "units_per_s_loop": args.units / best["work/loop"],
        "units_per_s_2_workers": args.units / best["work/dask-2"],
        "ratio_2_workers_vs_loop": best["work/loop"] / best["work/dask-2"],
        "lnm_size": args.lnm_size,
        "lnm_units": n_lnm,
        "lnm_units_per_s_loop": n_lnm / best["lnm/loop"],
        "lnm_units_per_s_in_process": n_lnm / best["lnm/in-process"],
        "lnm_units_per_s_2_workers": n_lnm / best["lnm/dask-2"],
        "lnm_ratio_2_workers_vs_loop": best["lnm/loop"] / best["lnm/dask-2"],
        "lnm_network_map_one_process_s": best["lnm/network_map"],
        "lnm_units_2_workers_s": best["lnm/dask-2"],
        "grid_units": n_grid,
        "grid_units_per_s_loop": n_grid / best["grid/loop"],
        "grid_units_per_s_in_process": n_grid / best["grid/in-process"],
        "grid_units_per_s_2_workers": n_grid / best["grid/dask-2"],
        "grid_ratio_2_workers_vs_loop": best["grid/loop"] / best["grid/dask-2"],
        "engine_overhead_ms_per_unit_in_process": overhead_ms("in-process"),
        "engine_overhead_ms_per_unit_on_dask": overhead_ms("dask-2"),
        "local_cluster_start_s": cluster_start,
        "all_times_s": rows,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
