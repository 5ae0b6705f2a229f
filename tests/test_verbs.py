"""Every built-in config × every verb, as a user types them, in a fresh folder outside the checkout.

``neurotorch fit --config NAME`` (tiny data through command-line overrides) must leave
``last.ckpt`` and print its ``checkpoint:``, ``metrics:`` and ``plot:`` lines; ``validate``,
``test`` and ``predict`` with that checkpoint must work, ``test`` must reproduce the fit's test
report, and ``predict`` must write predictions with their item ids that equal an independent
computation from the checkpoint and the files on disk (features @ weight + bias for the
encoders, scikit-learn's isotonic regression for the calibrator, Fisher z of ``np.corrcoef`` for
the lesion network model). Without ``--ckpt_path`` the evaluations are usage errors that write
nothing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from feature_models import RESNET18_LAYERS, resnet18_feature_specs, resnet18_features
from scipy.stats import norm

from neurotorch.cli import main
from neurotorch.cli.configs import resolve_config

# the fewest overrides that make a built-in config tiny (names every DataModule keeps)
TINY_CALIBRATION = {"train_length": 64, "val_length": 32, "test_length": 32, "batch_size": 16}


def overrides(name: str, laion_root: Path) -> list[str]:
    """Command-line overrides that put a built-in config on tiny data."""
    tiny = ["--data.init_args.data_dir", str(laion_root), "--data.init_args.batch_size", "16"]
    if name == "encoder_features":  # the ResNet-18 with seeded random weights: no download
        features = ["CLIP", *resnet18_feature_specs()]  # one band ratio: 4 spaces, a short grid
        return [
            *tiny,
            "--data.init_args.features",
            json.dumps(features),
            "--model.init_args.band_ratios",
            "[1.0]",
        ]
    if name.startswith("encoder"):
        return tiny
    if name == "calibrator":
        return [
            arg for k, v in TINY_CALIBRATION.items() for arg in (f"--data.init_args.{k}", str(v))
        ]
    return ["--trainer.max_epochs", "1"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def numbers(report: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested report, by their key path."""
    flat = {}
    for key, value in report.items():
        if isinstance(value, dict):
            flat.update(numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, list):
            flat.update({f"{prefix}{key}/{k}": v for k, v in enumerate(value)})
        elif isinstance(value, int | float):
            flat[f"{prefix}{key}"] = value
    return flat


def printed(out: str, label: str) -> Path:
    """The path printed on the last ``label:`` line of a run's standard output (a calibrator's
    fit reports validation, then test)."""
    found = re.findall(rf"^{label}:\s+(\S+)", out, re.M)
    assert found, (label, out)
    return Path(found[-1])


# -- independent computations of the predictions -------------------------------------------------


def check_encoder(predictions: dict, state: dict, laion_root: Path, spaces: list[str]) -> None:
    """predictions == features @ weight + bias, with the features read from the embedding files
    by the predicted rows' image names."""
    parts = []
    for space in spaces:
        if space in RESNET18_LAYERS:  # an extracted space: the model run by hand
            names = predictions["image_name"].tolist()
            parts.append(resnet18_features(laion_root, names)[space])
            continue
        with h5py.File(laion_root / "stimuli" / f"task-images_desc-{space}_embeddings.h5") as f:
            ids = [name.decode() for name in f["image_ids"][:]]
            rows = [ids.index(name) for name in predictions["image_name"]]
            parts.append(f["embedding"][:][rows].astype(np.float32).astype(np.float64))
    features = np.concatenate(parts, axis=1)
    expected = features @ state["weight"].numpy() + state["bias"].numpy()
    got = predictions["prediction"]
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert predictions["voxel"].shape == (got.shape[1],)
    assert {"subject", "session", "trial"} <= set(predictions)
    assert set(predictions["subject"]) == {"sub-01"}
    pairs = list(zip(predictions["session"], predictions["trial"], strict=True))
    assert len(set(pairs)) == len(pairs), "each trial predicted once"
    # every test trial of the split, read from the split file and the trials tables
    split = json.loads((laion_root / "splits" / "shared" / "random_0.json").read_text())
    test_images = set(split["variants"][0]["test_ids"])
    tables = (laion_root / "derivatives").rglob("sub-01_ses-*_desc-SingletrialBetas_trials.tsv")
    shown = [label for t in tables for label in pd.read_csv(t, sep="\t")["label"]]
    expected_rows = Counter(label for label in shown if label in test_images)
    assert Counter(predictions["image_name"].tolist()) == expected_rows


def check_calibrator(predictions: dict, state: dict, datamodule_args: dict) -> None:
    """The fitted map equals scikit-learn's isotonic regression of the training trials' empirical
    coverage; the half-widths are z(g⁻¹(level)) · sqrt(var / T) of each predicted trial."""
    from sklearn.isotonic import IsotonicRegression

    from neurotorch.lightning import CalibrationDataModule
    from neurotorch.meeg.calibration import FIT_LEVELS

    dm = CalibrationDataModule(**datamodule_args)
    scores = []
    for batch in dm.dataloader("train"):
        x, mean = batch["x_true"].double().mean(-1), batch["mean"].double().mean(-1)
        std = np.sqrt(batch["var"].double().numpy() / batch["mean"].shape[-1])
        scores.append((np.abs((x - mean).numpy()) / std).ravel())
    scores = np.concatenate(scores)
    empirical = (scores[None, :] <= norm.ppf((1 + FIT_LEVELS) / 2)[:, None]).mean(1)
    expected = IsotonicRegression(increasing=True).fit(FIT_LEVELS, empirical).predict(FIT_LEVELS)
    fitted = state["fitted"].numpy()
    np.testing.assert_allclose(fitted[1:-1], expected, atol=3 / scores.size)
    curve_x = np.concatenate([[0.0], FIT_LEVELS, [1.0]])
    assert np.all(np.diff(fitted) > 0), "a strictly increasing map: its inverse is interpolation"
    levels = predictions["level"]
    nominal = np.interp(levels, fitted, curve_x)
    by_index = {}
    for batch in dm.dataloader("test"):
        for k, index in enumerate(batch["index"].tolist()):
            by_index[index] = (batch["var"][k].double().numpy(), batch["mean"][k].double().numpy())
    for row, index in enumerate(predictions["index"]):
        var, mean = by_index[int(index)]
        std = np.sqrt(var / mean.shape[-1])
        width = norm.ppf((1 + nominal) / 2)[None, :] * std[:, None]
        np.testing.assert_allclose(predictions["half_width"][row], width, rtol=1e-4)
        np.testing.assert_allclose(predictions["center"][row], mean.mean(-1), rtol=1e-4, atol=1e-6)
    assert sorted(predictions["index"].tolist()) == sorted(by_index)


def check_lnm(predictions: dict, state: dict, connectome: Path) -> None:
    """Predicted maps are one-hot @ U @ V + b; observed maps are the mean over the batch's subjects
    of arctanh of np.corrcoef between the seed voxel and every voxel."""
    from neurotorch.connectome import ConnectomeBatches

    encoder, decoder, bias = (state[k].double().numpy() for k in ("encoder", "decoder", "bias"))
    seeds = predictions["seed_voxel"]
    np.testing.assert_allclose(
        predictions["predicted"], encoder[seeds] @ decoder + bias, rtol=1e-4, atol=1e-5
    )
    ids = ConnectomeBatches(connectome / "batches").subject_ids
    series = np.concatenate(
        [h5py.File(p)["timeseries"][:] for p in sorted((connectome / "batches").glob("*.h5"))]
    ).astype(np.float64)
    for row, (seed, subjects) in enumerate(zip(seeds, predictions["subjects"], strict=True)):
        maps = []
        for subject in subjects.split(","):
            ts = series[ids.index(subject)]
            r = np.corrcoef(ts[:, seed], ts.T)[0, 1:]
            maps.append(np.arctanh(np.clip(r, -0.9999999, 0.9999999)))
        others = np.arange(len(r)) != seed
        np.testing.assert_allclose(
            predictions["observed"][row][others], np.mean(maps, 0)[others], atol=1e-4
        )


# -- the matrix --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["encoder", "encoder_stream", "encoder_banded", "encoder_features", "calibrator", "lnm"]
)
def test_every_verb_of_a_builtin_config(name, tiny_laion_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a fresh folder: the config is found by its name
    args = ["--config", name, *overrides(name, tiny_laion_root)]
    status, out, _ = run(capsys, "fit", *args)
    assert status == 0
    checkpoint = printed(out, "checkpoint")
    assert checkpoint == Path("runs", name, "version_0", "checkpoints", "last.ckpt")
    assert checkpoint.is_file() and printed(out, "plot").stat().st_size > 5_000
    assert ("Trainable params" in out) == (name == "lnm")  # no empty summary of closed forms
    fitted_report = json.loads(printed(out, "metrics").read_text())
    assert fitted_report

    status, out, _ = run(capsys, "validate", *args, "--ckpt_path", str(checkpoint))
    assert status == 0 and "val_" in out
    status, out, _ = run(capsys, "test", *args, "--ckpt_path", str(checkpoint))
    assert status == 0
    tested_report = numbers(json.loads(printed(out, "metrics").read_text()))
    assert tested_report == pytest.approx(numbers(fitted_report), rel=1e-6)
    status, out, _ = run(capsys, "predict", *args, "--ckpt_path", str(checkpoint))
    assert status == 0
    path = printed(out, "predictions")
    assert path.parent.parent == Path("runs", name) and path.name == "predictions.npz"
    with np.load(path, allow_pickle=False) as stored:
        predictions = dict(stored)
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]
    if name.startswith("encoder"):
        spaces = {
            "encoder_banded": ["CLIP", "DINOv2"],
            "encoder_features": ["CLIP", *RESNET18_LAYERS],
        }
        spaces = spaces.get(name, ["CLIP"])
        check_encoder(predictions, state, tiny_laion_root, spaces)
    elif name == "calibrator":
        settings = yaml.safe_load(Path(resolve_config(name)).read_text())["data"]["init_args"]
        check_calibrator(predictions, state, {**settings, **TINY_CALIBRATION})
    else:
        from neurotorch.synthetic.resolve import make_synthetic

        check_lnm(predictions, state, make_synthetic("connectome", "tiny", 0))


def test_predict_runs_on_the_part_named_on_the_command_line(tiny_laion_root, tmp_path, capsys):
    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as patch:
        patch.chdir(tmp_path)
        args = ["--config", "encoder", *overrides("encoder", tiny_laion_root)]
        status, out, _ = run(capsys, "fit", *args, "--test_after_fit", "false")
        assert status == 0
        checkpoint = str(printed(out, "checkpoint"))
        predict = ["predict", *args, "--ckpt_path", checkpoint, "--data.init_args.predict_part"]
        status, out, _ = run(capsys, *predict, "val")
        assert status == 0
        with np.load(printed(out, "predictions"), allow_pickle=False) as stored:
            images = set(stored["image_name"].tolist())
        status, _, err = run(capsys, *predict, "tests")
    split = json.loads((tiny_laion_root / "splits" / "shared" / "random_0.json").read_text())
    assert images and images <= set(split["variants"][0]["train_ids"])  # validation images
    assert status == 2 and "predict_part='tests' is not accepted" in err


@pytest.mark.parametrize("verb", ["validate", "test", "predict"])
def test_evaluating_a_model_never_fitted_is_a_usage_error_that_writes_nothing(
    verb, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, verb, "--config", "encoder")
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {verb} needs a fitted model")
    assert "--ckpt_path" in err and out == ""
    assert list(tmp_path.iterdir()) == []  # no runs/encoder/version_N, no data


def test_a_missing_checkpoint_is_named_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, _, err = run(capsys, "test", "--config", "lnm", "--ckpt_path", "nowhere/last.ckpt")
    assert status == 1 and err == (
        "error: --ckpt_path nowhere/last.ckpt: no such file; give the last.ckpt that neurotorch "
        "fit printed.\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_checkpoint_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("not a checkpoint\n")
    status, _, err = run(capsys, "test", "--config", "calibrator", "--ckpt_path", "notes.txt")
    assert status == 1 and err == (
        "error: --ckpt_path notes.txt is not a checkpoint (a file written by torch.save, as "
        "Lightning writes them); give the last.ckpt that neurotorch fit printed.\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_run_never_overwrites_the_files_of_its_folder(tmp_path, monkeypatch, capsys):
    """A logger version given twice, or no logger in a folder with a config of one's own: the
    run is refused before it writes anything (it replaced config.yaml, the user's --config)."""
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "configs", "copy", "lnm", "config.yaml")[0] == 0
    with open("config.yaml", "a") as own:
        own.write("# my notes\n")
    Path("metrics.json").write_text('{"mine": 1}')
    before = {name: Path(name).read_bytes() for name in ("config.yaml", "metrics.json")}
    no_logger = ["--trainer.logger", "false", "--trainer.max_epochs", "1"]
    status, _, err = run(capsys, "fit", "--config", "config.yaml", *no_logger)
    assert status == 1 and "already holds config.yaml, metrics.json" in err
    assert {name: Path(name).read_bytes() for name in before} == before

    fixed = ["--config", "lnm", "--trainer.max_epochs", "1"]
    fixed += ["--trainer.logger.init_args.version", "first"]
    assert run(capsys, "fit", *fixed)[0] == 0
    folder = tmp_path / "runs" / "lnm" / "first"
    first = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert folder / "config.yaml" in first and folder / "checkpoints" / "last.ckpt" in first
    status, _, err = run(capsys, "fit", *fixed, "--model.init_args.lr", "0.5")
    assert status == 1 and "checkpoints/last.ckpt, config.yaml, lnm_test.png, metrics.json" in err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == first
    # a folder with a checkpoint and a figure of one's own (no config): refused as well
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "checkpoints" / "last.ckpt").write_bytes(b"my checkpoint")
    (mine / "lnm_test.png").write_bytes(b"my figure")
    monkeypatch.chdir(mine)
    status, _, err = run(capsys, "fit", "--config", "lnm", *no_logger)
    assert status == 1 and "already holds checkpoints/last.ckpt, lnm_test.png" in err
    assert (mine / "checkpoints" / "last.ckpt").read_bytes() == b"my checkpoint"
    assert (mine / "lnm_test.png").read_bytes() == b"my figure"


@pytest.mark.slow
def test_model_options_on_the_command_line_win_over_the_checkpoint(tmp_path, monkeypatch, capsys):
    """Lightning sets the model's options to the checkpoint's hyperparameters, dropping an
    evaluation setting asked for on the command line; what is asked for is what runs, and what
    is not asked for comes from the checkpoint."""
    monkeypatch.chdir(tmp_path)
    args = ["--config", "calibrator", *overrides("calibrator", tmp_path)]
    status, out, _ = run(capsys, "fit", *args, "--test_after_fit", "false")
    assert status == 0
    checkpoint = str(printed(out, "checkpoint"))
    asked = ["--model.init_args.coverage_mode", "pointwise", "--model.init_args.output_dir", "mine"]
    status, out, _ = run(capsys, "test", *args, "--ckpt_path", checkpoint, *asked)
    assert status == 0 and printed(out, "metrics") == Path("mine", "calibration_test.json")
    report = Path("mine", "calibration_test.json").read_bytes()
    status, _, err = run(capsys, "test", *args, "--ckpt_path", checkpoint, *asked)
    assert status == 1 and "mine already holds calibration_test.json" in err  # not replaced
    assert Path("mine", "calibration_test.json").read_bytes() == report
    status, out, _ = run(capsys, "test", *args, "--ckpt_path", checkpoint)
    assert status == 0 and printed(out, "metrics").parent == Path("runs", "calibrator", "version_2")
    used = [
        yaml.safe_load(Path("runs", "calibrator", f"version_{v}", "config.yaml").read_text())
        for v in (1, 2)
    ]
    modes = [u["model"]["init_args"]["coverage_mode"] for u in used]
    assert modes == ["pointwise", "time_averaged"]


def quiet_trainer(root: Path):
    """A trainer whose reports go to ``root`` (never the current folder)."""
    import lightning as L

    return L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=root
    )


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_models_refuse_to_evaluate_before_they_are_fitted(
    stage, tiny_laion_root, tmp_path, record_property
):
    from neurotorch.errors import ParameterError
    from neurotorch.lightning import (
        CalibrationDataModule,
        ConnectomeDataModule,
        LaionFMRIDataModule,
    )
    from neurotorch.models import (
        IsotonicCalibrator,
        LesionNetworkModel,
        LinearEncoder,
        NeuralCalibrator,
    )

    encoder_data = LaionFMRIDataModule(
        data_dir=str(tiny_laion_root), voxels={"roi": "FFA1"}, batch_size=64
    )
    calibration_data = CalibrationDataModule(
        leadfield={"n_sources": 30},
        posterior={"gamma": "oracle"},
        nnz=[1, 3],
        train_length=8,
        val_length=8,
        test_length=8,
        batch_size=8,
    )
    connectome_data = ConnectomeDataModule(batch_size=2)
    cases = [
        (LinearEncoder(), encoder_data),
        (IsotonicCalibrator(), calibration_data),
        (NeuralCalibrator(), calibration_data),  # random initial weights: nothing fitted yet
        (LesionNetworkModel(), connectome_data),
    ]
    for model, data in cases:
        with pytest.raises(ParameterError, match=f"cannot {stage}.*not fitted.*ckpt_path"):
            getattr(quiet_trainer(tmp_path), stage)(model, data)
    record_property("fault", "named")


@pytest.mark.slow
def test_a_step_trained_model_counts_its_batches_and_evaluates_once_trained(tmp_path):
    import lightning as L

    from neurotorch.lightning import ConnectomeDataModule
    from neurotorch.models import LesionNetworkModel

    data = ConnectomeDataModule(batch_size=2, val_fraction=0.0)
    model = LesionNetworkModel()
    fit = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, max_steps=3,
        default_root_dir=tmp_path, enable_checkpointing=False,
    )  # fmt: skip
    fit.fit(model, data)
    assert int(model.trained_batches) == 3
    fit.save_checkpoint(tmp_path / "trained.ckpt")
    quiet_trainer(tmp_path).test(model, data)  # trained: evaluated
    restored = LesionNetworkModel.load_from_checkpoint(tmp_path / "trained.ckpt")
    assert int(restored.trained_batches) == 3
    old = torch.load(tmp_path / "trained.ckpt", weights_only=False)  # written before the count
    del old["state_dict"]["trained_batches"]
    torch.save(old, tmp_path / "old.ckpt")
    assert int(LesionNetworkModel.load_from_checkpoint(tmp_path / "old.ckpt").trained_batches) == 3


def test_the_encoder_report_refuses_a_voxel_table_of_other_voxels(record_property):
    import pandas as pd

    from neurotorch.errors import ShapeMismatchError
    from neurotorch.models.encoder_report import summarise_encoder

    r = np.linspace(0, 1, 695)
    table = pd.DataFrame({"voxel": np.arange(976), "roi": "FFA1"})
    with pytest.raises(ShapeMismatchError, match="976 rows but the encoder scored 695 voxels"):
        summarise_encoder(r, r**2, voxel_table=table)
    assert summarise_encoder(r, r**2, voxel_table=table[:695])["per_roi"]["FFA1"]["n_voxels"] == 695
    record_property("fault", "named")


@pytest.mark.slow
def test_lesion_network_test_metrics_under_ddp_equal_one_process(tmp_path):
    """Under DDP every rank tests its share of the test subjects; the metrics gather all of
    them (rank 0 wrote its own half) and each batch's seed voxels follow its subjects, not its
    position on a rank (the ranks drew the same seeds)."""
    import json

    import lightning as L

    from neurotorch.lightning import ConnectomeDataModule
    from neurotorch.models import LesionNetworkModel

    def tested(devices: int) -> dict:
        data = ConnectomeDataModule(batch_size=1, test_fraction=0.6)  # 4 test subjects: no padding
        model = LesionNetworkModel(
            rank=4, n_seeds=8, seed=0, output_dir=str(tmp_path / f"{devices}")
        )
        model.trained_batches += 1  # its initial weights, evaluated as if trained
        L.Trainer(
            accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
            logger=False, enable_progress_bar=False, enable_model_summary=False,
        ).test(model, data, verbose=False)  # fmt: skip
        return json.loads((tmp_path / f"{devices}" / "metrics.json").read_text()), data

    single, data = tested(1)
    data.setup("test")
    n_test = len(data.subject_splits()["test"])
    assert n_test == 4 and single["n_seeds"] == 8 * n_test  # one batch per test subject
    ddp, _ = tested(2)
    assert ddp["n_seeds"] == single["n_seeds"]
    assert ddp["mse"] == pytest.approx(single["mse"], rel=1e-6)
    assert ddp["median_map_r"] == pytest.approx(single["median_map_r"], rel=1e-6, abs=1e-9)
