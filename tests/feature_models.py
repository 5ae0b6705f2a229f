"""Models and independent computations shared by the feature-extraction tests.

`TinyNet` is a small seeded CNN with a token layer (for the ``cls`` pooling). Two environment
variables let a test watch it from outside, without changing its weights or architecture (so its
cache key stays the same): ``NEUROTORCH_TEST_FEATURE_LOG`` names a file to which every forward
pass appends one line per image (``pid crc32-of-the-input``), and ``NEUROTORCH_TEST_KILL_AFTER=N``
SIGKILLs the process at its N-th forward pass.
"""

from __future__ import annotations

import io
import os
import signal
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_forward_calls = {"n": 0}


class ToTokens(torch.nn.Module):
    """``(N, C, H, W)`` → ``(N, 1 + H*W, C)``: a learned class token before the positions."""

    def __init__(self, channels: int):
        super().__init__()
        self.cls = torch.nn.Parameter(torch.randn(1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)


class TinyNet(torch.nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU()
        )
        self.block = torch.nn.Sequential(
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU()
        )
        self.tokens = ToTokens(16)
        self.head = torch.nn.Linear(16, 4)
        torch.random.set_rng_state(generator_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _watch(x)
        return self.head(self.tokens(self.block(self.stem(x))).mean(dim=1))


def _watch(x: torch.Tensor) -> None:
    log = os.environ.get("NEUROTORCH_TEST_FEATURE_LOG")
    if log:
        lines = "".join(
            f"{os.getpid()} {zlib.crc32(image.numpy().tobytes()):08x}\n" for image in x.cpu()
        )
        with open(log, "a") as handle:
            handle.write(lines)
    _forward_calls["n"] += 1
    kill_after = os.environ.get("NEUROTORCH_TEST_KILL_AFTER")
    if kill_after and _forward_calls["n"] >= int(kill_after):
        os.kill(os.getpid(), signal.SIGKILL)


def logged(path: Path) -> list[tuple[int, str]]:
    """``(pid, image crc)`` lines of a feature log."""
    if not path.exists():
        return []
    return [
        (int(pid), crc)
        for pid, crc in (line.split() for line in path.read_text().split("\n") if line)
    ]


@pytest.fixture
def one_thread():
    """Torch on one thread: tiny convolutions on a busy two-core machine are far faster so."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- independent computations --------------------------------------------------------------------


def stimulus_images(root: Path) -> tuple[list[str], list[Image.Image]]:
    """Image names (metadata order) and the decoded images, read with pandas, h5py and PIL."""
    names = pd.read_csv(root / "stimuli" / "task-images_metadata.csv")["image_name"].tolist()
    with h5py.File(root / "stimuli" / "task-images_stimuli.h5", "r") as f:
        raw = [bytes(blob) for blob in f["images"][:]]
    return names, [Image.open(io.BytesIO(blob)).convert("RGB") for blob in raw]


def normalised(image: Image.Image) -> torch.Tensor:
    """The image at its own size, scaled to [0, 1] and normalised with ImageNet's statistics."""
    pixels = (np.asarray(image, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def direct_outputs(model: torch.nn.Module, batch: torch.Tensor, layers: list[str]) -> dict:
    """Each named module's output (``""``: the model's) for one forward pass, by hand."""
    found = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: found.__setitem__(name, out)
        )
        for name in layers
        if name
    ]
    with torch.no_grad():
        found[""] = model.eval()(batch)
    for handle in handles:
        handle.remove()
    return found


def extract_as_rank(rank: int, world_size: int, root: str, cache: str, log: str, store: str):
    """One DDP rank (gloo) extracting TinyNet's ``block`` layer; its forward passes logged to
    ``<log>.<rank>``. Started by ``torch.multiprocessing.spawn``."""
    from neurotorch.features import ExtractionOptions, FeatureSpec, ImageTransform, extract_features

    os.environ["NEUROTORCH_TEST_FEATURE_LOG"] = f"{log}.{rank}"
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size
    )
    try:
        spec = FeatureSpec(TinyNet(), layer="block", transform=ImageTransform(resize=32, crop=32))
        options = ExtractionOptions(chunk_size=16, batch_size=8, cache_dir=cache)
        extract_features(spec, root, options=options)
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


#: A ResNet small enough for tests (transformers' ResNetConfig fields), seeded random weights.
RESNET = {
    "model_type": "resnet",
    "embedding_size": 8,
    "hidden_sizes": [8, 16, 32, 64],
    "depths": [1, 1, 1, 1],
    "layer_type": "basic",
}


# -- the ResNet-18 of the encoder_features config, on the tiny tree --------------------------------

#: microsoft/resnet-18's architecture (its config.json), for seeded random weights offline.
RESNET18 = {
    "model_type": "resnet",
    "embedding_size": 64,
    "hidden_sizes": [64, 128, 256, 512],
    "depths": [2, 2, 2, 2],
    "layer_type": "basic",
}
RESNET18_LAYERS = {f"resnet18_layer{stage + 1}": stage for stage in (1, 2, 3)}


def resnet18_feature_specs(px: int = 32) -> list[dict]:
    """The config's ResNet-18 spaces with seeded random weights and ``px``-pixel images (no
    download), as the YAML dicts of ``features``."""
    return [
        {
            "model": "microsoft/resnet-18",
            "weights": "random",
            "config": RESNET18,
            "transform": {"resize": px, "crop": px},
            "layer": f"encoder.stages.{stage}",
            "name": name,
        }
        for name, stage in RESNET18_LAYERS.items()
    ]


def resnet18_features(root: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The ResNet-18 spaces of ``names`` by hand: transformers' model with the documented random
    weights (torch seeded with 0, then the library's constructor), each 32 px image normalised,
    each stage's output averaged over positions."""
    import transformers

    options = {k: v for k, v in RESNET18.items() if k != "model_type"}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = transformers.AutoConfig.for_model("resnet", **options)
        model = transformers.AutoModel.from_config(config).eval()
    all_names, images = stimulus_images(root)
    position = {name: k for k, name in enumerate(all_names)}
    batch = torch.stack([normalised(images[position[name]]) for name in names])
    with torch.no_grad():
        hidden = model(pixel_values=batch, output_hidden_states=True).hidden_states
    return {
        name: hidden[stage + 1].mean(dim=(2, 3)).double().numpy()
        for name, stage in RESNET18_LAYERS.items()
    }
