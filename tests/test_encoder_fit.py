"""`LinearEncoder` inside Lightning on the tiny synthetic tree: the fit equals the brute-force
reference over exactly the trials it saw, predictions are unbiased, and the test trials' ceiling
agrees with the generator's ground truth (default and realistic SNR)."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from encoder_helpers import fit_and_test_encoder, split_arrays, true_test_ceiling
from ridge_reference import reference_fit

from neurotorch.errors import ParameterError
from neurotorch.lightning import LaionFMRIDataModule
from neurotorch.models import LinearEncoder
from neurotorch.models.encoder_report import MIN_CEILING_R
from neurotorch.models.held_out import median_fraction_margin
from neurotorch.models.ridge import folds_of
from neurotorch.synthetic.laion_fmri import make_laion_fmri

PENALTIES = (0.03, 1.0, 30.0)


def fitted(root, tmp_path, **encoder_args):
    dm = LaionFMRIDataModule(data_dir=str(root), subject="sub-01", batch_size=64)
    model = fit_and_test_encoder(dm, tmp_path, penalties=PENALTIES, **encoder_args)
    return dm, model


@pytest.fixture(scope="module")
def per_voxel(tiny_laion_root, tmp_path_factory):
    return fitted(tiny_laion_root, tmp_path_factory.mktemp("fit"), score="r", per_voxel=True)


def test_fit_equals_reference_on_training_and_validation_trials(per_voxel):
    dm, model = per_voxel
    parts = [split_arrays(dm, part) for part in ("train", "val")]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    names = [n for p in parts for n in p[2]]
    folds = folds_of(names, model.hparams.n_folds).numpy()
    weight, intercept, penalty = reference_fit(x, y, folds, PENALTIES, [x.shape[1]], [], "r")
    np.testing.assert_array_equal(model.penalty.numpy(), penalty)
    assert len(np.unique(penalty)) > 1
    np.testing.assert_allclose(
        model.weight.numpy(), weight, rtol=0, atol=1e-8 * np.abs(weight).max()
    )
    np.testing.assert_allclose(
        model.bias.numpy(), intercept, rtol=0, atol=1e-8 * np.abs(intercept).max()
    )


def test_test_predictions_are_unbiased(per_voxel):
    dm, model = per_voxel
    x, y, names = split_arrays(dm, "test")
    residual = y - (x @ model.weight.numpy() + model.bias.numpy())
    n_test = len(set(names))
    n_train = len(
        set(dm.datasets["train"].trials["label"]) | set(dm.datasets["val"].trials["label"])
    )
    # images differ between the parts, so the standard error is per image, not per trial
    standard_error = residual.std(0) * np.sqrt(1 / n_test + 1 / n_train)
    assert np.median(np.abs(residual.mean(0)) / standard_error) < 1.5


def assert_ceiling_matches_truth(root, dm, model):
    truth = true_test_ceiling(root, dm)
    estimate = model.test_ceiling
    signal = truth["signal"]
    assert estimate["n_rows"] == len(dm.datasets["test"]) and signal.sum() > 50
    # per voxel: within four of the documented standard errors
    error = np.abs(estimate["ceiling_r"] - truth["ceiling_r"])[signal]
    assert np.mean(error <= 4 * estimate["ceiling_sd"][signal]) > 0.95
    # the median fraction of ceiling: within its documented margin of the true one
    usable = signal & (estimate["ceiling_r"] >= MIN_CEILING_R)
    r, c = model.test_r[usable], estimate["ceiling_r"][usable]
    margin = median_fraction_margin(r / c, c, estimate["ceiling_sd"][usable])
    true_fraction = np.median(r / truth["ceiling_r"][usable])
    assert abs(np.median(r / c) - true_fraction) <= margin
    assert model.test_metrics["median_fraction_of_ceiling"] == pytest.approx(
        np.median(r / c), abs=margin
    )
    return truth


def test_ceiling_of_the_test_trials_matches_the_ground_truth(per_voxel, tiny_laion_root):
    dm, model = per_voxel
    truth = assert_ceiling_matches_truth(tiny_laion_root, dm, model)
    assert np.median(truth["ceiling_r"][truth["signal"]]) > 0.55


@pytest.mark.slow
def test_realistic_snr_preset(tmp_path, tiny_laion_root):
    root = make_laion_fmri(tmp_path / "realistic", size="tiny", seed=0, snr="realistic")
    truth = np.load(root / "_groundtruth" / "sub-01_encoding.npz")
    default = np.load(tiny_laion_root / "_groundtruth" / "sub-01_encoding.npz")
    signal = truth["amplitude"] > 0
    np.testing.assert_array_equal(truth["weights"], default["weights"])  # only the noise differs
    assert (
        0.2 <= truth["attainable_r"][signal].min() and truth["attainable_r"][signal].max() <= 0.48
    )
    dm, model = fitted(root, tmp_path / "run", per_voxel=False)
    truth = assert_ceiling_matches_truth(root, dm, model)
    assert 0.2 < np.median(truth["ceiling_r"][truth["signal"]]) < 0.48
    assert np.median(model.test_r[truth["signal"]]) > 0.1


def test_banded_encoder_partitions_the_explained_variance(
    tiny_laion_root, tmp_path, monkeypatch, capsys
):
    from neurotorch.plotting import figure

    drawn = {}
    save_png = figure.save_png

    def record(fig, path):  # what the report's figure says, read before it is saved
        drawn[path.name] = [fig.get_suptitle(), *(ax.get_title() for ax in fig.axes)]
        return save_png(fig, path)

    monkeypatch.setattr(figure, "save_png", record)
    dm = LaionFMRIDataModule(
        data_dir=str(tiny_laion_root),
        subject="sub-01",
        voxels={"roi": "face"},
        features=["CLIP", "DINOv2"],
        batch_size=64,
    )
    keys = ["embedding_CLIP", "embedding_DINOv2"]
    model = fit_and_test_encoder(dm, tmp_path, feature_key=keys, band_ratios=(0.1, 1.0, 10.0))
    assert model.penalty.shape == (2, len(dm.voxel_table))
    assert (model.penalty[0] != model.penalty[1]).any()
    batches = list(dm.dataloader("test", shuffle=False))
    x = np.concatenate([np.concatenate([b[k].double().numpy() for k in keys], 1) for b in batches])
    y = np.concatenate([b["betas"].double().numpy() for b in batches])
    pred = x @ model.weight.numpy() + model.bias.numpy()
    yc, pc = y - y.mean(0), pred - pred.mean(0)
    centred_r2 = 1 - ((yc - pc) ** 2).sum(0) / (yc**2).sum(0)
    shares = model.test_metrics["feature_spaces"]
    assert set(shares) == {"CLIP", "DINOv2"}
    clip = x[:, :1024] @ model.weight.numpy()[:1024]
    clip_share = (clip - clip.mean(0)) * (2 * yc - pc)
    expected = {
        "CLIP": np.median(clip_share.sum(0) / (yc**2).sum(0)),
        "DINOv2": np.median(centred_r2 - clip_share.sum(0) / (yc**2).sum(0)),
    }
    for space, share in expected.items():
        assert shares[space]["median_variance_share"] == pytest.approx(share, rel=1e-9)
    # the partition in the console's test line and in the figure, which names its data
    line = capsys.readouterr().out
    assert (
        f"median variance share: CLIP {expected['CLIP']:.3f}, DINOv2 {expected['DINOv2']:.3f}"
        in line
    )
    title, *panels = drawn["encoder_test.png"]
    assert (
        "sub-01" in title and "CLIP + DINOv2" in title and "split random_0 of pool shared" in title
    )
    assert f"{len(y)} test trials" in title
    assert any(p.startswith("variance partition") and "CLIP" in p for p in panels)


def test_without_validation_predict_fits_the_training_trials(tiny_laion_root):
    dm = LaionFMRIDataModule(
        data_dir=str(tiny_laion_root), subject="sub-01", voxels={"roi": "FFA1"}, batch_size=64
    )
    model = LinearEncoder(penalties=PENALTIES, per_voxel=False)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    batches = trainer.predict(model, dm.test_dataloader())
    predictions = torch.cat([batch["prediction"] for batch in batches]).numpy()
    x, y, names = split_arrays(dm, "train")
    folds = folds_of(names, model.hparams.n_folds).numpy()
    weight, intercept, _ = reference_fit(x, y, folds, PENALTIES, [x.shape[1]], [], "r2", False)
    x_test, _, _ = split_arrays(dm, "test")
    expected = x_test @ weight + intercept
    np.testing.assert_allclose(predictions, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"score": "accuracy"}, "score"),
        ({"solver": "qr"}, "solver"),
        ({"n_folds": 1}, "n_folds"),
        ({"per_voxel": "no"}, "per_voxel"),  # a string is not a boolean (it acted as True)
        ({"feature_key": []}, "feature_key"),
        ({"feature_key": ["a", "b"], "band_ratios": []}, "band_ratios"),
    ],
)
def test_settings_are_checked_when_the_encoder_is_made(settings, message):
    with pytest.raises(ParameterError, match=message):
        LinearEncoder(**settings)
