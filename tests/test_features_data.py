"""Extracted features where features are used: every trial of the fMRI datasets, the DataModule,
``load_dataset`` and the encoder gets its own image's features (checked against a direct forward
pass by image name), through DataLoader workers, and the encoder recovers the synthetic ground
truth from a model that sees the pictures' colours."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from encoder_helpers import fit_and_test_encoder, ground_truth_rows
from feature_models import (
    TinyNet,
    direct_outputs,
    normalised,
    one_thread,  # noqa: F401 - a fixture
    resnet18_feature_specs,
    stimulus_images,
)
from torch.utils.data import DataLoader

import neurotorch
from neurotorch.data.collate import collate_items
from neurotorch.data.fmri.betas import BetasDataset
from neurotorch.data.fmri.stream import BetasStream
from neurotorch.errors import ParameterError
from neurotorch.features import FeatureSpec, ImageTransform
from neurotorch.features.forward import ExtractionJob
from neurotorch.lightning import LaionFMRIDataModule

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ImageTransform(resize=32, crop=32)
FACE = {"roi": "face"}


@pytest.fixture(scope="module")
def expected(tiny_laion_root) -> dict[str, np.ndarray]:
    """TinyNet's pooled ``block`` output of every image, by image name, run by hand."""
    names, images = stimulus_images(tiny_laion_root)
    batch = torch.stack([normalised(image) for image in images])
    block = direct_outputs(TinyNet(), batch, ["block"])["block"].mean(dim=(2, 3)).numpy()
    return dict(zip(names, block, strict=True))


def spec(**more) -> FeatureSpec:
    return FeatureSpec(TinyNet(), layer="block", transform=TINY, name="tiny", **more)


def check_batch(batch: dict, expected: dict, key: str = "embedding_tiny") -> None:
    want = np.stack([expected[name] for name in batch["image_name"]])
    np.testing.assert_allclose(batch[key].numpy(), want, rtol=1e-5, atol=1e-6)


def test_map_style_items_carry_their_own_images_features_in_workers(tiny_laion_root, expected):
    dataset = BetasDataset(
        tiny_laion_root,
        "sub-01",
        trials={"split": "random_0", "part": "train"},
        voxels=FACE,
        features=["CLIP", spec()],
    )
    assert "features CLIP, tiny" in repr(dataset)
    loader = DataLoader(
        dataset,
        batch_size=16,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
        collate_fn=collate_items,
    )
    for epoch in range(2):
        seen = 0
        for batch in loader:
            check_batch(batch, expected)
            assert batch["embedding_CLIP"].shape[1] == 1024
            seen += len(batch["image_name"])
        assert seen == len(dataset), epoch


def test_the_stream_and_load_dataset_pair_the_same_way(tiny_laion_root, expected, monkeypatch):
    stream = BetasStream(
        tiny_laion_root,
        "sub-01",
        trials={"split": "random_0", "part": "test"},
        voxels=FACE,
        features=spec(),
        read={"verify": "off"},
        batch_size=8,
    )
    for batch in DataLoader(stream, batch_size=8, num_workers=2):
        check_batch(batch, expected, key="embedding")  # one feature space: the key "embedding"
    monkeypatch.setattr(ExtractionJob, "compute", lambda *a: pytest.fail("computed again"))
    dataset = neurotorch.load_dataset(
        "laion-fmri",
        split="random_0/test",
        data_dir=tiny_laion_root,
        subject="sub-01",
        roi="face",
        features=[spec()],
    )
    check_batch(collate_items([dataset[k] for k in range(len(dataset))]), expected, "embedding")


def test_the_datamodule_takes_specs_as_yaml_dicts(tiny_laion_root, expected):
    resnet = {
        "model": "microsoft/resnet-18",
        "weights": "random",
        "layer": "encoder.stages.3",
        "config": {
            "model_type": "resnet",
            "embedding_size": 8,
            "hidden_sizes": [8, 16, 32, 64],
            "depths": [1, 1, 1, 1],
            "layer_type": "basic",
        },
        "transform": {"resize": 32, "crop": 32},
        "name": "resnet",
    }
    dm = LaionFMRIDataModule(
        tiny_laion_root, "sub-01", voxels=FACE, batch_size=16, features=["CLIP", spec(), resnet]
    )
    assert dm.feature_dims == {"embedding_CLIP": 1024, "embedding_tiny": 16, "embedding_resnet": 64}
    assert dm.hparams.features[2] == {**FeatureSpec(**resnet).to_dict()}  # plain values
    assert dm.hparams.features[1]["model"] == "<TinyNet module>"
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    check_batch(batch, expected)
    assert batch["embedding_resnet"].shape == (len(batch["image_name"]), 64)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (["CLIP", {"model": "m", "name": "CLIP", "weights": "random"}], "['CLIP'] twice"),
        (["CLIP", "ResNet"], "FeatureSpec"),
    ],
)
def test_features_that_cannot_be_paired_are_refused(features, message, tiny_laion_root):
    with pytest.raises(ParameterError, match=message.replace("[", r"\[").replace("]", r"\]")):
        BetasDataset(tiny_laion_root, "sub-01", voxels=FACE, features=features)


class Colours(torch.nn.Module):
    """A vision model with no weights that sees colour: the mean of each channel over a 4 × 4
    grid of the picture (the synthetic pictures draw their latent code as colours)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4)


@pytest.mark.slow
def test_the_encoder_recovers_the_ground_truth_from_extracted_features(tiny_laion_root, tmp_path):
    colours = FeatureSpec(Colours(), pooling="flatten", transform=TINY, name="colours")
    dm = LaionFMRIDataModule(tiny_laion_root, "sub-01", features=colours, batch_size=64)
    model = fit_and_test_encoder(dm, tmp_path, penalties=[0.1, 1.0, 10.0, 100.0, 1000.0])
    truth = ground_truth_rows(tiny_laion_root, "sub-01", dm.voxel_table["voxel"].to_numpy())
    r, signal = model.per_voxel_r(), truth["signal"]
    assert signal.sum() > 50 and (~signal).sum() > 50
    assert np.median(r[signal]) >= 0.75 * np.median(truth["attainable_r"][signal])
    assert abs(np.median(r[~signal])) < 0.1
    assert json.loads((tmp_path / "metrics.json").read_text())["feature_spaces"]
    shutil.rmtree(tmp_path / "lightning_logs", ignore_errors=True)


@pytest.mark.slow
def test_the_features_config_run_twice_reads_every_feature_from_the_cache(
    tiny_laion_root, tmp_path, monkeypatch, capsys
):
    from neurotorch.cli import main

    monkeypatch.setenv("NEUROTORCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    features = json.dumps(["CLIP", *resnet18_feature_specs()])
    args = [
        "fit",
        "--config",
        "encoder_features",
        "--data.init_args.data_dir",
        str(tiny_laion_root),
        "--data.init_args.features",
        features,
    ]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "features: 1 chunk(s) computed" in first.err  # 109 images: one chunk, three layers
    entries = sorted(p.name for p in (tmp_path / "cache" / "features").glob("*/manifest.json"))

    monkeypatch.setattr(ExtractionJob, "compute", lambda *a: pytest.fail("computed again"))
    assert main(args) == 0
    second = capsys.readouterr()
    assert "chunk(s) computed" in second.err and " 1 chunk(s) computed" not in second.err
    assert "features: 0 chunk(s) computed, 1 already in the cache" in second.err
    assert sorted(p.name for p in (tmp_path / "cache" / "features").glob("*/manifest.json")) == (
        entries
    )
    metrics = [
        json.loads(
            next((tmp_path / "runs" / "encoder_features" / v).glob("metrics.json")).read_text()
        )
        for v in ("version_0", "version_1")
    ]
    assert metrics[0]["median_r"] == metrics[1]["median_r"]
