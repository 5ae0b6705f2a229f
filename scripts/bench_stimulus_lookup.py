"""Benchmark: embedding rows for one session's trials (many names, repeats, random order).

Writes an embedding file with the real shape (25,052 × 1024 float16, ``image_ids``, ``valid``) to
a temporary folder, then times, on the same file in one process:

* baseline — one HDF5 read per trial (``dataset[row]`` in a loop), as a per-name lookup does;
* the hub — ``Stimuli.embeddings.get(model, names)``: one sorted read, restored to trial order.

Run ``python scripts/bench_stimulus_lookup.py`` (a few seconds); ``--trials`` and ``--repeats``
change the workload.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from neurotorch.fmri import layout
from neurotorch.fmri.stimuli import Stimuli

N_IMAGES = 25_052


def write_fixture(root: Path, dim: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    names = [f"shared_12rep_LAION_cluster_{i}_i0.jpg" for i in range(N_IMAGES)]
    (root / layout.STIMULI_DIR).mkdir(parents=True)
    pd.DataFrame(
        {
            "image_name": names,
            "dataset": "LAION",
            "participant": "",
            "unique_or_shared": "shared",
            "n_reps": 12,
        }
    ).to_csv(root / layout.stimuli_metadata(), index=False)
    with h5py.File(root / layout.embeddings("CLIP"), "w") as f:
        f["embedding"] = rng.standard_normal((N_IMAGES, dim)).astype(np.float16)
        f.create_dataset("image_ids", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        f["valid"] = np.ones(N_IMAGES, dtype=bool)
    return names


def best_of(repeats: int, run) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="names per lookup (one session)")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        names = write_fixture(root, layout.EMBEDDING_MODELS["CLIP"], seed=0)
        rng = np.random.default_rng(1)
        trials = list(rng.choice(names, size=args.trials, replace=True))
        row_of = {name: row for row, name in enumerate(names)}

        def baseline() -> np.ndarray:
            with h5py.File(root / layout.embeddings("CLIP"), "r") as f:
                data = f["embedding"]
                return np.stack([data[row_of[n]] for n in trials])

        hub = Stimuli(root)
        hub.embeddings.get("CLIP", trials[:1])  # open the file and index image_ids once

        base_s, expected = best_of(args.repeats, baseline)
        hub_s, got = best_of(args.repeats, lambda: hub.embeddings.get("CLIP", trials))
        assert np.array_equal(got, expected)

    print(
        f"{args.trials} trial names, {N_IMAGES} × 1024 float16 embeddings, best of {args.repeats}"
    )
    print(f"{'method':<34}{'seconds':>10}{'speed-up':>10}")
    print(f"{'baseline: one read per name':<34}{base_s:>10.4f}{1.0:>10.1f}")
    print(f"{'Stimuli.embeddings.get(names)':<34}{hub_s:>10.4f}{base_s / hub_s:>10.1f}")


if __name__ == "__main__":
    main()
