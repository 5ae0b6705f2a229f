"""Benchmark a streaming pass over ``s3://`` against the same pass over the local file.

One session of synthetic betas (``.nii.gz``) and its brain mask are uploaded to an S3-compatible
server started on loopback (``moto_server``), then read in this process, interleaved, best of
``--repeat``:

* ``local``: `neurotorch.io.nifti.read_masked_betas` on the local path (the baseline);
* ``s3``: the same call on ``DataRoot("s3://...").open(...)``: sequential ranged reads of
  `neurotorch.io.storage.STREAM_BLOCK_SIZE` bytes, nothing written to disk;
* ``s3 5MiB``: the same with 5 MiB blocks (fsspec's generic default block size);
* ``s3 prefetch``: the same with fsspec's ``background`` cache, which fetches the next block on a
  thread while the current one is decoded;
* ``s3 raw`` / ``local raw``: the compressed bytes only, read in 32 MiB chunks (transfer ceiling).

Throughput is decompressed megabytes (10⁶ bytes) per second of betas; ``ratio`` is the time of a
path over the time of ``local``. Every path's output is checked equal to the local one.

    python scripts/bench_remote.py                    # small size (~30 s)
    python scripts/bench_remote.py --size bench       # 80×96×80×300 betas (258 MB gzipped)
    python scripts/bench_remote.py --plot remote.png  # also a bar chart
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

SUBJECT, SESSION = "sub-01", "ses-01"
BUCKET = "bench-remote"
RAW_CHUNK = 32 * 2**20
PREFETCH = {"maxblocks": 2}  # fsspec's background cache: fetch block n+1 while n is decoded


class LoopbackS3:
    """``moto_server`` in a subprocess on 127.0.0.1 (dummy credentials)."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        executable = shutil.which("moto_server")
        command = [executable] if executable else [sys.executable, "-m", "moto.server"]
        self.process = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start on {self.endpoint}") from None
                time.sleep(0.1)
        self.options = {"endpoint_url": self.endpoint, "key": "bench", "secret": "bench"}

    def upload(self, files: dict[str, Path]) -> str:
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.options)
        fs.mkdir(BUCKET)
        for relpath, path in files.items():
            fs.put_file(str(path), f"{BUCKET}/{relpath}")
        return f"s3://{BUCKET}"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def interleaved_best_times(
    runs: dict[str, Callable[[], object]], repeat: int
) -> tuple[dict[str, float], dict[str, object]]:
    """Best time of every run over ``repeat`` rounds (each round runs every path once, in turn,
    so a machine slowing down affects all paths alike) and each run's last output."""
    best = dict.fromkeys(runs, float("inf"))
    outputs: dict[str, object] = {}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            outputs[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, outputs


def read_raw(handle) -> int:
    total = 0
    while chunk := handle.read(RAW_CHUNK):
        total += len(chunk)
    return total


def plot(rows: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    decoded = [r for r in rows if r["mbps"] is not None]
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.barh([r["path"] for r in decoded][::-1], [r["mbps"] for r in decoded][::-1], color="#26a")
    ax.set_xlabel("decompressed MB/s (higher is better)")
    ax.set_title("streaming pass over one session of betas")
    fig.tight_layout()
    fig.savefig(target, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", help="synthetic size: tiny, small or bench")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many passes per path")
    parser.add_argument("--plot", type=Path, default=None, help="write a bar chart (PNG) here")
    args = parser.parse_args(argv)

    import nibabel as nib

    from neurotorch.fmri import layout
    from neurotorch.io.nifti import read_masked_betas
    from neurotorch.io.storage import DataRoot
    from neurotorch.synthetic.laion_fmri import make_laion_fmri

    os.environ.setdefault("NEUROTORCH_PROGRESS", "0")
    root = make_laion_fmri(size=args.size)
    betas_rel = layout.session_betas(SUBJECT, SESSION)
    betas = root / betas_rel
    mask = np.asarray(nib.load(root / layout.anatomical_brain_mask(SUBJECT)).dataobj) > 0
    header = nib.load(betas).header
    decompressed_mb = int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize / 1e6
    compressed_mb = betas.stat().st_size / 1e6

    server = LoopbackS3()
    try:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["NEUROTORCH_CACHE"] = cache  # proves nothing lands in the cache
            url = server.upload({betas_rel: betas})
            remote = DataRoot(url, server.options)

            def s3_pass(**open_options: object) -> Callable[[], np.ndarray]:
                def run() -> np.ndarray:
                    with remote.open(betas_rel, **open_options) as handle:
                        return read_masked_betas(handle, mask)

                return run

            def local_raw() -> int:
                with open(betas, "rb") as handle:
                    return read_raw(handle)

            def s3_raw() -> int:
                with remote.open(betas_rel) as handle:
                    return read_raw(handle)

            paths: dict[str, tuple[Callable[[], object], bool]] = {
                "local": (lambda: read_masked_betas(betas, mask), True),
                "s3": (s3_pass(), True),
                "s3 5MiB": (s3_pass(block_size=5 * 2**20), True),
                "s3 prefetch": (s3_pass(cache_type="background", cache_options=PREFETCH), True),
                "local raw": (local_raw, False),
                "s3 raw": (s3_raw, False),
            }
            timings, outputs = interleaved_best_times(
                {name: run for name, (run, _) in paths.items()}, args.repeat
            )
            for name, (_, decodes) in paths.items():
                if decodes and not np.array_equal(outputs[name], outputs["local"]):
                    raise AssertionError(f"{name} read different betas than the local file")
                if not decodes and outputs[name] != betas.stat().st_size:
                    raise AssertionError(f"{name} read {outputs[name]} bytes, not the whole file")
            cached = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
    finally:
        server.stop()

    rows = [
        {
            "path": name,
            "seconds": seconds,
            "mbps": decompressed_mb / seconds if decodes else None,
            "ratio": seconds / timings["local"],
        }
        for (name, (_, decodes)), seconds in zip(paths.items(), timings.values(), strict=True)
    ]
    print(
        f"betas {betas_rel}: {header.get_data_shape()}, {compressed_mb:.0f} MB gzipped, "
        f"{decompressed_mb:.0f} MB decompressed; best of {args.repeat}; server {server.endpoint}"
    )
    print(f"{'path':<12} {'seconds':>8} {'MB/s':>8} {'ratio':>7}")
    for row in rows:
        mbps = f"{row['mbps']:.0f}" if row["mbps"] is not None else "-"
        print(f"{row['path']:<12} {row['seconds']:>8.3f} {mbps:>8} {row['ratio']:>7.2f}")
    print(f"bytes written to the cache during the s3 passes: {cached}")
    if args.plot:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
