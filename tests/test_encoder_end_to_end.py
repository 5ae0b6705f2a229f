"""The walking skeleton: train the ridge encoder on the tiny synthetic dataset and check what it
recovers against the ground truth the generator saved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from encoder_helpers import fit_and_test_encoder, ground_truth_rows

from neurotorch.cli import main
from neurotorch.lightning import LaionFMRIDataModule
from neurotorch.models import LinearEncoder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tiny_laion_root, tmp_path_factory):
    dm = LaionFMRIDataModule(data_dir=str(tiny_laion_root), subject="sub-01", batch_size=64)
    model = fit_and_test_encoder(dm, tmp_path_factory.mktemp("encoder"))
    return dm, model


def test_recovers_attainable_correlation(trained, tiny_laion_root):
    dm, model = trained
    truth = ground_truth_rows(tiny_laion_root, "sub-01", dm.voxel_table["voxel"].to_numpy())
    r, signal = model.per_voxel_r(), truth["signal"]
    assert signal.sum() > 50 and (~signal).sum() > 50
    assert np.median(r[signal]) >= 0.8 * np.median(truth["attainable_r"][signal])
    assert abs(np.median(r[~signal])) < 0.1


def test_splits_do_not_share_images(trained):
    dm, _ = trained
    parts = [
        set(d.trials["label"])
        for d in (dm.datasets["train"], dm.datasets["val"], dm.datasets["test"])
    ]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_report_files(trained):
    _, model = trained
    out = Path(model.hparams.output_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_voxels"] == len(model.per_voxel_r())
    assert metrics["median_r"] == pytest.approx(float(np.median(model.per_voxel_r())))
    assert (out / "encoder_test.png").stat().st_size > 10_000


def test_cli_fit_then_test_from_the_checkpoint(tiny_laion_root, tmp_path, capsys):
    common = [
        *("--config", str(REPO / "configs" / "encoder.yaml")),
        *("--data.init_args.data_dir", str(tiny_laion_root)),
        *("--data.init_args.voxels.roi", "[face, V1v]"),
        *("--trainer.logger.init_args.save_dir", str(tmp_path)),
        *("--trainer.enable_progress_bar", "false"),
    ]
    main(["fit", *common])
    printed = capsys.readouterr().out  # results go to standard output
    assert "median r =" in printed and "fraction of noise ceiling" in printed
    fitted = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert set(fitted["per_roi"]) <= {"FFA1", "FFA2", "OFA", "pSTSfaces", "V1v"}
    assert fitted["median_r"] > 0.3

    checkpoint = next(tmp_path.rglob("last.ckpt"))
    main(["test", *common, "--ckpt_path", str(checkpoint)])
    reports = sorted(tmp_path.rglob("metrics.json"))
    assert len(reports) == 2
    restored = json.loads(reports[-1].read_text())
    assert restored["median_r"] == pytest.approx(fitted["median_r"], rel=1e-6)
    capsys.readouterr()
    # the weights predict the fitted voxels of the fitted subject: nothing else is scored
    for verb in ("test", "predict"):
        for other in (
            ["--data.init_args.voxels.roi", "[V1v]"],
            ["--data.init_args.subject", "sub-02"],
        ):
            assert main([verb, *common, *other, "--ckpt_path", str(checkpoint)]) == 1
            error = capsys.readouterr().err
            assert "fitted on" in error and ("voxels of sub-01" in error or "hold sub-02" in error)
    assert len(sorted(tmp_path.rglob("metrics.json"))) == 2
    assert not list(tmp_path.rglob("predictions.npz"))


def test_refuses_to_mix_subjects(tiny_laion_root):
    dm = LaionFMRIDataModule(
        data_dir=str(tiny_laion_root),
        subject=["sub-01", "sub-02"],
        voxels={"roi": "face"},
        batch_size=16,
    )
    with pytest.raises(ValueError, match="one subject"):
        fit_and_test_encoder(dm, tiny_laion_root.parent / "mixed")


def test_a_checkpoint_refuses_other_voxels_of_the_same_count(tiny_laion_root, tmp_path):
    """The count alone cannot tell: two masks of 200 voxels each, none shared. Evaluated from
    its checkpoint on the other mask, the encoder would score its columns against other voxels."""
    import lightning as L
    import nibabel as nib

    from neurotorch.errors import EncoderConfigError
    from neurotorch.fmri import layout

    brain = np.asarray(nib.load(tiny_laion_root / layout.anatomical_brain_mask("sub-01")).dataobj)
    inside = np.flatnonzero(brain > 0)
    masks = [np.zeros(brain.shape, dtype=bool) for _ in range(2)]
    masks[0].flat[inside[:200]] = masks[1].flat[inside[200:400]] = True

    def data(mask):
        return LaionFMRIDataModule(
            data_dir=str(tiny_laion_root), voxels={"mask": mask}, features="CLIP", batch_size=64
        )

    fit_and_test_encoder(data(masks[0]), tmp_path / "fit").trainer.save_checkpoint(
        tmp_path / "fit.ckpt"
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.test(
        LinearEncoder(output_dir=str(tmp_path / "a")),
        data(masks[0]),
        ckpt_path=tmp_path / "fit.ckpt",
    )
    with pytest.raises(EncoderConfigError, match="200 voxels of sub-01.*select 200 \\(0 of"):
        trainer.test(LinearEncoder(), data(masks[1]), ckpt_path=tmp_path / "fit.ckpt")


def test_without_a_validation_part_the_fit_uses_the_training_trials(tiny_laion_root, tmp_path):
    """``val_fraction=0``: no validation epoch ends to fit on, so the fit happens at the end of
    the training epoch, on the training trials: the brute-force ridge of those trials."""
    import lightning as L
    import torch
    from ridge_reference import reference_fit

    from neurotorch.models.ridge import folds_of

    dm = LaionFMRIDataModule(
        data_dir=str(tiny_laion_root),
        subject="sub-01",
        voxels={"roi": "FFA1"},
        trials={"split": "random_0", "val_fraction": 0.0},
        batch_size=64,
    )
    penalties = (0.1, 10.0, 1000.0)
    model = LinearEncoder(penalties=penalties, per_voxel=False)
    L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_checkpointing=False, default_root_dir=tmp_path,
    ).fit(model, dm)  # fmt: skip
    assert model.fitted
    batches = list(dm.dataloader("train", shuffle=False))
    x = torch.cat([b["embedding"] for b in batches]).double().numpy()
    y = torch.cat([b["betas"] for b in batches]).double().numpy()
    names = [name for b in batches for name in b["image_name"]]
    folds = folds_of(names, 5).numpy()
    weight, intercept, penalty = reference_fit(
        x, y, folds, penalties, [x.shape[1]], (1.0,), "r2", per_target=False
    )
    np.testing.assert_allclose(model.penalty.numpy(), penalty, rtol=1e-12)
    scale = np.abs(weight).max()
    np.testing.assert_allclose(model.weight.double().numpy(), weight, rtol=0, atol=1e-6 * scale)


def test_validation_inside_the_training_epoch_is_refused(tiny_laion_root, tmp_path):
    """A validation in the middle of the epoch would fit on the trials drawn so far and the
    final fit on the rest only; the encoder refuses it before the first batch is fitted."""
    import lightning as L

    from neurotorch.errors import EncoderConfigError

    dm = LaionFMRIDataModule(
        data_dir=str(tiny_laion_root), subject="sub-01", voxels={"roi": "FFA1"}, batch_size=16
    )
    run = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_checkpointing=False, default_root_dir=tmp_path, val_check_interval=0.5,
    )  # fmt: skip
    with pytest.raises(EncoderConfigError, match="val_check_interval=0.5"):
        run.fit(LinearEncoder(), dm)


def test_a_resume_inside_a_training_epoch_is_refused(tiny_laion_root, tmp_path):
    """The ridge statistics of the batches before a mid-epoch checkpoint are not in it: a fit
    resumed there would fit on the rest of the epoch only, so it is refused by name."""
    import lightning as L

    from neurotorch.errors import EncoderConfigError

    class SaveAfterTwo(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 1:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    def fit(**options):
        dm = LaionFMRIDataModule(
            data_dir=str(tiny_laion_root), subject="sub-01", voxels={"roi": "FFA1"}, batch_size=16
        )
        trainer = L.Trainer(
            max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
            enable_checkpointing=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
            callbacks=options.pop("callbacks", []),
        )  # fmt: skip
        trainer.fit(LinearEncoder(per_voxel=False), dm, **options)

    fit(callbacks=[SaveAfterTwo()])
    with pytest.raises(EncoderConfigError, match="after 2 batches"):
        fit(ckpt_path=tmp_path / "mid.ckpt")
