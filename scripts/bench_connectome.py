"""Benchmark lesion network mapping: neurotorch (torch) against a numpy float32 BLAS baseline.

Both implementations compute the same maps (mean Fisher z, t, two-sided p, BH q) for the same
lesions from the same batch files, each in a fresh child process whose peak memory is its own
high-water mark (``VmHWM``; ``ru_maxrss`` would carry the parent's peak across fork + exec); the
rows alternate within each of ``--repeat`` rounds and the best time of each is kept. The baseline
reads subjects with h5py and does every product as a float32 matrix product (BLAS), summing the
z maps in float64.
Two more rows time only reading every subject: neurotorch's reader (chunk read with ``os.preadv``,
Fletcher-32 checked in numpy, inflated with ISA-L, no GIL held) and h5py's filter pipeline on the
same checksummed files, the choice `ConnectomeBatches.read_subject` makes.

A second table times the sign-flip permutation max-|t| computation
(`neurotorch.connectome.permutation.permutation_max_t`, on ``--device``) against the same
computation in numpy float64, on the same z maps and sign flips, and prints the ratio.

    python scripts/bench_connectome.py            # 2 mm MNI mask, 20 subjects, 50 lesions
    python scripts/bench_connectome.py --large    # 60 subjects, 150 timepoints
    python scripts/bench_connectome.py --voxel-mm 4 --permutations 200 --device cuda
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_processes import cpu_seconds, peak_rss  # noqa: E402

TORCH = "neurotorch (torch float32)"
NUMPY = "numpy float32 BLAS"
READ = "(read + inflate only)"
READ_H5PY = "(read via h5py filters)"


def numpy_network_map(batch_dir: Path, lesion_dir: Path) -> dict:
    """The reference algorithm in numpy: float32 matrix products (BLAS), z maps summed in float64,
    reading subjects with h5py."""
    import h5py
    import nibabel as nib
    from scipy import special

    files = sorted(batch_dir.glob("*_chunk_*.h5"))
    with h5py.File(files[0]) as f:
        indices = np.asarray(f["mask_indices"])
    masks = np.stack(
        [
            np.asarray(nib.load(p).dataobj)[tuple(indices.T)] > 0
            for p in sorted(lesion_dir.glob("*.nii.gz"))
        ]
    )
    used = np.flatnonzero(masks.any(axis=0))
    weights = (masks[:, used].T / masks.sum(axis=1)).astype(np.float32)
    total = total_sq = None
    n = 0
    for path in files:
        with h5py.File(path) as f:
            series = f["timeseries"]
            for row in range(series.shape[0]):
                x = series[row].astype(np.float32)
                x -= x.mean(axis=0)
                seeds = x[:, used] @ weights
                seeds -= seeds.mean(axis=0)
                cov = seeds.T @ x
                norms = np.sqrt((seeds * seeds).sum(axis=0))[:, None] * np.sqrt((x * x).sum(axis=0))
                r = np.clip(cov / norms, -1 + 2.0**-24, 1 - 2.0**-24)
                z = np.arctanh(r).astype(np.float64)
                total = z if total is None else total + z
                total_sq = z * z if total_sq is None else total_sq + z * z
                n += 1
    mean = total / n
    sd = np.sqrt((total_sq - n * mean * mean) / (n - 1))
    t = mean / (sd / np.sqrt(n))
    p = 2 * special.stdtr(n - 1, -np.abs(t))
    order = np.argsort(p, axis=1)
    ranked = np.take_along_axis(p, order, axis=1) * p.shape[1] / np.arange(1, p.shape[1] + 1)
    q_sorted = np.minimum(np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1], 1)
    q = np.empty_like(q_sorted)
    np.put_along_axis(q, order, q_sorted, axis=1)
    return {"t": t, "q": q, "n_lesions": len(masks)}


def torch_network_map(batch_dir: Path, lesion_dir: Path) -> dict:
    from neurotorch.connectome import network_map

    result = network_map(lesion_dir, batch_dir)
    return {"t": result.t, "q": result.q, "n_lesions": len(result.names)}


def read_only(batch_dir: Path, lesion_dir: Path) -> dict:
    """Only read and inflate every subject: the I/O floor both implementations share."""
    from neurotorch.connectome import ConnectomeBatches

    for _ in ConnectomeBatches(batch_dir).iter_subjects(reuse_buffers=True):
        pass
    return {}


def read_through_h5py(batch_dir: Path, lesion_dir: Path) -> dict:
    """Read every subject through h5py's filter pipeline (deflate and Fletcher-32 in HDF5)."""
    import h5py

    buffer = None
    for path in sorted(batch_dir.glob("*_chunk_*.h5")):
        with h5py.File(path) as f:
            series = f["timeseries"]
            if buffer is None:
                buffer = np.empty((1,) + series.shape[1:], dtype=np.float32)
            for row in range(series.shape[0]):
                series.read_direct(buffer, np.s_[row : row + 1])
    return {}


def numpy_permutation_max_t(z: np.ndarray, signs: np.ndarray, width: int = 2**14) -> np.ndarray:
    """The sign-flip max-|t| null in numpy float64, voxels in blocks (same algorithm as torch)."""
    n_subjects, n_maps, n_voxels = z.shape
    null = np.zeros((len(signs), n_maps))
    for k in range(n_maps):
        for start in range(0, n_voxels, width):
            block = z[:, k, start : start + width].astype(np.float64)
            mean = signs @ block / n_subjects
            squared = np.maximum((block * block).sum(axis=0) - n_subjects * mean * mean, 0)
            standard_error = np.sqrt(squared / (n_subjects * (n_subjects - 1)))
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.abs(mean / standard_error)
            null[:, k] = np.maximum(null[:, k], np.nanmax(t, axis=1))
    return null


def compare_permutations(n_voxels: int, n_permutations: int, device: str) -> None:
    """Time the permutation null in torch (on ``device``) and in numpy on the same inputs."""
    import torch

    from neurotorch.connectome.permutation import permutation_max_t, sign_flips

    n_subjects, n_maps = 20, 4
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((n_subjects, n_maps, n_voxels)) * 0.3 + 0.05).astype(np.float32)
    signs = sign_flips(n_permutations, n_subjects, seed=0)
    permutation_max_t(z[:, :1, :1000], signs, device)  # warm-up (CUDA context, kernels)
    start = time.perf_counter()
    fast = permutation_max_t(z, signs, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    base = numpy_permutation_max_t(z, signs.numpy())
    base_s = time.perf_counter() - start
    print(
        f"\nsign-flip max-|t|: {n_permutations} permutations x {n_subjects} subjects x {n_maps} "
        f"maps x {n_voxels} voxels (float64)"
    )
    print(f"{'implementation':<28}{'wall s':>8}{'speed-up':>10}")
    print(f"{'torch on ' + device:<28}{fast_s:>8.2f}{base_s / fast_s:>9.1f}x")
    print(f"{'numpy':<28}{base_s:>8.2f}{1.0:>9.1f}x")
    difference = np.max(np.abs(fast - base) / base)
    print(f"ratio numpy / torch: {base_s / fast_s:.2f}; max relative difference {difference:.1e}")


def _child(name: str, batch_dir: Path, lesion_dir: Path, out: mp.Queue) -> None:
    os.environ["NEUROTORCH_PROGRESS"] = "0"
    import h5py  # noqa: F401 - imports are not part of the timing
    import nibabel  # noqa: F401
    import scipy.special  # noqa: F401

    if name != NUMPY:
        import neurotorch.connectome  # noqa: F401
    func = {
        TORCH: torch_network_map,
        NUMPY: numpy_network_map,
        READ: read_only,
        READ_H5PY: read_through_h5py,
    }

    start, start_cpu = time.perf_counter(), cpu_seconds()
    result = func[name](batch_dir, lesion_dir)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    out.put((name, seconds, cpu, peak_rss() / 2**20, result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="60 subjects x 150 timepoints")
    parser.add_argument("--data", type=Path, help="reuse/keep the synthetic connectome here")
    parser.add_argument("--voxel-mm", type=int, default=2, help="grid spacing (2, 4, 8)")
    parser.add_argument("--permutations", type=int, default=100, help="sign flips timed")
    parser.add_argument("--device", default="cpu", help="torch device of the permutations")
    parser.add_argument("--repeat", type=int, default=2, help="alternated rounds (best kept)")
    args = parser.parse_args()

    from neurotorch.synthetic.connectome import BATCH_DIR, LESION_DIR, make_connectome

    n_subjects, n_timepoints = (60, 150) if args.large else (20, 100)
    tmp = tempfile.TemporaryDirectory() if args.data is None else None
    root = Path(tmp.name) / "connectome" if tmp else args.data
    start = time.perf_counter()
    make_connectome(
        root,
        n_subjects=n_subjects,
        n_timepoints=n_timepoints,
        voxel_mm=args.voxel_mm,
        n_networks=2,
        lesions_per_network=25,
        subjects_per_chunk=5,
    )
    from neurotorch.connectome import ConnectomeBatches

    batches = ConnectomeBatches(root / BATCH_DIR)
    print(f"{batches} ready in {time.perf_counter() - start:.1f} s")
    ctx = mp.get_context("spawn")
    rows: dict[str, tuple] = {}
    names = [TORCH, NUMPY, READ, READ_H5PY]
    for round_ in range(args.repeat):  # alternated: A B C D, then D C B A
        for name in names if round_ % 2 == 0 else names[::-1]:
            queue = ctx.Queue()
            child_args = (name, root / BATCH_DIR, root / LESION_DIR, queue)
            proc = ctx.Process(target=_child, args=child_args)
            proc.start()
            row = queue.get()
            proc.join()
            if name not in rows or row[1] < rows[name][1]:
                rows[name] = row
    fast, base = rows[TORCH], rows[NUMPY]
    n_lesions = fast[-1]["n_lesions"]
    subject_mb = batches.n_timepoints * batches.n_voxels * 4 / 1e6
    print(
        f"\n{n_lesions} lesions, {batches.n_subjects} subjects x {batches.n_timepoints} timepoints x "
        f"{batches.n_voxels} voxels ({subject_mb:.0f} MB per subject in float32); "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} after the runs\n"
    )
    print(
        f"{'implementation':<28}{'wall s':>8}{'lesions/s':>11}{'speed-up':>10}"
        f"{'CPU s':>8}{'CPU speed-up':>14}{'peak RSS MB':>13}"
    )
    for name, seconds, cpu, peak_mb, _ in (fast, base):
        print(
            f"{name:<28}{seconds:>8.2f}{n_lesions / seconds:>11.2f}{base[1] / seconds:>9.1f}x"
            f"{cpu:>8.2f}{base[2] / cpu:>13.1f}x{peak_mb:>13.0f}"
        )
    for name in (READ, READ_H5PY):
        _, seconds, cpu, peak_mb, _ = rows[name]
        print(f"{name:<28}{seconds:>8.2f}{'':>21}{cpu:>8.2f}{'':>14}{peak_mb:>13.0f}")
    fast_t, base_t = fast[-1]["t"], base[-1]["t"]
    t_diff = np.nanmax(np.abs(fast_t - base_t) / np.maximum(1, np.abs(base_t)))
    q_diff = np.nanmax(np.abs(fast[-1]["q"] - base[-1]["q"]))
    print(f"\nagreement: max relative |t| difference {t_diff:.1e}, max |q| difference {q_diff:.1e}")
    compare_permutations(batches.n_voxels, args.permutations, args.device)
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
