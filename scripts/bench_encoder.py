"""Benchmark the ridge encoder: speed against himalaya's ``RidgeCV`` by shape, and memory and time
of a whole-brain fit at LAION-fMRI's real geometry.

**Speed** (default). Fit + predict time, peak memory and median test r of neurotorch and himalaya
on the same arrays, folds and penalty grid, for three problems:

* ``config``: the arrays ``configs/encoder.yaml`` trains on (synthetic ``small`` tree, CLIP → five
  ROIs, split ``random_0``; fewer trials than features: neurotorch solves in the dual), with the
  config's settings (score R², one penalty for all voxels); himalaya chooses per voxel;
* ``features-64`` and ``features-1024``: random features of images shown twice with a planted
  linear map, ``--trials`` training trials, ``--voxels`` voxels, 64 or 1,024 features (the CLIP
  width), per-voxel penalties for both (neurotorch: one pass of per-fold sums, the primal solve).

Both libraries get five folds grouped by image and the same relative grid (himalaya the matching
absolute penalties, ``relative × trace(XᵀX_centred) / D``), in float64 and in float32 (neurotorch's
``precision="float32"`` keeps its cross-products and weights in float32; himalaya then runs in
float32 throughout). Every run is a fresh child process with one CPU thread (on an oversubscribed
machine multi-threaded LAPACK calls slow down by tens of times); the libraries alternate within
each round (A B, then B A), so a ratio compares runs made side by side, and the ratio's range over
the rounds is reported. Peak memory is the child's RSS high-water mark (``VmHWM``, reset after
the imports; Linux) or ``torch.cuda.max_memory_allocated`` on a GPU. himalaya is optional
(``pip install himalaya``); without it only neurotorch runs.

**Scale** (``--scale``). One whole-brain fit at the real geometry (572,557 voxels, 1,024 CLIP
features, ``--trials`` trials: four sessions of 1,050 by default) through the user's path:
`neurotorch.models.LinearEncoder` with the ``encoder`` config's settings in a Lightning fit and
test, in a fresh child process, on synthetic batches generated on the fly (CLIP-like embeddings of
images shown twice, a planted low-rank map, noise SD 2). It prints the memory plan, the estimate,
the child's peak RSS, the memory per voxel above the child's baseline, and the time of the pass
over the trials, the solve and the test, as JSON rows; `scale_rows` returns them for
``scripts/bench_scale.py``. The anchors are measured in the same run at ``--anchor-voxels``:
himalaya's ``RidgeCV`` (its memory per voxel) and neurotorch on the same reduced problem.

    python scripts/bench_encoder.py                    # speed, CPU, one thread each (~15 min)
    python scripts/bench_encoder.py --repeat 1         # one round (~6 min)
    python scripts/bench_encoder.py --scale            # whole brain, 4 sessions (~25 min)
    python scripts/bench_encoder.py --scale --voxels 50000 --trials 1050   # a smaller check
    python scripts/bench_encoder.py --scale --trials 35700 --anchor-voxels 0   # one subject
    python scripts/bench_encoder.py --device cuda --trials 20000 --voxels 50000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from neurotorch.cli.arguments import non_negative_int, positive_int

PENALTIES = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
N_FOLDS = 5
SPEED_LIBRARIES = ("neurotorch", "himalaya", "neurotorch-float32", "himalaya-float32")
REAL_VOXELS, CLIP_FEATURES, SESSION_TRIALS = 572_557, 1024, 1050


# -- speed problems --------------------------------------------------------------------------
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


def planted_arrays(out: Path, trials: int, test: int, features: int, voxels: int) -> None:
    """Random features of images shown twice, a planted linear map, noise SD 2."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=((trials + test) // 2 + 1, features)).astype(np.float32)
    image_of = np.repeat(np.arange(len(images)), 2)[: trials + test]
    x = images[image_of]
    weights = rng.normal(size=(features, voxels)).astype(np.float32) / np.sqrt(features)
    y = x @ weights + 2 * rng.normal(size=(trials + test, voxels)).astype(np.float32)
    names = np.array([f"img{i}" for i in image_of[:trials]])
    train, held = slice(0, trials), slice(trials, None)
    np.savez(out, x=x[train], y=y[train], names=names, x_test=x[held], y_test=y[held])


def median_r(pred: np.ndarray, y: np.ndarray) -> float:
    pred, y = pred - pred.mean(0), y - y.mean(0)
    return float(np.median((pred * y).sum(0) / np.sqrt((pred**2).sum(0) * (y**2).sum(0))))


def run_neurotorch(data, device: str, one_penalty: bool, precision: str):
    from neurotorch.models.ridge import fit_ridge, folds_of
    from neurotorch.models.ridge_statistics import RidgeStatistics

    x, y = torch.from_numpy(data["x"]).to(device), torch.from_numpy(data["y"]).to(device)
    folds = folds_of(data["names"].tolist(), N_FOLDS)
    stats = RidgeStatistics(x.shape[1], y.shape[1], N_FOLDS, device=device, precision=precision)
    for start in range(0, len(x), 256):
        rows = slice(start, start + 256)
        stats.update(x[rows], y[rows], folds[rows])
    fit = fit_ridge(stats, penalties=PENALTIES, score="r2", per_target=not one_penalty)
    x_test = torch.from_numpy(data["x_test"]).to(device, fit.weight.dtype)
    return (x_test @ fit.weight + fit.intercept).cpu().numpy(), fit.solver


def run_himalaya(data, device: str, one_penalty: bool, precision: str):
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV

    from neurotorch.models.ridge import folds_of

    set_backend("torch_cuda" if device == "cuda" else "torch", on_error="raise")
    x, y, names = data["x"].astype(precision), data["y"].astype(precision), data["names"]
    folds = folds_of(names.tolist(), N_FOLDS).numpy()
    splits = [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in np.unique(folds)]
    centred = x.astype(np.float64) - x.mean(0, dtype=np.float64)
    alphas = np.asarray(PENALTIES) * (centred**2).sum() / x.shape[1]
    model = RidgeCV(alphas=alphas, fit_intercept=True, cv=splits)
    model.fit(x, y)
    pred = model.predict(data["x_test"].astype(precision))
    return np.asarray(pred.cpu() if hasattr(pred, "cpu") else pred), "svd"


def speed_worker(spec: dict) -> dict:
    """Fit + predict of one library on one problem, in this (fresh) process."""
    library, _, precision = spec["library"].partition("-")
    run = run_neurotorch if library == "neurotorch" else run_himalaya
    data = dict(np.load(spec["data"]))
    cuda = spec["device"] == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    _reset_peak_rss()
    start = time.perf_counter()
    pred, solver = run(data, spec["device"], spec["one_penalty"], precision or "float64")
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if cuda else _rss("VmHWM")
    return {
        "seconds": seconds,
        "peak_gib": peak / 2**30,
        "median_r": median_r(pred, data["y_test"]),
        "solver": solver,
    }


# -- real geometry ---------------------------------------------------------------------------
class SyntheticBetas(torch.utils.data.IterableDataset):
    """Batches of a real-size session generated on the fly: CLIP-like embeddings (unit norm, a
    shared offset) of images shown twice, betas = a planted rank-8 map of them (amplitude 0–1,
    every third voxel noise only) + baseline + noise SD 2, float32."""

    def __init__(self, trials: int, features: int, voxels: int, *, batch: int, seed: int):
        super().__init__()
        self.trials, self.features, self.voxels = trials, features, voxels
        self.batch, self.seed = batch, seed
        rng = torch.Generator().manual_seed(12345)  # the same map for training and test
        self.offset = torch.randn(features, generator=rng)
        left = torch.randn(features, 8, generator=rng)
        right = torch.randn(8, voxels, generator=rng) * torch.rand(voxels, generator=rng)
        right[:, ::3] = 0
        self.map = (left @ right) / (features * 8) ** 0.5 * 100
        self.baseline = torch.randn(voxels, generator=rng) + 1

    def __iter__(self):
        for index, start in enumerate(range(0, self.trials, self.batch)):
            rng = torch.Generator().manual_seed(self.seed * 100_003 + index)
            n = min(self.batch, self.trials - start)
            images = torch.arange(start, start + n) // 2 + self.seed * 10_000_000
            image_rng = [torch.Generator().manual_seed(int(i)) for i in images.unique()]
            embedding = torch.stack([torch.randn(self.features, generator=g) for g in image_rng])
            embedding = embedding + self.offset
            embedding = embedding / embedding.norm(dim=1, keepdim=True)
            embedding = embedding.repeat_interleave(2, dim=0)[:n].to(torch.float16)
            betas = torch.randn(n, self.voxels, generator=rng).mul_(2).add_(self.baseline)
            betas.addmm_(embedding.float(), self.map)
            yield {
                "embedding": embedding.float(),
                "betas": betas,
                "image_name": [f"img{int(i)}.jpg" for i in images],
                "subject": ["sub-01"] * n,
            }


class _Clock(L.Callback):
    """Times the solve: it runs when testing starts, before the first test batch."""

    def __init__(self):
        self.marks: dict[str, float] = {}

    def on_test_epoch_start(self, *args) -> None:
        self.marks.setdefault("solve_start", time.perf_counter())

    def on_test_batch_start(self, *args) -> None:
        self.marks.setdefault("solve_end", time.perf_counter())


def scale_worker(spec: dict) -> dict:
    """A whole-brain `LinearEncoder` fit and test through Lightning, in this (fresh) process."""
    from neurotorch.models import LinearEncoder
    from neurotorch.models.encoder_memory import EncoderSize

    voxels, features, trials = spec["voxels"], spec["features"], spec["trials"]
    loader = torch.utils.data.DataLoader  # batches come whole from the dataset
    train = SyntheticBetas(trials, features, voxels, batch=spec["batch"], seed=1)
    test = SyntheticBetas(spec["test_trials"], features, voxels, batch=spec["batch"], seed=2)
    baseline = _rss("VmRSS")
    _reset_peak_rss()
    model = LinearEncoder(
        penalties=PENALTIES,
        n_folds=N_FOLDS,
        score="r2",
        per_voxel=False,
        precision=spec["precision"],
        voxel_chunk=spec["voxel_chunk"],
        output_dir=spec["output_dir"],
    )
    clock = _Clock()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader(train, batch_size=None))
    passed = time.perf_counter()
    trainer.test(model, dataloaders=loader(test, batch_size=None), verbose=False)
    end = time.perf_counter()
    peak = _rss("VmHWM")
    plan = model.memory_plan
    size = EncoderSize(
        n_features=features,
        n_voxels=voxels,
        n_candidates=len(PENALTIES),
        batch_size=spec["batch"],
        n_test_images=spec["test_trials"] // 2,
        precision=spec["precision"],
    )
    return {
        "row": f"encoder whole-brain fit + test ({spec['precision']})",
        "voxels": voxels,
        "features": features,
        "trials": trials,
        "test_trials": spec["test_trials"],
        "precision": spec["precision"],
        "voxel_chunk": plan.voxel_chunk,
        "cross_products_on_disk": plan.on_disk,
        "available_gb": None if plan.available is None else plan.available / 1e9,
        "estimate_gb": plan.need / 1e9,
        "estimate_fit_gb": size.fit_bytes(plan.voxel_chunk, on_disk=plan.on_disk) / 1e9,
        "peak_rss_gb": peak / 1e9,
        "baseline_rss_gb": baseline / 1e9,
        "kb_per_voxel": (peak - baseline) / voxels / 1e3,
        "seconds_pass": passed - start,
        "seconds_solve": clock.marks["solve_end"] - clock.marks["solve_start"],
        "seconds_test": end - clock.marks["solve_end"],
        "seconds_total": end - start,
        "test_median_r": model.test_metrics["median_r"],
    }


def anchor_worker(spec: dict) -> dict:
    """Peak memory per voxel of one library on a reduced real-width problem (fresh process)."""
    voxels, features, trials = spec["voxels"], spec["features"], spec["trials"]
    batches = SyntheticBetas(trials, features, voxels, batch=256, seed=1)
    parts = list(batches)
    data = {
        "x": torch.cat([b["embedding"] for b in parts]).numpy(),
        "y": torch.cat([b["betas"] for b in parts]).numpy(),
        "names": np.array([n for b in parts for n in b["image_name"]]),
    }
    test = next(iter(SyntheticBetas(256, features, voxels, batch=256, seed=2)))
    data["x_test"], data["y_test"] = test["embedding"].numpy(), test["betas"].numpy()
    del parts, batches
    baseline = _rss("VmRSS")
    _reset_peak_rss()
    library, _, precision = spec["library"].partition("-")
    run = run_neurotorch if library == "neurotorch" else run_himalaya
    start = time.perf_counter()
    run(data, "cpu", False, precision or "float64")
    seconds = time.perf_counter() - start
    peak = _rss("VmHWM")
    data_bytes = sum(a.nbytes for a in data.values())
    return {
        "row": f"anchor: {spec['library']} at {voxels:,} voxels",
        "voxels": voxels,
        "features": features,
        "trials": trials,
        "kb_per_voxel": (peak - baseline + data_bytes) / voxels / 1e3,
        "seconds": seconds,
        "note": "peak above the process baseline, with the input arrays counted",
    }


def scale_rows(
    voxels: int = REAL_VOXELS,
    features: int = CLIP_FEATURES,
    trials: int = 4 * SESSION_TRIALS,
    *,
    precisions: tuple[str, ...] = ("float32",),
    voxel_chunk: int | None = None,
    anchor_voxels: int = 20_000,
    threads: int = 1,
) -> list[dict]:
    """The encoder's memory and time rows at real geometry (see the module docstring), each from
    a fresh child process; the anchors (himalaya when installed, and neurotorch) at
    ``anchor_voxels`` voxels of the same width and trials (none when it is 0)."""
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for precision in precisions:
            spec = {
                "kind": "scale",
                "voxels": voxels,
                "features": features,
                "trials": trials,
                "test_trials": 500,
                "batch": 256,
                "precision": precision,
                "voxel_chunk": voxel_chunk,
                "output_dir": out,
                "threads": threads,
            }
            rows.append(_child(spec))
    libraries = ["neurotorch"] + (["himalaya"] if _has_himalaya() else [])
    for library in libraries if anchor_voxels else []:
        spec = {
            "kind": "anchor",
            "library": library,
            "voxels": anchor_voxels,
            "features": features,
            "trials": trials,
            "threads": threads,
        }
        rows.append(_child(spec))
    return rows


# -- processes -------------------------------------------------------------------------------
def _reset_peak_rss() -> None:
    """Start the RSS high-water mark (``VmHWM``) afresh at the current RSS (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def _rss(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of this process in bytes."""
    status = Path("/proc/self/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith(field)).split()[1]) * 1024
    )


def _has_himalaya() -> bool:
    try:
        import himalaya  # noqa: F401
    except ImportError:
        return False
    return True


WORKERS = {"speed": speed_worker, "scale": scale_worker, "anchor": anchor_worker}


def _child(spec: dict) -> dict:
    """Run ``spec`` in a fresh Python process and return its JSON result."""
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed(args) -> None:
    libraries = [lib for lib in SPEED_LIBRARIES if "himalaya" not in lib or _has_himalaya()]
    if len(libraries) == 2:
        print("himalaya is not installed: timing neurotorch only (pip install himalaya)")
    with tempfile.TemporaryDirectory() as tmp:
        problems = {"config": (Path(tmp, "config.npz"), True)}
        config_arrays(problems["config"][0])
        for width in (64, 1024):
            path = Path(tmp, f"features-{width}.npz")
            planted_arrays(path, args.trials, args.test, width, args.voxels)
            problems[f"features-{width}"] = (path, False)
        for name, (data, one_penalty) in problems.items():
            arrays = np.load(data)
            n, d, v = arrays["x"].shape[0], arrays["x"].shape[1], arrays["y"].shape[1]
            print(f"{name}: {n} training trials × {d} features → {v} voxels")
            runs: dict[str, list[dict]] = {lib: [] for lib in libraries}
            for round_ in range(args.repeat):  # A B, then B A: interleaved
                for lib in libraries if round_ % 2 == 0 else libraries[::-1]:
                    spec = {
                        "kind": "speed",
                        "library": lib,
                        "data": str(data),
                        "device": args.device,
                        "one_penalty": one_penalty,
                        "threads": args.threads,
                    }
                    runs[lib].append(_child(spec))
            report(runs)


def report(runs: dict[str, list[dict]]) -> None:
    for lib, results in runs.items():
        best = min(results, key=lambda r: r["seconds"])
        print(
            f"  {lib:<19} {best['seconds']:7.2f} s  peak {best['peak_gib']:6.2f} GiB  "
            f"median test r {best['median_r']:.4f}  ({best['solver']})"
        )
    for precision in ("", "-float32"):
        ours, theirs = runs.get(f"neurotorch{precision}"), runs.get(f"himalaya{precision}")
        if ours and theirs:
            ratios = [h["seconds"] / n["seconds"] for n, h in zip(ours, theirs, strict=True)]
            print(
                f"  {precision.strip('-') or 'float64'}: himalaya / neurotorch time "
                f"{min(ratios):.2f}–{max(ratios):.2f}× over {len(ratios)} interleaved rounds"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scale", action="store_true", help="whole-brain memory and time rows")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--trials", type=positive_int, help="training trials (speed 2000; scale 4200)"
    )
    parser.add_argument("--test", type=positive_int, default=500, help="speed: test trials")
    parser.add_argument("--voxels", type=positive_int, help="voxels (speed 10000; scale 572557)")
    parser.add_argument("--precision", nargs="+", default=["float32"], help="scale: precisions")
    parser.add_argument(
        "--voxel-chunk", type=positive_int, help="scale: voxel_chunk (default: planned)"
    )
    parser.add_argument(
        "--anchor-voxels",
        type=non_negative_int,
        default=20_000,
        help="scale: voxels of the anchors (0: none; the anchors hold every trial in memory, so "
        "their memory grows with --trials)",
    )
    parser.add_argument("--repeat", type=positive_int, default=2, help="speed: interleaved rounds")
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=1,
        help="CPU threads of every run (0: torch's default)",
    )
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        print(json.dumps(WORKERS[spec["kind"]](spec)))
        return
    if args.scale:
        rows = scale_rows(
            args.voxels or REAL_VOXELS,
            trials=args.trials or 4 * SESSION_TRIALS,
            precisions=tuple(args.precision),
            voxel_chunk=args.voxel_chunk,
            anchor_voxels=args.anchor_voxels,
            threads=args.threads,
        )
        for row in rows:
            print(json.dumps(row))
        return
    args.trials, args.voxels = args.trials or 2000, args.voxels or 10_000
    speed(args)


if __name__ == "__main__":
    main()
