"""Benchmark feature extraction: images/s against a plain loop, and the cache hit against recomputing.

All rows use one model (transformers' ResNet-18 architecture, seeded random weights: the real
weights need a download and do not change the speed), the same preprocessing (resize and centre
crop to ``--px`` pixels, ImageNet normalisation), the same batch size and the same images (the
first ``--images`` of the synthetic ``small`` LAION-fMRI stimulus set, 96 px pictures), on the CPU:

* ``plain loop``: read the encoded bytes with h5py, decode with PIL, preprocess, stack a batch,
  run the model with a forward hook on three stages, average-pool: the loop a user writes;
* ``extract (cold)``: `neurotorch.features.extract_features` of the same three stages into an
  empty cache (images decoded in ``--decode-workers`` DataLoader workers, chunks written
  atomically with their CRC);
* ``load (cache hit)``: `neurotorch.features.load_features` of the same specs from the filled
  cache: the model built and its weights hashed to find the entries (as in a new run; the
  per-process memo of loaded models is cleared first), every chunk read and CRC-checked.

Rows are interleaved (A/B/C, A/B/C, ...) and the median of ``--repeat`` runs is printed with the
ratios. Run:  python scripts/bench_features.py            (about a minute on two busy cores)
              python scripts/bench_features.py --images 438 --px 224 --repeat 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image

from neurotorch.features import (
    ExtractionOptions,
    FeatureSpec,
    ImageTransform,
    extract_features,
    forward,
    load_features,
)
from neurotorch.features.sources import load_model
from neurotorch.fmri.stimuli import load_stimuli
from neurotorch.synthetic.laion_fmri import make_laion_fmri

RESNET18 = {
    "model_type": "resnet",
    "embedding_size": 64,
    "hidden_sizes": [64, 128, 256, 512],
    "depths": [2, 2, 2, 2],
    "layer_type": "basic",
}  # same as microsoft/resnet-18
LAYERS = ["encoder.stages.1", "encoder.stages.2", "encoder.stages.3"]


def specs(px: int) -> list[FeatureSpec]:
    transform = ImageTransform(resize=px, crop=px)
    return [
        FeatureSpec(
            "microsoft/resnet-18",
            layer=layer,
            weights="random",
            config=RESNET18,
            transform=transform,
            name=layer,
        )
        for layer in LAYERS
    ]


def plain_loop(root: Path, n_images: int, px: int, batch_size: int) -> dict[str, np.ndarray]:
    """What a user writes: h5py + PIL + the model, batch by batch, hooks on the stages."""
    model = load_model(specs(px)[0]).module  # the same seeded weights
    transform = ImageTransform(resize=px, crop=px)
    captured = {}
    handles = [
        model.get_submodule(layer).register_forward_hook(
            lambda _m, _i, out, layer=layer: captured.__setitem__(layer, out)
        )
        for layer in LAYERS
    ]
    out = {layer: [] for layer in LAYERS}
    with h5py.File(root / "stimuli" / "task-images_stimuli.h5", "r") as f:
        images = f["images"]
        for start in range(0, n_images, batch_size):
            rows = range(start, min(start + batch_size, n_images))
            batch = torch.stack(
                [
                    transform(Image.open(io.BytesIO(images[row].tobytes())).convert("RGB"))
                    for row in rows
                ]
            )
            with torch.inference_mode():
                model(pixel_values=batch)
            for layer in LAYERS:
                out[layer].append(captured[layer].mean(dim=(2, 3)).numpy())
    for handle in handles:
        handle.remove()
    return {layer: np.concatenate(parts) for layer, parts in out.items()}


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="images of the stimulus set")
    parser.add_argument("--px", type=int, default=112, help="side of the preprocessed image")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--decode-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = make_laion_fmri(size="small")
    names = load_stimuli(root).images.names()[: args.images]
    scratch = Path(tempfile.mkdtemp(prefix="bench-features-"))
    times = {"plain loop": [], "extract (cold)": [], "load (cache hit)": []}
    reference = None
    for k in range(args.repeat):
        options = ExtractionOptions(
            device="cpu",
            batch_size=args.batch_size,
            num_workers=args.decode_workers,
            chunk_size=args.batch_size * 4,
            cache_dir=scratch / f"cache-{k}",
            progress=False,
        )
        seconds, reference = timed(lambda: plain_loop(root, args.images, args.px, args.batch_size))
        times["plain loop"].append(seconds)
        seconds, _ = timed(
            lambda o=options: extract_features(specs(args.px), root, images=names, options=o)
        )
        times["extract (cold)"].append(seconds)
        forward._MODELS.clear()
        seconds, loaded = timed(
            lambda o=options: load_features(specs(args.px), root, images=names, options=o)
        )
        times["load (cache hit)"].append(seconds)
        for layer in LAYERS:  # the same numbers, or the comparison means nothing
            np.testing.assert_allclose(loaded[layer], reference[layer], rtol=1e-4, atol=1e-4)
    median = {row: statistics.median(values) for row, values in times.items()}
    print(
        f"{args.images} images at {args.px} px, batch {args.batch_size}, ResNet-18 stages 2-4, "
        f"CPU, {torch.get_num_threads()} threads, median of {args.repeat}"
    )
    print(f"{'row':20s} {'seconds':>8s} {'images/s':>9s}")
    for row, seconds in median.items():
        print(f"{row:20s} {seconds:8.2f} {args.images / seconds:9.1f}")
    plain, cold, hit = median["plain loop"], median["extract (cold)"], median["load (cache hit)"]
    print(f"extract vs plain loop: {plain / cold:.2f}x the images/s")
    print(f"cache hit vs recomputing: {cold / hit:.1f}x faster")


if __name__ == "__main__":
    main()
