"""``neurotorch features list|extract|describe`` as a user types them, checked against transformers
run directly and against the cache the Python API reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from feature_models import (
    RESNET,
    normalised,
    one_thread,  # noqa: F401 - a fixture
    stimulus_images,
)
from PIL import Image

from neurotorch.cli import main
from neurotorch.features import ExtractionOptions, FeatureSpec, load_features
from neurotorch.features.forward import ExtractionJob

pytestmark = pytest.mark.usefixtures("one_thread")
transformers = pytest.importorskip("transformers")
TRANSFORM = {"resize": 32, "crop": 32}
MODEL = [
    "--model",
    "microsoft/resnet-18",
    "--weights",
    "random",
    "--config",
    json.dumps(RESNET),
    "--transform",
    json.dumps(TRANSFORM),
]


def seeded_resnet(seed: int = 0) -> torch.nn.Module:
    """The documented random weights: torch seeded with ``seed``, then the library's constructor."""
    options = {k: v for k, v in RESNET.items() if k != "model_type"}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.AutoModel.from_config(
            transformers.AutoConfig.for_model("resnet", **options)
        )
    return model.eval()


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["features", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_extract_then_list_and_describe(tiny_laion_root, tmp_path, capsys, monkeypatch):
    cache = str(tmp_path / "cache")
    layers = ["encoder.stages.1", "encoder.stages.2"]
    extract = [
        "extract",
        "--data-dir",
        str(tiny_laion_root),
        *MODEL,
        "--layer",
        *layers,
        "--chunk-size",
        "64",
        "--cache-dir",
        cache,
    ]
    status, out, err = run(capsys, *extract)
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and "109 x 16" in lines[0] and "109 x 32" in lines[1]
    assert all("chunks 2/2 complete" in line for line in lines)
    assert "2 chunk(s) computed" in err

    # the API finds what the command wrote, and it equals transformers run directly
    monkeypatch.setattr(ExtractionJob, "compute", lambda *a: pytest.fail("computed again"))
    specs = [
        FeatureSpec(
            "microsoft/resnet-18", layer=layer, weights="random", config=RESNET, transform=TRANSFORM
        )
        for layer in layers
    ]
    got = load_features(
        specs, tiny_laion_root, options=ExtractionOptions(chunk_size=64, cache_dir=cache)
    )
    pixels = torch.stack([normalised(image) for image in stimulus_images(tiny_laion_root)[1]])
    with torch.no_grad():
        hidden = seeded_resnet()(pixels, output_hidden_states=True).hidden_states
    for stage, spec in zip((2, 3), specs, strict=True):
        want = hidden[stage].mean(dim=(2, 3)).numpy()
        np.testing.assert_allclose(got[spec.name], want, rtol=1e-5, atol=1e-5)

    status, out, _ = run(capsys, "list", "--cache-dir", cache)
    assert status == 0 and sorted(out.splitlines()) == sorted(lines)
    entry = lines[1].split()[0]
    status, out, _ = run(capsys, "describe", entry[:8], "--cache-dir", cache)
    assert status == 0 and '  layer: "encoder.stages.2"' in out.splitlines()
    status, out, _ = run(capsys, "describe", entry, "--cache-dir", cache, "--json")
    summary = json.loads(out)
    assert summary["shape"] == [109, 32] and summary["chunks"] == [2, 2] and summary["complete"]
    assert summary["model"]["weights"] == "random" and summary["transform"]["crop"] == 32

    status, out, err = run(capsys, *extract)
    assert status == 0 and "0 chunk(s) computed" in err and out.splitlines() == lines


def test_list_a_models_layers_with_their_output_shapes(capsys):
    status, out, _ = run(capsys, "list", *MODEL)
    assert status == 0
    shapes = dict(line.split("  ")[::2] for line in out.splitlines())
    grey = normalised(Image.new("RGB", (32, 32), (128, 128, 128)))  # resized from 256: one colour
    with torch.no_grad():
        hidden = seeded_resnet()(grey[None], output_hidden_states=True).hidden_states
    for stage in range(4):
        assert shapes[f"encoder.stages.{stage}"] == "x".join(map(str, hidden[stage + 1].shape))
    assert shapes["encoder.stages"] == "-"  # a ModuleList does not run


def test_the_run_options_reach_the_extraction(tiny_laion_root, capsys, monkeypatch):
    seen = {}

    def fake(specs, data_dir, *, options):
        seen.update(specs=specs, options=options)
        return []

    monkeypatch.setattr("neurotorch.features.extract.extract_features", fake)
    status, _, _ = run(
        capsys,
        "extract",
        "--data-dir",
        str(tiny_laion_root),
        *MODEL,
        "--layer",
        "encoder.stages.3",
        "--pooling",
        "pca",
        "--k",
        "8",
        "--workers",
        "2",
        "--scheduler",
        "tcp://127.0.0.1:8786",
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--num-workers",
        "2",
        "--chunk-size",
        "32",
    )
    assert status == 0
    assert seen["options"] == ExtractionOptions(
        device="cpu",
        batch_size=4,
        num_workers=2,
        chunk_size=32,
        workers=2,
        scheduler="tcp://127.0.0.1:8786",
    )
    (spec,) = seen["specs"]
    assert (spec.layer, spec.pooling, spec.k, spec.weights) == (
        "encoder.stages.3",
        "pca",
        8,
        "random",
    )


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["describe", "0000"], 1, "'0000' names no entries"),
        (["extract", *MODEL], 2, "--layer"),
        (["extract", "--model", "m", "--layer", "x", "--config", "{oops"], 2, "--config must be"),
        (["list", *MODEL[:-2], "--transform", "[1]"], 2, "--transform must be a JSON object"),
    ],
)
def test_mistakes_are_one_line(args, status, message, tmp_path, capsys):
    got, out, err = run(capsys, *args, "--cache-dir", str(tmp_path))
    assert got == status and out == ""
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_an_unknown_layer_is_named(tiny_laion_root, tmp_path, capsys):
    status, _, err = run(
        capsys,
        "extract",
        "--data-dir",
        str(tiny_laion_root),
        *MODEL,
        "--layer",
        "encoder.stage.1",
        "--cache-dir",
        str(tmp_path),
    )
    assert status == 1 and "layer='encoder.stage.1'" in err and "encoder.stages.1" in err
