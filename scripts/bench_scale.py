"""One command at LAION-fMRI's real geometry: stream, prepare, first batch and map-style reads
against their anchors, measured in the same run, with the peak memory of every row.

The data are one synthetic session of the ``real`` preset (143×143×143 at 1.8 mm, 1,050 trials,
brain ≈ 20 % of the box, ≈ 12.3 GB of float32 betas, ≈ 2.3 GB gzipped), written once by
``neurotorch synth laion-fmri --size real`` in a measured child process (its peak RSS and time
are kept beside the dataset, in ``<root>.write.json``) and reused. Rows, whole brain, float32:

=================================  ============================================  =============
row                                anchor                                         target
=================================  ============================================  =============
write one session (synth)          the session held in memory (12.3 GB)           peak RSS ≤ 1 GB
stream, 0 workers                  isal inflate limit (1 core, no NIfTI work)     (reported)
stream, 2 workers                  isal inflate limit; stream with 0 workers      ≥ 1.3×; ≥ 1×
seek point on, 1 core (200 vol.)   rapidgzip on 1 thread; the limit per volume    (reported)
laion_fmri-style reader            (anchor: ``gzip.open``, per-volume reads)
nibabel full load, then mask       (anchor: laion_fmri's default)
prepare (store build)              isal inflate limit; the store's size           peak RSS ≤ 1 GB
first batch, first use (2 workers) one full inflate (the limit's time)            ≤ 1.2×
first batch, once seen (2 workers) one full inflate                               ≤ 0.1×
map-style batches of 64            raw memmap rows in the order asked for         ≥ 0.8×
encoder (whole brain)              ``scripts/bench_encoder.py --scale`` (``--encoder``)
=================================  ============================================  =============

Every measurement runs in a fresh child process (peak RSS: the child's own ``VmHWM``; DataLoader
workers: the largest worker's), and the rows alternate within each round (A B …, then … B A), so
a machine slowing down under other jobs hits every row alike; ratios are best against best, with
the range of the per-round ratios. Streams deliver whole-brain batches of 64 items (147 MB) to the
main process; nothing reads them there.

    python scripts/bench_scale.py --root /data/real       # writes the session first if absent
    python scripts/bench_scale.py --root /data/real --repeat 5 --no-nibabel
    python scripts/bench_scale.py --root /data/real --encoder   # + the whole-brain encoder (~1 h)

``--against CHECKOUT`` also runs the stream and first-batch rows with the ``neurotorch`` of
another checkout (a folder holding an older version of the package, put first on ``PYTHONPATH``),
alternating with this one's in the same rounds, and prints this code's speed-up over it: how a
change is measured against the code before it (``git worktree add ../before HEAD~1``)::

    python scripts/bench_scale.py --root /data/real --repeat 3 --against ../before
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from bench_processes import (  # noqa: E402
    best,
    cpu_seconds,
    interleaved,
    peak_rss,
    peak_rss_of_children,
    run_child,
)

SUBJECT, SESSION, BATCH = "sub-01", "ses-01", 64
MAP_BATCHES = 40
GB = 1e9


def _betas(root: Path) -> Path:
    from neurotorch.fmri import layout

    return root / layout.session_betas(SUBJECT, SESSION)


def _brain_mask(root: Path) -> np.ndarray:
    import nibabel as nib

    from neurotorch.fmri import layout

    return np.asarray(nib.load(root / layout.anatomical_brain_mask(SUBJECT)).dataobj) > 0


# -- the rows, each run in a fresh child process ----------------------------------------------------


def row_write(spec: dict) -> dict:
    from neurotorch.synthetic.laion_fmri import make_laion_fmri

    make_laion_fmri(spec["root"], size="real", progress=False)
    return {}


def row_limit(spec: dict) -> dict:
    """isal's fastest inflate on one core: into one 4 MB buffer through the gzip file's buffered
    reader (its own ``readinto`` would copy every byte once more, about 10 % slower)."""
    from isal import igzip

    buffer = bytearray(1 << 22)
    total = 0
    with igzip.open(_betas(Path(spec["root"])), "rb") as stream:
        fill = stream._buffer.readinto
        while n := fill(buffer):
            total += n
    return {"bytes": total}


SEEK_FROM, SEEK_VOLUMES = 538, 200  # where the second of two workers starts, and how far


def row_seek(spec: dict) -> dict:
    """A second worker's inflate: ``SEEK_VOLUMES`` volumes from volume ``SEEK_FROM`` on one
    core, through the saved seek index: isal from the index point (what a one-core reader
    uses), or rapidgzip on one thread (what it used before)."""
    from neurotorch.io.index_points import IndexPoints, PointReader
    from neurotorch.io.nifti import read_nifti_header
    from neurotorch.io.seek_index import build_index

    path = _betas(Path(spec["root"]))
    header = read_nifti_header(path)
    index = build_index(path)
    if spec["inflater"] == "isal":
        reader = PointReader(str(path), IndexPoints(index))
    else:
        import rapidgzip

        reader = rapidgzip.open(str(path), parallelization=1)
        reader.import_index(str(index))
    buffer = bytearray(header.volume_nbytes)
    with reader:
        reader.seek(header.vox_offset + SEEK_FROM * header.volume_nbytes)
        for _ in range(SEEK_VOLUMES):
            if reader.readinto(buffer) != len(buffer):
                raise RuntimeError(f"{path} ended early")
    return {"volumes": SEEK_VOLUMES, "volumes_in_file": header.n_volumes}


def row_reader(spec: dict) -> dict:
    """What laion_fmri's streaming reader does: gzip.open, nibabel's header, per-volume reads,
    reshape, ravel and mask."""
    import nibabel as nib

    flat_mask = _brain_mask(Path(spec["root"])).ravel()
    start = time.perf_counter()
    with gzip.open(_betas(Path(spec["root"])), "rb") as stream:
        header = nib.Nifti1Header.from_fileobj(stream)
        dtype, shape = header.get_data_dtype(), header.get_data_shape()
        stream.read(int(header["vox_offset"]) - stream.tell())
        volume_bytes = int(np.prod(shape[:3])) * dtype.itemsize
        out = np.empty((shape[3], int(flat_mask.sum())), dtype=np.float32)
        for t in range(shape[3]):
            volume = np.frombuffer(stream.read(volume_bytes), dtype=dtype)
            out[t] = volume.reshape(shape[:3], order="F").ravel()[flat_mask]
    return {"seconds": time.perf_counter() - start}


def row_nibabel(spec: dict) -> dict:
    """laion_fmri's default: the whole 4-D image in memory, then the mask."""
    import nibabel as nib

    mask = _brain_mask(Path(spec["root"]))
    start = time.perf_counter()
    data = np.asarray(nib.load(_betas(Path(spec["root"]))).dataobj)
    data[mask].T  # noqa: B018 - the masked trials × voxels array is the result
    return {"seconds": time.perf_counter() - start}


def _stream_loader(root: str, workers: int):
    from neurotorch.data.fmri.stream import BetasStream
    from neurotorch.data.loader import StreamLoader

    stream = BetasStream(root, SUBJECT, trials={"sessions": [SESSION]}, features=None)
    return StreamLoader(stream, batch_size=BATCH, num_workers=workers)


def row_stream(spec: dict) -> dict:
    import neurotorch.data.fmri.stream  # noqa: F401 - imports are not part of the time
    import neurotorch.data.loader  # noqa: F401

    start = time.perf_counter()
    loader = _stream_loader(spec["root"], spec["workers"])
    ready = time.perf_counter()
    items = sum(len(batch["betas"]) for batch in loader)
    end = time.perf_counter()
    return {"seconds": end - ready, "setup": ready - start, "items": items}


def row_first_batch(spec: dict) -> dict:
    """From creating the dataset (modules imported) to the first batch, 2 workers."""
    import neurotorch.data.fmri.stream  # noqa: F401 - imports are not part of the time
    import neurotorch.data.loader  # noqa: F401

    start = time.perf_counter()
    loader = _stream_loader(spec["root"], 2)
    ready = time.perf_counter()
    iterator = iter(loader)
    batch = next(iterator)
    seconds = time.perf_counter() - start
    del iterator  # stops the workers
    return {"seconds": seconds, "setup": ready - start, "items": len(batch["betas"])}


def row_prepare(spec: dict) -> dict:
    from neurotorch.data.fmri.store import build_store

    start = time.perf_counter()
    store = build_store(spec["root"], SUBJECT, [SESSION], cache_dir=spec["cache"], progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "store_bytes": store.session(SESSION).betas_path.stat().st_size}


def row_mapstyle(spec: dict) -> dict:
    """`BetasDataset.__getitems__` and a raw memmap read of the same rows in the same order,
    alternating batch by batch (the store is in the page cache and both mappings have touched
    every page before the clock starts)."""
    import torch

    from neurotorch.data.collate import collate_items
    from neurotorch.data.fmri.betas import BetasDataset

    dataset = BetasDataset(
        spec["root"],
        SUBJECT,
        trials={"sessions": [SESSION]},
        features=None,
        read={"cache_dir": spec["cache"]},
    )
    raw = np.load(dataset.stores[SUBJECT].session(SESSION).betas_path, mmap_mode="r")
    # Into the page cache, and every page into both mappings (a first touch costs a page fault
    # per 4 KB even when the page is cached): the raw array's and the dataset's own.
    float(np.asarray(raw).sum(dtype=np.float64))
    for start in range(0, len(dataset), BATCH):
        dataset.__getitems__(list(range(start, min(start + BATCH, len(dataset)))))
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(dataset), BATCH, replace=False) for _ in range(MAP_BATCHES)]
    ours = theirs = 0.0
    for k, indices in enumerate(batches):
        for run in ("ours", "raw") if k % 2 == 0 else ("raw", "ours"):
            start = time.perf_counter()
            if run == "ours":
                collate_items(dataset.__getitems__(indices.tolist()))["betas"]
                ours += time.perf_counter() - start
            else:
                torch.from_numpy(raw[indices])
                theirs += time.perf_counter() - start
    items = BATCH * MAP_BATCHES
    return {"seconds": ours, "raw_seconds": theirs, "items": items}


ROWS = {
    "write": row_write,
    "limit": row_limit,
    "reader": row_reader,
    "seek": row_seek,
    "nibabel": row_nibabel,
    "stream": row_stream,
    "first-batch": row_first_batch,
    "prepare": row_prepare,
    "map-style": row_mapstyle,
}


def child_main(name: str, spec: dict) -> None:
    """Run one row in this fresh process and print its JSON result."""
    cpu = cpu_seconds()
    start = time.perf_counter()
    result = ROWS[name](spec)
    result.setdefault("seconds", time.perf_counter() - start)
    result["cpu"] = cpu_seconds() - cpu
    result["peak_rss"] = peak_rss()
    result["workers_peak_rss"] = peak_rss_of_children()
    print(json.dumps(result))


# -- the parent -------------------------------------------------------------------------------------


class Runner:
    """Starts rows in fresh children with the right cache (a warm one, or a new empty one)."""

    def __init__(self, root: Path, warm_cache: Path, against: Path | None = None):
        self.root, self.warm_cache, self.against = root, warm_cache, against

    def run(
        self, name: str, *, fresh_cache: bool = False, baseline: bool = False, **options
    ) -> dict:
        """Row ``name`` in a fresh child; ``fresh_cache``: with an empty cache (a first use);
        ``baseline``: with the package of the ``--against`` checkout."""
        cache = self.warm_cache
        if fresh_cache:
            cache = Path(tempfile.mkdtemp(prefix="cache-", dir=self.warm_cache.parent))
        env = dict(os.environ, NEUROTORCH_PROGRESS="0", NEUROTORCH_CACHE=str(cache))
        if baseline:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.against), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        spec = {"root": str(self.root), "cache": str(cache), **options}
        try:
            return run_child(__file__, ["--child", name, "--spec", json.dumps(spec)], env=env)
        finally:
            if fresh_cache:
                shutil.rmtree(cache, ignore_errors=True)

    def runs(self, with_reader: bool) -> dict:
        """The measurements alternated within each round."""
        runs = {
            "limit": lambda: self.run("limit"),
            "stream-0": lambda: self.run("stream", workers=0),
            "stream-2": lambda: self.run("stream", workers=2),
            "seek-isal": lambda: self.run("seek", inflater="isal"),
            "seek-rapidgzip": lambda: self.run("seek", inflater="rapidgzip"),
            "prepare": lambda: self.run("prepare", fresh_cache=True),
            "first-use": lambda: self.run("first-batch", fresh_cache=True),
            "once-seen": lambda: self.run("first-batch"),
            "map-style": lambda: self.run("map-style"),
        }
        if with_reader:
            runs["reader"] = lambda: self.run("reader")
        if self.against is not None:
            runs |= {
                "baseline:stream-0": lambda: self.run("stream", workers=0, baseline=True),
                "baseline:stream-2": lambda: self.run("stream", workers=2, baseline=True),
                "baseline:once-seen": lambda: self.run("first-batch", baseline=True),
            }
        return runs


def write_session(root: Path) -> dict:
    """Write the real session in a measured child; keep the measurement beside it."""
    print(f"writing one real session to {root} (a few minutes) ...", flush=True)
    result = run_child(__file__, ["--child", "write", "--spec", json.dumps({"root": str(root)})])
    record = root.with_name(root.name + ".write.json")
    record.write_text(json.dumps(result))
    return result


def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def ratio_range(anchor: list[dict], row: list[dict], key: str = "seconds") -> str:
    ratios = [a[key] / r[key] for a, r in zip(anchor, row, strict=True)]
    return f"{min(ratios):.2f}–{max(ratios):.2f}"


def report(results: dict, write: dict | None, raw_bytes: int, store_bytes: int) -> list[tuple]:
    """Table rows: (row, seconds, MB/s, anchor, ratio, per-round range, target, met, RSS, workers)."""
    limit = best(results["limit"])["seconds"]
    lines = []

    def mbps(seconds: float) -> str:
        return f"{raw_bytes / seconds / 1e6:.0f}"

    def rss(r: dict, workers: bool = False) -> tuple[str, str]:
        main = f"{r['peak_rss'] / GB:.2f}"
        return main, f"{r['workers_peak_rss'] / GB:.2f}" if workers else "-"

    if write is not None:
        met = write["peak_rss"] <= 1 * GB
        lines.append(
            ("write one session (synth)", f"{write['seconds']:.0f}", "-", "session in memory "
             f"{raw_bytes / GB:.1f} GB", f"{raw_bytes / write['peak_rss']:.0f}× less", "-",
             "RSS ≤ 1 GB", met, *rss(write))
        )  # fmt: skip
    lines.append(
        ("inflate limit (isal, 1 core)", f"{limit:.1f}", mbps(limit), "-", "1.00", "-", "-",
         None, *rss(best(results["limit"])))
    )  # fmt: skip
    for workers in (0, 2):
        r = best(results[f"stream-{workers}"])
        ratio = limit / r["seconds"]
        target, met = ("≥ 1.3×", ratio >= 1.3) if workers else ("-", None)
        lines.append(
            (f"stream, {workers} workers", f"{r['seconds']:.1f}", mbps(r["seconds"]),
             "inflate limit", f"{ratio:.2f}", ratio_range(results["limit"],
             results[f"stream-{workers}"]), target, met, *rss(r, workers > 0))
        )  # fmt: skip
    two, zero = best(results["stream-2"])["seconds"], best(results["stream-0"])["seconds"]
    lines.append(
        ("stream, 2 workers", f"{two:.1f}", mbps(two), "stream, 0 workers", f"{zero / two:.2f}",
         ratio_range(results["stream-0"], results["stream-2"]), "≥ 1×", zero / two >= 1, "", "")
    )  # fmt: skip
    isal, rapid = best(results["seek-isal"]), best(results["seek-rapidgzip"])
    share = isal["volumes"] / isal["volumes_in_file"]  # of the file, for the per-volume limit
    label, seconds = f"seek point on, 1 core ({isal['volumes']} vol.)", isal["seconds"]
    lines.append(
        (label, f"{seconds:.2f}", mbps(seconds / share), "rapidgzip, 1 thread",
         f"{rapid['seconds'] / seconds:.2f}", ratio_range(results["seek-rapidgzip"],
         results["seek-isal"]), "-", None, *rss(isal))
    )  # fmt: skip
    lines.append(
        (label, f"{seconds:.2f}", mbps(seconds / share), "inflate limit",
         f"{limit * share / seconds:.2f}", "-", "-", None, "", "")
    )  # fmt: skip
    if "reader" in results:
        r = best(results["reader"])
        lines.append(
            ("laion_fmri-style reader", f"{r['seconds']:.1f}", mbps(r["seconds"]),
             "inflate limit", f"{limit / r['seconds']:.2f}", ratio_range(results["limit"],
             results["reader"]), "(anchor)", None, *rss(r))
        )  # fmt: skip
        lines.append(
            ("stream, 0 workers", f"{zero:.1f}", mbps(zero), "laion_fmri-style reader",
             f"{r['seconds'] / zero:.2f}", ratio_range(results["reader"], results["stream-0"]),
             "-", None, "", "")
        )  # fmt: skip
    if "nibabel" in results:
        r = best(results["nibabel"])
        lines.append(
            ("nibabel full load, then mask", f"{r['seconds']:.1f}", mbps(r["seconds"]),
             "inflate limit", f"{limit / r['seconds']:.2f}", "-", "(anchor)", None, *rss(r))
        )  # fmt: skip
    r = best(results["prepare"])
    lines.append(
        ("prepare (store build)", f"{r['seconds']:.1f}", mbps(r["seconds"]), "inflate limit",
         f"{limit / r['seconds']:.2f}", ratio_range(results["limit"], results["prepare"]),
         f"RSS ≤ 1 GB (store {store_bytes / GB:.1f} GB)", r["peak_rss"] <= 1 * GB, *rss(r))
    )  # fmt: skip
    for name, label, bound in (
        ("first-use", "first batch, first use", 1.2),
        ("once-seen", "first batch, once seen", 0.1),
    ):
        r = best(results[name])
        share = r["seconds"] / limit
        lines.append(
            (f"{label} (2 workers)", f"{r['seconds']:.1f}", "-", "one full inflate",
             f"{share:.2f} of it", ratio_range(results[name], results["limit"]),
             f"≤ {bound}", share <= bound, *rss(r, True))
        )  # fmt: skip
    for name, label in (
        ("stream-0", "stream, 0 workers"),
        ("stream-2", "stream, 2 workers"),
        ("once-seen", "first batch, once seen"),
    ):
        if f"baseline:{name}" in results:
            r, before = best(results[name]), best(results[f"baseline:{name}"])
            lines.append(
                (label, f"{r['seconds']:.2f}", "-", f"--against ({before['seconds']:.2f} s)",
                 f"{before['seconds'] / r['seconds']:.2f}", ratio_range(
                 results[f"baseline:{name}"], results[name]), "(speed-up)", None,
                 *rss(r, name != "stream-0"))
            )  # fmt: skip
    runs = results["map-style"]
    ours = min(r["seconds"] for r in runs)
    raw = min(r["raw_seconds"] for r in runs)
    per_round = [r["raw_seconds"] / r["seconds"] for r in runs]
    items = runs[0]["items"]
    lines.append(
        (f"map-style, batches of {BATCH}", f"{ours:.2f}", f"{items / ours:.0f} items/s",
         f"raw memmap ({items / raw:.0f} items/s)", f"{raw / ours:.2f}",
         f"{min(per_round):.2f}–{max(per_round):.2f}", "≥ 0.8×", raw / ours >= 0.8,
         *rss(best(runs)))
    )  # fmt: skip
    return lines


def encoder_rows() -> list[tuple]:
    """The encoder engineer's whole-brain rows (``scripts/bench_encoder.py``'s `scale_rows`)."""
    try:
        from bench_encoder import scale_rows
    except ImportError:
        return [
            ("encoder (whole brain)", "-", "-", "scripts/bench_encoder.py --scale", "-", "-",
             "not in this checkout", None, "", "")
        ]  # fmt: skip
    lines = []
    for row in scale_rows():
        seconds = row.get("seconds_total", row.get("seconds"))
        peak = row.get("peak_rss_gb", row.get("peak_gb"))
        lines.append(
            (row["row"], f"{seconds:.0f}", "-", f"{row.get('kb_per_voxel', 0):.1f} KB/voxel",
             "-", "-", "-", None, "-" if peak is None else f"{peak:.2f}", "")
        )  # fmt: skip
    return lines


def print_table(lines: list[tuple]) -> None:
    header = ("row", "seconds", "MB/s", "anchor", "ratio", "per round", "target", "met",
              "peak RSS GB", "workers GB")  # fmt: skip
    cells = [header] + [
        (*line[:7], "-" if line[7] is None else "yes" if line[7] else "NO", *line[8:])
        for line in lines
    ]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def conditions() -> str:
    import rapidgzip

    from neurotorch.io.inflate import default_inflater

    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, "
        f"{available_memory() / GB:.1f} GB available; inflater {default_inflater()}, "
        f"rapidgzip {rapidgzip.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=False, help="the real-size dataset folder")
    parser.add_argument("--cache", type=Path, default=None, help="warm cache folder")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (best of, per row)")
    parser.add_argument("--no-reader", action="store_true", help="skip the gzip.open anchor")
    parser.add_argument("--no-nibabel", action="store_true", help="skip nibabel's full load")
    parser.add_argument("--encoder", action="store_true", help="also the whole-brain encoder")
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="also run the stream and first-batch rows with this checkout's neurotorch",
    )
    parser.add_argument("--child", choices=sorted(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, json.loads(args.spec))
        return 0
    if args.root is None:
        parser.error("--root is required (the folder of the real-size session)")
    if args.against is not None and not (args.against / "neurotorch" / "__init__.py").is_file():
        parser.error(f"--against {args.against}: no neurotorch package in that folder")

    root = args.root.resolve()
    record = root.with_name(root.name + ".write.json")
    write = write_session(root) if not root.exists() else None
    if write is None and record.exists():
        write = json.loads(record.read_text())
    warm = (args.cache or root.with_name(root.name + ".bench-cache")).resolve()
    warm.mkdir(parents=True, exist_ok=True)
    runner = Runner(root, warm, None if args.against is None else args.against.resolve())
    print(f"conditions at start: {conditions()}", flush=True)
    print("warming up: verify and index the session, build the store (once) ...", flush=True)
    runner.run("first-batch")
    runner.run("map-style")

    from neurotorch.io.nifti import read_nifti_header

    header = read_nifti_header(_betas(root))
    raw_bytes = header.vox_offset + header.n_volumes * header.volume_nbytes
    results = interleaved(runner.runs(with_reader=not args.no_reader), args.repeat)
    if not args.no_nibabel:
        needed = raw_bytes * 1.3
        if available_memory() > needed:
            results["nibabel"] = [runner.run("nibabel")]
        else:
            print(f"nibabel full load skipped: it needs ≈ {needed / GB:.0f} GB of memory")
    store_bytes = best(results["prepare"])["store_bytes"]
    lines = report(results, write, raw_bytes, store_bytes)
    if args.encoder:
        lines += encoder_rows()
    print(
        f"\n{_betas(root).name}: {header.shape} float32, {raw_bytes / GB:.1f} GB raw, "
        f"{_betas(root).stat().st_size / GB:.2f} GB gzipped; best of {args.repeat} rounds"
    )
    print(f"conditions at end: {conditions()}\n")
    print_table(lines)
    if write is None:
        print("\n(write one session: not measured; delete the dataset and run again to measure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
