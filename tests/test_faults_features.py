"""Fault injection of feature extraction: specs and options that cannot work, layers and poolings
that do not fit the model, damaged or missing stimulus files, a cache inside the dataset, a full
disk while a chunk is written, weights that cannot be downloaded.

Each case calls what a user would call and records how it failed (`tests/faults/framework.py`):
a named error of the expected class whose message names the file, key or value at fault.
"""

from __future__ import annotations

import errno
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from faults.framework import IMAGES, METADATA, Fault, run_fault, tmp_case, tree_case
from feature_models import (
    TinyNet,
    one_thread,  # noqa: F401 - a fixture
)

from neurotorch.errors import (
    CacheError,
    CorruptFileError,
    FormatError,
    NameNotFoundError,
    ParameterError,
    StimuliNotDownloadedError,
    UnitsFailedError,
    WeightsNotAvailableError,
)
from neurotorch.features import ExtractionOptions, FeatureSpec, ImageTransform, load_features

TINY = ImageTransform(resize=32, crop=32)


def _options(root: Path, **more) -> ExtractionOptions:
    return ExtractionOptions(chunk_size=64, cache_dir=root.parent / "cache", **more)


def _load(root: Path, spec: FeatureSpec | None = None, **options):
    spec = spec or FeatureSpec(TinyNet(), layer="block", transform=TINY)
    return lambda: load_features(spec, root, options=_options(root, **options))


def spec_case(case: str, culprit: str, **fields) -> Fault:
    """A spec that is refused when it is made."""
    fields = {"model": TinyNet(), "transform": TINY, **fields}
    return tmp_case(case, ParameterError, lambda tmp: ((lambda: FeatureSpec(**fields)), culprit))


def options_case(case: str, culprit: str, **fields) -> Fault:
    return tmp_case(
        case, ParameterError, lambda tmp: ((lambda: ExtractionOptions(**fields)), culprit)
    )


def spec_on_tree(name: str, error, culprit: str, spec_fields: dict, **options) -> Fault:
    """A spec that is accepted but does not fit the model or the data."""
    fields = {"model": TinyNet(), "transform": TINY, **spec_fields}
    return tree_case(
        name,
        error,
        lambda root: None,
        lambda root: _load(root, FeatureSpec(**fields), **options)(),
        culprit,
    )


class TwiceNet(torch.nn.Module):
    """Runs its ``act`` twice in one forward pass (a shared module)."""

    def __init__(self):
        super().__init__()
        self.stem, self.act = torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU()

    def forward(self, x):
        return self.act(self.stem(self.act(x)))


class NoTensor(torch.nn.Module):
    def forward(self, x):
        return {}


def _damage_image(row: int):
    def damage(root: Path) -> str:
        with h5py.File(root / IMAGES, "r+") as f:
            f["images"][row] = np.frombuffer(b"not an image at all", dtype=np.uint8)
        return pd.read_csv(root / METADATA)["image_name"][row]

    return damage


def _drop_last_image(root: Path) -> str:
    with h5py.File(root / IMAGES, "r") as f:
        blobs = list(f["images"][:-1])
    with h5py.File(root / IMAGES, "w") as f:
        data = f.create_dataset("images", shape=(len(blobs),), dtype=h5py.vlen_dtype(np.uint8))
        for i, blob in enumerate(blobs):
            data[i] = blob
    return Path(IMAGES).name


def _full_disk(root: Path):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def call():
        with mock.patch("neurotorch.features.cache.write_bytes", no_space):
            _load(root)()

    return call


def _offline(tmp: Path):
    import huggingface_hub.constants as hub

    def call():
        with (
            mock.patch.object(hub, "HF_HUB_OFFLINE", True),
            mock.patch.object(hub, "HF_HUB_CACHE", str(tmp / "hf")),
        ):
            from neurotorch.features.sources import load_model

            load_model(FeatureSpec("microsoft/resnet-18", layer="encoder.stages.1"))

    return call, "'microsoft/resnet-18'"


FAULTS: list[Fault] = [
    # -- specs and options, refused when made ---------------------------------------------------
    spec_case("unknown pooling", "'average'", pooling="average"),
    spec_case("projection without k", "k=", pooling="random_projection"),
    spec_case("k with a pooling that takes none", "k=3", pooling="avg", k=3),
    spec_case("k of zero", "k must be at least 1", pooling="pca", k=0),
    spec_case("k not an integer", "2.5", pooling="pca", k=2.5),
    spec_case("name that is not a batch key", "'my layer'", name="my layer"),
    spec_case("module without a transform", "transform=", transform=None),
    spec_case("weights for a module", "weights='DEFAULT'", weights="DEFAULT"),
    spec_case("a name with source module", "source='module'", model="resnet18", source="module"),
    spec_case("unknown source", "'keras'", model="resnet18", source="keras"),
    spec_case("transform that is not callable", "transform must be", transform=5),
    spec_case(
        "crop larger than the resize", "transform.crop", transform={"resize": 32, "crop": 40}
    ),
    spec_case("negative seed", "seed", seed=-1),
    options_case("chunk size of zero", "chunk_size", chunk_size=0),
    options_case("batch size not an integer", "batch_size", batch_size=8.0),
    options_case("rank without world size", "rank=", rank=0),
    options_case("rank outside the world", "rank must be at most 1", rank=2, world_size=2),
    options_case("unknown device", "device='gpu0'", device="gpu0"),
    tmp_case(
        "two specs of one name",
        ParameterError,
        lambda tmp: (
            lambda: load_features(
                [
                    FeatureSpec(TinyNet(), layer=layer, name="same", transform=TINY)
                    for layer in ("stem", "block")
                ],
                tmp,
            ),
            "['same']",
        ),
    ),
    tmp_case(
        "transformers config without model_type",
        ParameterError,
        lambda tmp: (
            lambda: __import__("neurotorch.features.sources", fromlist=["load_model"]).load_model(
                FeatureSpec("x", weights="random", config={"depths": [1]}, transform=TINY)
            ),
            "model_type",
        ),
    ),
    tmp_case("weights that cannot be downloaded", WeightsNotAvailableError, _offline),
    # -- specs that do not fit the model ----------------------------------------------------------
    spec_on_tree("unknown layer", ParameterError, "layer='blok'", {"layer": "blok"}),
    spec_on_tree(
        "cls of a convolution map", ParameterError, "'block'", {"layer": "block", "pooling": "cls"}
    ),
    spec_on_tree(
        "pca with more components than images",
        ParameterError,
        "k=200",
        {"layer": "block", "pooling": "pca", "k": 200},
    ),
    spec_on_tree(
        "a layer that runs twice", ParameterError, "'act'", {"model": TwiceNet(), "layer": "act"}
    ),
    spec_on_tree(
        "a model whose output is no tensor",
        ParameterError,
        "(the model output)",
        {"model": NoTensor(), "layer": ""},
    ),
    spec_on_tree(
        "a transform that returns no tensor",
        ParameterError,
        "<lambda>",
        {"transform": lambda image: image},
    ),
    # -- the stimulus set and the cache ---------------------------------------------------------
    tree_case(
        "unknown image name",
        NameNotFoundError,
        lambda root: None,
        lambda root: load_features(
            FeatureSpec(TinyNet(), layer="block", transform=TINY),
            root,
            images=["no_such_image.jpg"],
            options=_options(root),
        ),
        "no_such_image.jpg",
    ),
    tree_case(
        "stimulus images not downloaded",
        StimuliNotDownloadedError,
        lambda root: (root / IMAGES).unlink(),
        lambda root: _load(root)(),
        Path(IMAGES).name,
    ),
    tree_case(
        "undecodable image in the first chunk",
        CorruptFileError,
        _damage_image(5),
        lambda root: _load(root)(),
    ),
    tree_case(  # later chunks are units of work: their errors come together, each named
        "undecodable image in a later chunk",
        UnitsFailedError,
        _damage_image(70),
        lambda root: _load(root)(),
    ),
    tree_case(
        "images and metadata of different lengths",
        FormatError,
        _drop_last_image,
        lambda root: _load(root)(),
    ),
    tree_case(
        "cache inside the dataset folder",
        ParameterError,
        lambda root: None,
        lambda root: load_features(
            FeatureSpec(TinyNet(), layer="block", transform=TINY),
            root,
            options=ExtractionOptions(cache_dir=root / "derivatives" / "cache"),
        ),
        "lies inside the dataset folder",
    ),
    tree_case(
        "disk full while a chunk is written",
        CacheError,
        lambda root: None,
        lambda root: _full_disk(root)(),
        "chunk-00000.npy",
    ),
]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fault: Fault, tiny_laion_root: Path, tmp_path: Path, record_property) -> None:
    run_fault(fault, tiny_laion_root, tmp_path, record_property)
