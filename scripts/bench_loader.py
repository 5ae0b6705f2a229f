"""Benchmark the LAION-fMRI data layer: DataLoader samples/s for batches of betas + CLIP embeddings.

All rows run in one process on the same synthetic ``bench`` dataset (one subject, one session,
80×96×80 grid, 300 trials) with the same ROI selection (face ∪ body, ~5,000 voxels):

* prepared map-style `BetasDataset` vs raw memmap slicing of the same rows (the limit) and vs a
  dataset built the way laion_fmri's torch dataset works (eager session load, a pandas row lookup
  and a stimulus lookup per item);
* the `BetasStream` vs the streaming reader alone (`neurotorch.io.nifti.iter_volumes`);
* the first epoch from cold ``.nii.gz`` (store build included) vs a warm epoch.

Run:  python scripts/bench_loader.py            (about a minute)
      python scripts/bench_loader.py --seconds 5 --workers 2   (longer, steadier numbers)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from neurotorch.data.collate import collate_items
from neurotorch.data.fmri.betas import BetasDataset
from neurotorch.data.fmri.store import build_store
from neurotorch.data.fmri.stream import BetasStream
from neurotorch.fmri import layout
from neurotorch.fmri.stimuli import load_stimuli
from neurotorch.fmri.subject import load_subject
from neurotorch.fmri.voxel_selection import VoxelSelection
from neurotorch.io.nifti import iter_volumes
from neurotorch.synthetic.laion_fmri import make_laion_fmri

SUBJECT, SESSION, ROI, BATCH = "sub-01", "ses-01", ["face", "body"], 256


class RawMemmap(Dataset):
    """The limit: sorted fancy indexing of the store's memmap plus a preloaded embedding gather."""

    def __init__(self, path: str, embeddings: np.ndarray):
        self.path, self.embeddings, self._betas = path, embeddings, None

    def __len__(self) -> int:
        return len(self.embeddings)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        if self._betas is None:
            self._betas = np.load(self.path, mmap_mode="r")
        rows = np.sort(np.asarray(indices))
        return {
            "betas": torch.from_numpy(self._betas[rows]),
            "embedding": torch.from_numpy(self.embeddings[rows]),
        }


class LaionFMRIStyle(Dataset):
    """The laion_fmri pattern: eager session load, then a pandas row and a stimulus lookup per item."""

    def __init__(self, root, roi):
        subject = load_subject(SUBJECT, root)
        self.betas = subject.get_betas(session=SESSION, roi=roi)
        self.rows = subject.get_trial_info(SESSION).reset_index(drop=True)
        self.stimuli = load_stimuli(root)

    def __len__(self) -> int:
        return len(self.betas)

    def __getitem__(self, index: int) -> dict:
        row = self.rows.iloc[index]
        embedding = self.stimuli.embeddings.get("CLIP", row["label"])
        return {
            "betas": torch.tensor(self.betas[index], dtype=torch.float32),
            "embedding": torch.tensor(embedding, dtype=torch.float32),
            "image_name": row["label"],
            "trial": int(row["beta_index"]),
        }


def samples_per_second(make_epoch: Callable[[], Iterable], seconds: float) -> tuple[float, int]:
    """Run whole epochs until ``seconds`` have passed; return (samples/s, samples)."""
    n, start = 0, time.perf_counter()
    while True:
        for batch in make_epoch():
            n += len(batch["betas"]) if isinstance(batch, dict) else 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed, n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="bench", help="synthetic size preset (default: bench)")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per measurement")
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers for the map-style rows"
    )
    args = parser.parse_args()

    root = make_laion_fmri(size=args.size)
    cache = tempfile.mkdtemp(prefix="bench-store-")
    loader_kw = {
        "batch_size": BATCH,
        "num_workers": args.workers,
        "persistent_workers": args.workers > 0,
    }

    # -- cold first epoch: store build from .nii.gz + one epoch; then a warm epoch ------------------
    start = time.perf_counter()
    voxels, trials = VoxelSelection(roi=ROI), {"sessions": SESSION}
    dataset = BetasDataset(root, SUBJECT, voxels=voxels, trials=trials, read={"cache_dir": cache})
    for _ in DataLoader(dataset, shuffle=True, collate_fn=collate_items, **loader_kw):
        pass
    cold = time.perf_counter() - start
    start = time.perf_counter()
    for _ in DataLoader(dataset, shuffle=True, collate_fn=collate_items, **loader_kw):
        pass
    warm = time.perf_counter() - start
    print(
        f"{len(dataset)} trials x {dataset.n_voxels} voxels ({'+'.join(ROI)}), batch {BATCH}, "
        f"workers {args.workers}, root {root}"
    )

    # -- map-style against its limit and against the laion_fmri pattern -----------------------------
    mapped, _ = samples_per_second(
        lambda: DataLoader(dataset, shuffle=True, collate_fn=collate_items, **loader_kw),
        args.seconds,
    )
    store = build_store(root, SUBJECT, [SESSION], voxels=voxels, cache_dir=cache)
    clip = load_stimuli(root).embeddings.get(
        "CLIP", dataset.items["image_name"].tolist(), dtype=np.float32
    )
    raw = RawMemmap(str(store.session(SESSION).betas_path), clip)
    limit, _ = samples_per_second(
        lambda: DataLoader(raw, shuffle=True, collate_fn=lambda b: b, **loader_kw), args.seconds
    )
    style = LaionFMRIStyle(root, ROI)
    baseline, _ = samples_per_second(
        lambda: DataLoader(style, shuffle=True, **loader_kw), args.seconds
    )

    # -- the stream against the streaming reader alone ----------------------------------------------
    stream = BetasStream(
        root, SUBJECT, voxels=voxels, trials=trials, read={"shuffle_buffer": BATCH}
    )
    streamed, _ = samples_per_second(
        lambda: DataLoader(stream, batch_size=BATCH, collate_fn=collate_items), args.seconds
    )
    source = str(root / layout.session_betas(SUBJECT, SESSION))
    mask = stream.voxel_masks()[SUBJECT]
    reader, _ = samples_per_second(
        lambda: ({"betas": [v]} for v in iter_volumes(source, mask)), args.seconds
    )

    rows = [
        ("prepared map-style BetasDataset", mapped, "raw memmap slicing (limit)", limit, 0.5),
        ("prepared map-style BetasDataset", mapped, "laion_fmri-style dataset", baseline, 20.0),
        ("BetasStream (shuffle buffer 256)", streamed, "streaming reader alone", reader, 0.8),
    ]
    print(
        f"\n{'loader':34s} {'samples/s':>10s}   {'baseline':28s} {'samples/s':>10s} {'ratio':>7s} {'target':>7s}"
    )
    for name, ours, base_name, base, target in rows:
        print(
            f"{name:34s} {ours:10.0f}   {base_name:28s} {base:10.0f} {ours / base:6.2f}x {target:>6.1f}x"
        )
    print(
        f"{'first epoch from cold .nii.gz':34s} {cold:9.2f}s   {'warm epoch':28s} {warm:9.3f}s "
        f"{cold / warm:6.0f}x"
    )


if __name__ == "__main__":
    main()
