"""Feature extraction and its cache, against independent computations: a direct forward pass of
the same model on images decoded with h5py and PIL, the documented projection matrix, scikit-learn's
PCA, the documented preprocessing steps; and the cache's keys, reuse and invalidation."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
import yaml
from feature_models import (
    TinyNet,
    direct_outputs,
    normalised,
    one_thread,  # noqa: F401 - a fixture
    stimulus_images,
)
from PIL import Image

from neurotorch.features import (
    ExtractionOptions,
    FeatureSpec,
    ImageTransform,
    extract_features,
    load_features,
)
from neurotorch.features.forward import ExtractionJob

TINY = ImageTransform(resize=32, crop=32)  # the tiny tree's images are 32 px: no resampling
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tiny_laion_root):
    return stimulus_images(tiny_laion_root)


@pytest.fixture
def cache(tmp_path):
    return ExtractionOptions(chunk_size=16, batch_size=8, cache_dir=tmp_path / "cache")


def direct(model, images, layers):
    """Outputs of ``layers`` for every image, one forward pass over them all."""
    batch = torch.stack([normalised(image) for image in images[1]])
    return direct_outputs(model, batch, layers)


@pytest.mark.parametrize(
    ("layer", "pooling", "expected"),
    [
        ("block", "avg", lambda x: x.mean(dim=(2, 3))),
        ("block", "flatten", lambda x: x.reshape(len(x), -1)),
        ("tokens", "cls", lambda x: x[:, 0]),
        ("tokens", "avg", lambda x: x.mean(dim=1)),
        ("", "avg", lambda x: x),
    ],
)
def test_cached_features_equal_a_direct_forward_pass(
    layer, pooling, expected, tiny_laion_root, images, cache
):
    model = TinyNet()
    spec = FeatureSpec(model, layer=layer, pooling=pooling, transform=TINY)
    got = load_features(spec, tiny_laion_root, options=cache)[spec.name]
    want = expected(direct(TinyNet(), images, [layer])[layer]).numpy()
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class InPlaceNet(torch.nn.Module):
    """torchvision's pattern: conv, batch norm, then a ReLU that overwrites the norm's output."""

    def __init__(self):
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)
        self.conv, self.bn = torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)
        self.bn.running_mean.normal_()  # so that about half the normed values are negative
        self.relu = torch.nn.ReLU(inplace=True)
        torch.random.set_rng_state(generator_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def test_a_layer_whose_output_is_changed_in_place_later_keeps_its_own(
    tiny_laion_root, images, cache
):
    """The features of ``bn`` are the norm's output, not the ReLU's that overwrote it."""
    model = InPlaceNet().eval()
    spec = FeatureSpec(model, layer="bn", transform=TINY)
    got = load_features(spec, tiny_laion_root, options=cache)[spec.name]
    batch = torch.stack([normalised(image) for image in images[1]])
    with torch.no_grad():
        want = model.bn(model.conv(batch)).mean(dim=(2, 3)).numpy()
    assert want.min() < 0  # the ReLU would have changed them
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_in_another_dtype_gets_its_images_in_that_dtype(
    dtype, tiny_laion_root, images, cache
):
    model = TinyNet().to(dtype).eval()
    spec = FeatureSpec(model, layer="block", transform=TINY)
    got = load_features(spec, tiny_laion_root, options=cache)[spec.name]
    batch = torch.stack([normalised(image) for image in images[1]]).to(dtype)
    with torch.no_grad():
        want = model.block(model.stem(batch)).float().mean(dim=(2, 3)).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_several_layers_of_one_model_in_one_pass(tiny_laion_root, images, cache, monkeypatch):
    model = TinyNet()
    specs = [
        FeatureSpec(model, layer="stem", transform=TINY, name="stem"),
        FeatureSpec(model, layer="block", transform=TINY, name="block"),
        FeatureSpec(model, layer="block", pooling="flatten", transform=TINY, name="flat"),
    ]
    passes = []
    real = ExtractionJob.layer_outputs

    def counted(self, rows, layers):
        passes.append((len(rows), sorted(set(layers))))
        yield from real(self, rows, layers)

    monkeypatch.setattr(ExtractionJob, "layer_outputs", counted)
    got = load_features(specs, tiny_laion_root, options=cache)
    assert list(got) == ["stem", "block", "flat"]
    # 109 images in chunks of 16: one pass per chunk for all specs
    assert passes == [(n, ["block", "stem"]) for n in [16, 16, 16, 16, 16, 16, 13]]
    want = direct(TinyNet(), images, ["stem", "block"])
    np.testing.assert_allclose(got["stem"], want["stem"].mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["flat"], want["block"].flatten(1), rtol=1e-5, atol=1e-6)


def test_image_transform_follows_its_documented_steps():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))  # 70 wide, 50 high
    transform = ImageTransform(resize=40, crop=30, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    got = transform(image)
    resized = image.resize((56, 40), resample=Image.Resampling.BILINEAR)  # round(70 * 40 / 50)
    pixels = np.asarray(resized, dtype=np.float32)[5:35, 13:43] / 255.0  # (40-30)//2, (56-30)//2
    want = (pixels - np.float32([0.5, 0.4, 0.3])) / np.float32([0.2, 0.25, 0.3])
    assert got.shape == (3, 30, 30) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want.transpose(2, 0, 1), rtol=1e-6)


def test_random_projection_matches_its_documented_matrix(tiny_laion_root, images, cache):
    spec = FeatureSpec(
        TinyNet(), layer="block", pooling="random_projection", k=7, seed=3, transform=TINY
    )
    got = load_features(spec, tiny_laion_root, options=cache)[spec.name]
    flat = direct(TinyNet(), images, ["block"])["block"].flatten(1).numpy().astype(np.float64)
    matrix = np.random.default_rng(3).standard_normal((flat.shape[1], 7), dtype=np.float32)
    want = flat @ (matrix.astype(np.float64) / np.sqrt(7))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("pca_images", [50, 4096])  # a sample of the set, and all of it
def test_pca_matches_scikit_learn_on_the_documented_sample(
    pca_images, tiny_laion_root, images, cache
):
    from sklearn.decomposition import PCA

    spec = FeatureSpec(
        TinyNet(), layer="block", pooling="pca", k=5, seed=1, pca_images=pca_images, transform=TINY
    )
    got = load_features(spec, tiny_laion_root, options=cache)[spec.name]
    flat = direct(TinyNet(), images, ["block"])["block"].flatten(1).numpy().astype(np.float64)
    n = len(flat)
    rows = np.sort(np.random.default_rng(1).choice(n, size=min(pca_images, n), replace=False))
    reference = PCA(n_components=5, svd_solver="full").fit(flat[rows])
    want = reference.transform(flat)
    signs = np.sign((got * want).sum(axis=0))  # a component's sign is a convention
    np.testing.assert_allclose(got * signs, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    largest = np.abs(reference.components_).argmax(axis=1)
    documented = np.sign(reference.components_[np.arange(5), largest])  # largest entry positive
    np.testing.assert_array_equal(signs, documented)


def test_rows_follow_the_requested_image_order(tiny_laion_root, images, cache):
    spec = FeatureSpec(TinyNet(), layer="block", transform=TINY)
    everything = load_features(spec, tiny_laion_root, options=cache)[spec.name]
    names = images[0]
    wanted = [names[i] for i in (100, 3, 57, 3, 20)]  # across chunks, one repeated
    got = load_features(spec, tiny_laion_root, images=wanted, options=cache)[spec.name]
    np.testing.assert_array_equal(got, everything[[100, 3, 57, 3, 20]])
    one = load_features(spec, tiny_laion_root, images=names[57], options=cache)[spec.name]
    np.testing.assert_array_equal(one, everything[[57]])  # one name, not its characters


def test_a_subset_computes_only_its_chunks_and_the_rest_later(tiny_laion_root, images, cache):
    spec = FeatureSpec(TinyNet(), layer="block", transform=TINY)
    names = images[0]
    (entry,) = extract_features(spec, tiny_laion_root, images=names[:20], options=cache)
    assert entry.chunks_present() == [0, 1] and entry.manifest() is None
    load_features(spec, tiny_laion_root, options=cache)
    summary = entry.describe()
    assert summary["chunks"] == [7, 7] and summary["complete"]
    assert summary["shape"] == [len(names), 16]
    manifest = entry.manifest()
    assert [c["rows"] for c in manifest["chunks"]][-1] == [96, 109]


def test_a_second_run_reads_the_cache_and_computes_nothing(tiny_laion_root, cache, monkeypatch):
    spec = FeatureSpec(TinyNet(), layer="block", transform=TINY)
    first = load_features(spec, tiny_laion_root, options=cache)[spec.name]
    folder = cache.cache_dir / "features"
    written = {p: p.stat().st_mtime_ns for p in folder.rglob("chunk-*")}

    def refuse(*args, **kwargs):
        raise AssertionError("a feature was computed again")

    monkeypatch.setattr(ExtractionJob, "compute", refuse)
    again = load_features(spec, tiny_laion_root, options=cache)[spec.name]
    np.testing.assert_array_equal(again, first)
    (entry,) = extract_features(spec, tiny_laion_root, options=cache)
    assert entry.read_rows(np.arange(109)).tobytes() == first.tobytes()
    assert written == {p: p.stat().st_mtime_ns for p in folder.rglob("chunk-*")}


def _changed(kind: str, root, base: dict) -> dict:
    if kind == "transform":
        return {**base, "transform": ImageTransform(resize=32, crop=28)}
    if kind == "layer":
        return {**base, "layer": "stem"}
    if kind == "pooling":
        return {**base, "pooling": "random_projection", "k": 4}
    if kind == "weights":
        model = TinyNet()
        with torch.no_grad():
            model.head.bias += 1  # a layer after the one taken: its features are unchanged
        return {**base, "model": model}
    if kind == "attribute":  # a plain setting a forward may read (a scale, a flag)
        model = TinyNet()
        model.block.scale = 3.0
        return {**base, "model": model}
    if kind == "stimuli":
        images = root / "stimuli" / "task-images_stimuli.h5"
        os.utime(images, ns=(images.stat().st_atime_ns, images.stat().st_mtime_ns + 10**9))
        return base
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["transform", "layer", "pooling", "weights", "attribute", "stimuli"]
)
def test_a_changed_key_part_is_another_entry(kind, tiny_laion_root, tmp_path, monkeypatch):
    import shutil

    root = shutil.copytree(tiny_laion_root, tmp_path / "tree")
    options = ExtractionOptions(chunk_size=64, cache_dir=tmp_path / "cache")
    base = {"model": TinyNet(), "layer": "block", "transform": TINY}
    (before,) = extract_features(FeatureSpec(**base), root, options=options)
    (same,) = extract_features(FeatureSpec(**{**base, "model": TinyNet()}), root, options=options)
    assert same.directory == before.directory  # equal weights, same entry
    computed = []
    real = ExtractionJob.compute
    monkeypatch.setattr(
        ExtractionJob, "compute", lambda self, *a: computed.append(1) or real(self, *a)
    )
    (after,) = extract_features(FeatureSpec(**_changed(kind, root, base)), root, options=options)
    assert after.directory != before.directory
    assert len(computed) == 2  # both chunks of 109 images, computed afresh
    assert before.key()["model"]["weights_sha"] != after.key()["model"]["weights_sha"] or (
        kind != "weights"
    )


def test_callables_differing_in_captured_or_default_values_are_other_entries():
    from neurotorch.features.transforms import transform_identity

    def make(size):
        def resize(image):
            return ImageTransform(resize=size, crop=size)(image)

        return resize

    assert transform_identity(make(16)) == transform_identity(make(16))
    assert transform_identity(make(16)) != transform_identity(make(64))
    by_default = [lambda image, s=s: ImageTransform(resize=s, crop=s)(image) for s in (16, 64)]
    assert transform_identity(by_default[0]) != transform_identity(by_default[1])


SIZE = 16  # a module-level setting a transform reads


def _resize_to_global(image):
    return ImageTransform(resize=SIZE, crop=SIZE)(image)


class _ResizeToGlobal:
    def __call__(self, image):
        return ImageTransform(resize=SIZE, crop=SIZE)(image)


@pytest.mark.parametrize("transform", [_resize_to_global, _ResizeToGlobal()])
def test_a_callable_reading_a_changed_global_is_another_entry(transform, monkeypatch):
    from neurotorch.features.transforms import transform_identity

    before = transform_identity(transform)
    assert transform_identity(transform) == before
    monkeypatch.setattr(f"{__name__}.SIZE", 64)
    assert transform_identity(transform) != before


def test_a_local_model_saved_again_is_loaded_again(tmp_path):
    from neurotorch.features.forward import _local_files

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    spec = FeatureSpec(str(folder), layer="encoder", source="transformers")
    before = _local_files(spec)
    (folder / "model.safetensors").write_bytes(b"other weights")  # save_pretrained again
    assert _local_files(spec) != before and len(before) == 1


def test_a_damaged_chunk_is_recomputed_with_a_warning(tiny_laion_root, cache, caplog):
    spec = FeatureSpec(TinyNet(), layer="block", transform=TINY)
    first = load_features(spec, tiny_laion_root, options=cache)[spec.name]
    (entry,) = extract_features(spec, tiny_laion_root, options=cache)
    damaged = entry.chunk_path(2)
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    again = load_features(spec, tiny_laion_root, options=cache)[spec.name]
    np.testing.assert_array_equal(again, first)
    assert any(
        damaged.name in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records
    )


def test_spec_values_are_checked_and_kept_as_plain_values():
    from neurotorch.errors import ParameterError
    from neurotorch.features.spec import as_specs

    spec = FeatureSpec(
        TinyNet(), layer="block", pooling="random_projection", k=np.int64(3), transform=TINY
    )
    assert type(spec.k) is int  # a numpy integer from np.arange is written to JSON as a number
    with pytest.raises(ParameterError, match="'layr'.*did you mean 'layer'"):
        as_specs([{"model": "x", "source": "transformers", "layr": "a"}])
    with pytest.raises(ParameterError, match="'resise'.*did you mean 'resize'"):
        FeatureSpec(TinyNet(), layer="block", transform={"resise": 32})
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="CUDA device"):
            ExtractionOptions(device="cuda")


def test_a_spec_as_plain_values():
    spec = FeatureSpec("microsoft/resnet-18", layer="encoder.stages.1", transform=TINY)
    plain = spec.to_dict()
    assert FeatureSpec(**plain) == spec
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # what hparams and checkpoints hold
    described = FeatureSpec(TinyNet(), layer="block", transform=lambda x: x).to_dict()
    assert described["model"] == "<TinyNet module>" and "lambda" in described["transform"]


def test_specs_from_yaml_dicts_and_their_default_names():
    spec = FeatureSpec(
        model="microsoft/resnet-18",
        layer="encoder.stages.1",
        pooling="pca",
        k=64,
        transform={"resize": 64, "crop": 56},
    )
    assert spec.source == "transformers"
    assert spec.transform == ImageTransform(resize=64, crop=56)
    assert spec.name == "resnet-18_encoder.stages.1_pca64"
    assert FeatureSpec(TinyNet(), layer="block", transform=TINY).name == "TinyNet_block"
    assert FeatureSpec(TinyNet(), transform=TINY).name == "TinyNet_output"


def test_ranks_take_their_own_chunks_first(tiny_laion_root, cache, monkeypatch):
    from neurotorch.features.units import ChunkUnit

    order = []
    real = ChunkUnit.run
    monkeypatch.setattr(ChunkUnit, "run", lambda self: order.append(self.chunk) or real(self))
    spec = FeatureSpec(TinyNet(), layer="block", transform=TINY)
    second_of_two = dataclasses.replace(cache, rank=1, world_size=2)
    (entry,) = extract_features(spec, tiny_laion_root, options=second_of_two)
    assert order == [1, 3, 5] and entry.chunks_present() == [1, 3, 5]  # a job array's task
    order.clear()
    load_features(spec, tiny_laion_root, options=second_of_two)
    assert order == [0, 2, 4, 6]  # every rank needs the whole matrix: the rest, once
