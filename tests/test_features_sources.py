"""Models from their libraries: transformers (the one installed here) against its own processor
and model, offline errors that say how to point at local weights, seeded random weights, the
named error of a missing library, and the torchvision glue on a stand-in package."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from feature_models import (
    RESNET,
    one_thread,  # noqa: F401 - a fixture
    stimulus_images,
)

from neurotorch.errors import MissingDependencyError, ParameterError, WeightsNotAvailableError
from neurotorch.features import ExtractionOptions, FeatureSpec, ImageTransform, load_features
from neurotorch.features.sources import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
transformers = pytest.importorskip("transformers")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub: an empty Hugging Face cache, offline mode (no network is reachable anyway; offline,
    the hub client fails at once instead of retrying)."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.fixture
def saved_resnet(tmp_path):
    """A folder as ``save_pretrained`` writes it: a small seeded ResNet and its image processor."""
    torch.manual_seed(0)
    folder = tmp_path / "resnet-tiny"
    transformers.ResNetModel(transformers.ResNetConfig(**RESNET)).save_pretrained(folder)
    transformers.ConvNextImageProcessor(size={"shortest_edge": 40}, crop_pct=0.8).save_pretrained(
        folder
    )
    return folder


def test_a_local_folder_with_its_own_processor_equals_transformers_directly(
    saved_resnet, offline, tiny_laion_root, tmp_path
):
    spec = FeatureSpec(str(saved_resnet), layer="encoder.stages.1")
    options = ExtractionOptions(chunk_size=64, cache_dir=tmp_path / "cache")
    got = load_features(spec, tiny_laion_root, options=options)[spec.name]

    processor = transformers.AutoImageProcessor.from_pretrained(saved_resnet)
    model = transformers.AutoModel.from_pretrained(saved_resnet).eval()
    pixels = processor(images=stimulus_images(tiny_laion_root)[1], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**pixels, output_hidden_states=True).hidden_states[2]  # after stage 1
    np.testing.assert_allclose(got, hidden.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-5)


def test_a_clip_model_gives_its_projected_image_embedding(offline, tiny_laion_root, tmp_path):
    """``layer=""`` of a model run through ``get_image_features`` is the image embedding (the
    vision tower's pooled output through the projection), which transformers 5 returns inside
    a model output rather than as a tensor."""
    torch.manual_seed(0)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
    config = transformers.CLIPConfig(
        projection_dim=16,
        vision_config={**small, "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        text_config={**small, "num_hidden_layers": 1},
    )
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(tmp_path / "clip-tiny")
    transform = ImageTransform(resize=32, crop=32)
    spec = FeatureSpec(str(tmp_path / "clip-tiny"), transform=transform, name="clip")
    options = ExtractionOptions(cache_dir=tmp_path / "cache")
    got = load_features(spec, tiny_laion_root, options=options)["clip"]
    pixels = torch.stack([transform(image) for image in stimulus_images(tiny_laion_root)[1]])
    with torch.no_grad():  # from the parts, not through get_image_features
        pooled = model.vision_model(pixel_values=pixels).pooler_output
        embedding = model.visual_projection(pooled).numpy()
    assert got.shape == embedding.shape == (len(pixels), 16)
    np.testing.assert_allclose(got, embedding, rtol=1e-4, atol=1e-5)


def test_offline_weights_say_which_and_how_to_point_at_a_folder(offline):
    with pytest.raises(WeightsNotAvailableError) as raised:
        load_model(FeatureSpec("microsoft/resnet-18", layer="encoder.stages.1"))
    message = str(raised.value)
    assert "'microsoft/resnet-18'" in message and "model='DIR'" in message
    assert "save_pretrained" in message and "weights='random'" in message
    with pytest.raises(WeightsNotAvailableError, match="config="):
        load_model(FeatureSpec("microsoft/resnet-18", weights="random"))  # no architecture
    with pytest.raises(WeightsNotAvailableError, match="transform="):
        load_model(FeatureSpec("microsoft/resnet-18", weights="random", config=RESNET))


def test_random_weights_are_seeded(offline):
    def identity(seed: int) -> dict:
        spec = FeatureSpec(
            "microsoft/resnet-18",
            weights="random",
            config=RESNET,
            seed=seed,
            transform={"resize": 32, "crop": 32},
        )
        return load_model(spec).identity

    assert identity(0) == identity(0)
    assert identity(0)["weights_sha"] != identity(1)["weights_sha"]
    assert identity(0)["architecture_sha"] == identity(1)["architecture_sha"]


@pytest.mark.parametrize(
    ("source", "extra"),
    [
        ("transformers", "features"),
        ("torchvision", "features-torchvision"),
        ("timm", "features-timm"),
        ("open_clip", "features-open-clip"),
    ],
)
def test_a_missing_library_names_its_extra(source, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, source, None)  # importing it raises ImportError
    spec = FeatureSpec("some-model", source=source, weights="random")
    with pytest.raises(MissingDependencyError, match=rf"neurotorch\[{extra}\]"):
        load_model(spec)


def _fake_torchvision(monkeypatch, *, download_fails: bool) -> types.SimpleNamespace:
    """A stand-in for torchvision's model registry (torchvision cannot be installed beside this
    torch build): ``get_model``/``get_model_weights`` with a weights enum whose DEFAULT alias and
    ``transforms()`` behave as torchvision's do."""
    import enum

    calls = types.SimpleNamespace(weights=[])

    class Weights(enum.Enum):
        IMAGENET1K_V1 = "v1"
        DEFAULT = "v1"  # an alias, as in torchvision

        @property
        def url(self):
            return "https://download.pytorch.org/models/tiny-0123.pth"

        def transforms(self):
            return lambda image: torch.zeros(3, 8, 8)

    def get_model(name, weights=None, **options):
        calls.weights.append(weights)
        if weights is not None and download_fails:
            raise OSError("<urlopen error [Errno -2] Name or service not known>")
        return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1))

    models = types.ModuleType("torchvision.models")
    models.get_model, models.get_model_weights = get_model, lambda name: Weights
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    return calls


def test_torchvision_weights_are_named_as_torchvision_names_them(monkeypatch, tmp_path):
    calls = _fake_torchvision(monkeypatch, download_fails=False)
    loaded = load_model(FeatureSpec("tiny", source="torchvision"))  # weights="DEFAULT"
    assert calls.weights[-1].name == "IMAGENET1K_V1" and loaded.transform is not None
    with pytest.raises(ParameterError, match="IMAGENET1K_V2.*DEFAULT.*IMAGENET1K_V1"):
        load_model(FeatureSpec("tiny", source="torchvision", weights="IMAGENET1K_V2"))
    saved = tmp_path / "tiny.pth"
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1))
    torch.save(reference.state_dict(), saved)
    from_file = load_model(FeatureSpec("tiny", source="torchvision", weights=str(saved)))
    torch.testing.assert_close(from_file.module.state_dict(), reference.state_dict())
    assert calls.weights[-1] is None  # built without download, then the file loaded


def test_torchvision_without_a_connection_says_where_the_file_goes(monkeypatch):
    _fake_torchvision(monkeypatch, download_fails=True)
    with pytest.raises(WeightsNotAvailableError) as raised:
        load_model(FeatureSpec("tiny", source="torchvision", weights="DEFAULT"))
    message = str(raised.value)
    assert "tiny-0123.pth" in message and torch.hub.get_dir() in message
    assert "weights='/path/to/tiny-0123.pth'" in message


def test_two_seeds_of_one_model_in_one_process_are_two_models(offline, tiny_laion_root, tmp_path):
    options = ExtractionOptions(chunk_size=128, cache_dir=tmp_path / "cache")
    specs = [
        FeatureSpec(
            "microsoft/resnet-18",
            layer="encoder.stages.3",
            weights="random",
            config=RESNET,
            seed=seed,
            transform={"resize": 32, "crop": 32},
            name=f"s{seed}",
        )
        for seed in (0, 1)
    ]
    first = load_features(specs[0], tiny_laion_root, options=options)["s0"]
    second = load_features(specs[1], tiny_laion_root, options=options)["s1"]
    assert not np.allclose(first, second)  # the second is not the first model remembered
    np.testing.assert_array_equal(
        load_features(specs[0], tiny_laion_root, options=options)["s0"], first
    )
