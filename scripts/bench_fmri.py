"""Benchmark reading one session of LAION-fMRI betas (``.nii.gz``) into a trials × voxels array.

Four ways over the same file and brain mask, each in a fresh child process whose peak RSS is
its own high-water mark (``VmHWM``: ``ru_maxrss`` would carry the parent's peak across
fork + exec), alternated within each round:

* ``neurotorch``: `neurotorch.io.nifti.read_masked_betas` (fastest inflater, inflation on a helper
  thread, precomputed mask indices, one preallocated output);
* ``baseline``: what laion_fmri's streaming reader does: ``gzip.open``, parse the header with
  nibabel, read each volume's bytes, reshape, ravel and mask it;
* ``nibabel``: full load (``get_fdata(dtype=float32)``), then mask;
* ``limit``: raw isal decompression of the file into a reusable buffer, no NIfTI work at all.

Throughput is decompressed megabytes (10⁶ bytes) per second. The data set is the synthetic
``bench`` size (one session, 80×96×80 grid, 300 trials), written once with
`neurotorch.synthetic.laion_fmri.make_laion_fmri` and reused.

    python scripts/bench_fmri.py                 # bench size, best of 5 (~1 min once the data exist)
    python scripts/bench_fmri.py --repeat 10     # more runs on a busy machine (~2 min)
    python scripts/bench_fmri.py --size small    # quick smoke run
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import resource
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_processes import interleaved, peak_rss, run_child  # noqa: E402

from neurotorch.io.nifti import read_masked_betas  # noqa: E402

PATHS = ("neurotorch", "baseline", "nibabel", "limit")
SUBJECT, SESSION = "sub-01", "ses-01"


def dataset_files(size: str, root: Path | None) -> tuple[Path, Path]:
    """Betas and brain mask of one session, writing the synthetic dataset if absent."""
    from neurotorch.fmri import layout
    from neurotorch.synthetic.laion_fmri import make_laion_fmri

    root = make_laion_fmri(root, size=size)
    return root / layout.session_betas(SUBJECT, SESSION), root / layout.anatomical_brain_mask(
        SUBJECT
    )


# -- the four read paths (run in child processes) ----------------------------------------------


def read_neurotorch(betas: Path, mask: np.ndarray) -> np.ndarray:
    return read_masked_betas(betas, mask)


def read_baseline(betas: Path, mask: np.ndarray) -> np.ndarray:
    """gzip.open + nibabel header + per-volume read, reshape, ravel and mask."""
    flat_mask = mask.ravel()
    with gzip.open(betas, "rb") as stream:
        header = nib.Nifti1Header.from_fileobj(stream)
        dtype, shape = header.get_data_dtype(), header.get_data_shape()
        offset = int(header["vox_offset"])
        if stream.tell() < offset:
            stream.read(offset - stream.tell())
        volume_bytes = int(np.prod(shape[:3])) * dtype.itemsize
        out = np.empty((shape[3], int(flat_mask.sum())), dtype=np.float32)
        for t in range(shape[3]):
            volume = np.frombuffer(stream.read(volume_bytes), dtype=dtype).reshape(
                shape[:3], order="F"
            )
            out[t] = volume.ravel()[flat_mask].astype(np.float32)
    return out


def read_nibabel(betas: Path, mask: np.ndarray) -> np.ndarray:
    return nib.load(betas).get_fdata(dtype=np.float32)[mask].T


def read_limit(betas: Path, mask: np.ndarray) -> None:
    buffer = bytearray(1 << 22)
    with igzip.open(betas, "rb") as stream:
        while stream.readinto(buffer):
            pass


READERS = {
    "neurotorch": read_neurotorch,
    "baseline": read_baseline,
    "nibabel": read_nibabel,
    "limit": read_limit,
}


def time_path(path: str, betas: Path, mask_path: Path) -> dict:
    """Time one read path in this (fresh) process; report seconds, peak RSS and an output digest."""
    mask = np.asarray(nib.load(mask_path).dataobj) > 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    out = READERS[path](betas, mask)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    digest = None if out is None else hashlib.sha1(np.ascontiguousarray(out).tobytes()).hexdigest()
    return {"seconds": seconds, "cpu": cpu, "peak_rss": peak_rss(), "digest": digest}


# -- parent ------------------------------------------------------------------------------------


def measure(path: str, betas: Path, mask_path: Path) -> dict:
    return run_child(__file__, ["--child", path, "--betas", str(betas), "--mask", str(mask_path)])


def plot(results: dict, megabytes: float, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "neurotorch": "#2266aa",
        "baseline": "#999999",
        "nibabel": "#bbbbbb",
        "limit": "#cc4444",
    }
    names = list(results)[::-1]
    speeds = [megabytes / results[n]["seconds"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(names, speeds, color=[colours[n] for n in names])
    for y, speed in enumerate(speeds):
        ax.text(speed, y, f" {speed:.0f}", va="center")
    ax.axvline(0.85 * speeds[names.index("limit")], color="#cc4444", ls="--", lw=1)
    ax.set_xlim(0, 1.15 * max(speeds))
    ax.set_xlabel("decompressed MB/s (dashed: 0.85 × limit)")
    ax.set_title("one session of betas → trials × brain voxels")
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="bench", choices=("tiny", "small", "bench"))
    parser.add_argument("--root", type=Path, default=None, help="synthetic dataset folder")
    parser.add_argument("--repeat", type=int, default=5, help="runs per path; the best is kept")
    parser.add_argument("--plot", type=Path, default=None, help="PNG path (default: cache dir)")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--betas", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mask", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(time_path(args.child, args.betas, args.mask)))
        return

    from neurotorch.config import cache_dir
    from neurotorch.io.inflate import default_inflater
    from neurotorch.io.nifti import read_nifti_header

    betas, mask_path = dataset_files(args.size, args.root)
    header = read_nifti_header(betas)
    megabytes = (header.vox_offset + header.n_volumes * header.volume_nbytes) / 1e6
    n_voxels = int((np.asarray(nib.load(mask_path).dataobj) > 0).sum())
    print(
        f"{betas.name}: shape {header.shape} {header.dtype}, {betas.stat().st_size / 1e6:.0f} MB "
        f"gzipped, {megabytes:.0f} MB raw; mask {n_voxels} voxels; inflater {default_inflater()}"
    )
    # alternated (A B C D, then D C B A), so that load on a shared machine hits every path alike
    runs = interleaved(
        {path: (lambda path=path: measure(path, betas, mask_path)) for path in PATHS}, args.repeat
    )
    results = {
        path: min(r, key=lambda x: x["seconds"])
        | {
            "median": float(np.median([x["seconds"] for x in r])),
            "cpu": min(x["cpu"] for x in r),
            "peak_rss": max(x["peak_rss"] for x in r),
        }
        for path, r in runs.items()
    }

    base, limit = results["baseline"]["seconds"], results["limit"]["seconds"]
    reference = results["nibabel"]["digest"]
    print(
        f"\n{'path':<11}{'seconds':>9}{'median':>8}{'MB/s':>7}{'× baseline':>12}{'× limit':>9}"
        f"{'CPU s':>7}{'peak RSS MB':>13}  same output"
    )
    for path, r in results.items():
        same = "-" if r["digest"] is None else "yes" if r["digest"] == reference else "NO"
        print(
            f"{path:<11}{r['seconds']:>9.2f}{r['median']:>8.2f}{megabytes / r['seconds']:>7.0f}"
            f"{base / r['seconds']:>12.2f}{limit / r['seconds']:>9.2f}{r['cpu']:>7.2f}"
            f"{r['peak_rss'] / 1e6:>13.0f}  {same}"
        )

    ours = results["neurotorch"]
    output_bytes = header.n_volumes * n_voxels * 4
    budget = header.volume_nbytes + output_bytes + 100e6
    vs_base, vs_limit = base / ours["seconds"], limit / ours["seconds"]
    checks = [
        ("neurotorch vs baseline", vs_base, ">= 2.00", vs_base >= 2),
        ("neurotorch vs limit", vs_limit, ">= 0.85", vs_limit >= 0.85),
        (
            "neurotorch peak RSS MB",
            ours["peak_rss"] / 1e6,
            f"<= {budget / 1e6:.0f}",
            ours["peak_rss"] <= budget,
        ),
    ]
    print(
        f"\n(seconds: best of {args.repeat} wall-clock runs; CPU s: least user + system time, all"
        " threads; RSS budget"
        f" = one volume {header.volume_nbytes / 1e6:.1f} MB + output {output_bytes / 1e6:.0f} MB"
        " + 100 MB)"
    )
    for name, value, target, ok in checks:
        print(f"{name:<24}{value:>9.2f}  target {target:<9} {'met' if ok else 'NOT met'}")
    target = args.plot or cache_dir() / "bench" / "bench_fmri.png"
    plot(results, megabytes, target)
    print(f"plot: {target}")


if __name__ == "__main__":
    main()
