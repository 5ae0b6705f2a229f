"""Benchmark the ridge encoder against himalaya's ``RidgeCV``: fit + predict time, peak memory and
median test r, on the same arrays, folds and penalty grid.

Two problems:

* ``config``: the arrays ``configs/encoder.yaml`` trains on (synthetic ``small`` tree, CLIP → five
  ROIs, split ``random_0``; training + validation trials, fewer than features: neurotorch solves
  in the dual), with the config's settings (score R², one penalty for all voxels); himalaya
  chooses per voxel (its default);
* ``large``: random features with a planted linear map, ``--trials`` training trials (folds of
  whole images), ``--test`` test trials, ``--features`` features and ``--voxels`` voxels
  (neurotorch: one pass of per-fold sums and the primal solve), per-voxel penalties for both.

Both use five folds grouped by image and the same relative grid (himalaya gets the matching
absolute penalties, ``relative × trace(XᵀX_centred) / D``). Each library runs in a fresh child
process, so the peak memory reported is its own: the RSS high-water mark (``VmHWM``, reset before
each run; Linux) on CPU, ``torch.cuda.max_memory_allocated`` on a GPU. Both include the arrays.
One CPU thread each by default: on an oversubscribed machine multi-threaded LAPACK calls (MKL's
``syevd``, ``gesdd``) slow down by tens of times and the timings say more about the load than the
libraries. Times are the best of
``--repeat`` runs. himalaya is optional (``pip install himalaya``); without it only neurotorch runs.

    python scripts/bench_encoder.py                        # CPU, one thread each, ~1 min
    python scripts/bench_encoder.py --threads 0            # torch's default threads (idle machine)
    python scripts/bench_encoder.py --device cuda --trials 20000 --features 1024 --voxels 50000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neurotorch.models.ridge import RidgeStatistics, fit_ridge, folds_of

PENALTIES = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
N_FOLDS = 5


def config_arrays(out: Path) -> None:
    """Training (+ validation) and test arrays of the config problem, saved to ``out``."""
    from neurotorch.lightning import LaionFMRIDataModule

    dm = LaionFMRIDataModule(
        data_dir="synthetic",
        subject="sub-01",
        voxels={"roi": ["face", "place", "body", "V1v", "laionEVC"]},
        features="CLIP",
        trials={"split": "random_0", "val_fraction": 0.1},
        batch_size=256,
    )
    dm.prepare_data()
    dm.setup("fit")
    parts = {}
    for name in ("train", "val", "test"):
        batches = list(dm.dataloader(name, shuffle=False))
        parts[name] = (
            np.concatenate([b["embedding"].numpy() for b in batches]).astype(np.float32),
            np.concatenate([b["betas"].numpy() for b in batches]).astype(np.float32),
            [n for b in batches for n in b["image_name"]],
        )
    np.savez(
        out,
        x=np.concatenate([parts["train"][0], parts["val"][0]]),
        y=np.concatenate([parts["train"][1], parts["val"][1]]),
        names=np.array(parts["train"][2] + parts["val"][2]),
        x_test=parts["test"][0],
        y_test=parts["test"][1],
    )


def large_arrays(out: Path, trials: int, test: int, features: int, voxels: int) -> None:
    """Random features of images shown twice, a planted linear map, noise SD 2."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=((trials + test) // 2 + 1, features)).astype(np.float32)
    image_of = np.repeat(np.arange(len(images)), 2)[: trials + test]
    x = images[image_of]
    weights = rng.normal(size=(features, voxels)).astype(np.float32) / np.sqrt(features)
    y = x @ weights + 2 * rng.normal(size=(trials + test, voxels)).astype(np.float32)
    np.savez(
        out, x=x[:trials], y=y[:trials], names=np.array([f"img{i}" for i in image_of[:trials]]),
        x_test=x[trials:], y_test=y[trials:],
    )  # fmt: skip


def median_r(pred: np.ndarray, y: np.ndarray) -> float:
    pred, y = pred - pred.mean(0), y - y.mean(0)
    return float(np.median((pred * y).sum(0) / np.sqrt((pred**2).sum(0) * (y**2).sum(0))))


def run_neurotorch(data, device: str, one_penalty: bool):
    x, y = torch.from_numpy(data["x"]).to(device), torch.from_numpy(data["y"]).to(device)
    folds = folds_of(data["names"].tolist(), N_FOLDS)
    stats = RidgeStatistics(x.shape[1], y.shape[1], N_FOLDS, device=device)
    for start in range(0, len(x), 4096):
        rows = slice(start, start + 4096)
        stats.update(x[rows], y[rows], folds[rows])
    fit = fit_ridge(stats, penalties=PENALTIES, score="r2", per_target=not one_penalty)
    x_test = torch.from_numpy(data["x_test"]).to(device, torch.float64)
    return (x_test @ fit.weight + fit.intercept).cpu().numpy(), fit.solver


def run_himalaya(data, device: str, one_penalty: bool):
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV

    set_backend("torch_cuda" if device == "cuda" else "torch", on_error="raise")
    x, y, names = data["x"].astype(np.float64), data["y"].astype(np.float64), data["names"]
    folds = folds_of(names.tolist(), N_FOLDS).numpy()
    splits = [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in np.unique(folds)]
    centred = x - x.mean(0)
    alphas = np.asarray(PENALTIES) * (centred**2).sum() / x.shape[1]
    model = RidgeCV(alphas=alphas, fit_intercept=True, cv=splits)
    model.fit(x, y)
    pred = model.predict(data["x_test"].astype(np.float64))
    return np.asarray(pred.cpu() if hasattr(pred, "cpu") else pred), "svd"


def worker(spec: dict) -> None:
    """Run one library on one problem (in its own process) and print a JSON line."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    data = dict(np.load(spec["data"]))
    run = run_neurotorch if spec["library"] == "neurotorch" else run_himalaya
    cuda = spec["device"] == "cuda"
    times = []
    for _ in range(spec["repeat"]):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        _reset_peak_rss()
        start = time.perf_counter()
        pred, solver = run(data, spec["device"], spec["one_penalty"])
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else _peak_rss()
    print(json.dumps({
        "seconds": min(times), "peak_gib": peak / 2**30, "median_r": median_r(pred, data["y_test"]),
        "solver": solver,
    }))  # fmt: skip


def _reset_peak_rss() -> None:
    """Start the RSS high-water mark (``VmHWM``) afresh at the current RSS (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss() -> int:
    """This process's RSS high-water mark in bytes since `_reset_peak_rss`."""
    status = Path("/proc/self/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
        * 1024
    )


def measure(library: str, data: Path, args, one_penalty: bool) -> dict | None:
    spec = {"library": library, "data": str(data), "device": args.device, "repeat": args.repeat,
            "one_penalty": one_penalty, "threads": args.threads}  # fmt: skip
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{library} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--trials", type=int, default=2000, help="large problem: training trials")
    parser.add_argument("--test", type=int, default=500, help="large problem: test trials")
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--voxels", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads of both libraries (0: torch's default)"
    )
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    try:
        import himalaya  # noqa: F401

        libraries = ("neurotorch", "himalaya")
    except ImportError:
        print("himalaya is not installed: timing neurotorch only (pip install himalaya)")
        libraries = ("neurotorch",)
    with tempfile.TemporaryDirectory() as tmp:
        problems = {
            "config": (Path(tmp, "config.npz"), True),
            "large": (Path(tmp, "large.npz"), False),
        }
        config_arrays(problems["config"][0])
        large_arrays(problems["large"][0], args.trials, args.test, args.features, args.voxels)
        for name, (data, one_penalty) in problems.items():
            shape = np.load(data)["y"].shape, np.load(data)["x"].shape[1]
            print(
                f"{name}: {shape[0][0]} training trials × {shape[1]} features → {shape[0][1]} voxels"
            )
            results = {lib: measure(lib, data, args, one_penalty) for lib in libraries}
            for lib, res in results.items():
                print(
                    f"  {lib:<10} {res['seconds']:7.2f} s  peak {res['peak_gib']:6.2f} GiB  "
                    f"median test r {res['median_r']:.4f}  ({res['solver']})"
                )
            if "himalaya" in results:
                speed = results["himalaya"]["seconds"] / results["neurotorch"]["seconds"]
                memory = results["himalaya"]["peak_gib"] / max(
                    results["neurotorch"]["peak_gib"], 1e-9
                )
                print(f"  neurotorch is {speed:.2f}× faster, uses {memory:.2f}× less peak memory")


if __name__ == "__main__":
    main()
