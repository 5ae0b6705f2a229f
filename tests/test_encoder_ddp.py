"""Two ranks of a real gloo process group each accumulate half of the trials (in voxel chunks, the
cross-products in scratch files, around each rank's own shift); the statistics summed over the
ranks equal one process's, and the fit and the test ceiling from them equal the numpy references
over all trials."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ridge_reference import make_problem, reference_fit

from neurotorch.models.held_out import CeilingStatistics
from neurotorch.models.ridge import fit_ridge, folds_of
from neurotorch.models.ridge_statistics import RidgeStatistics

PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)
N_FOLDS = 5
N_TARGETS = 41  # chunks of 11: three full ones and a remainder of 8


def accumulate(x, y, names, **settings):
    stats = RidgeStatistics(x.shape[1], y.shape[1], N_FOLDS, **settings)
    ceiling = CeilingStatistics(y.shape[1])
    folds = folds_of(names, N_FOLDS)
    for start in range(0, len(x), 29):
        part = slice(start, start + 29)
        stats.update(torch.from_numpy(x[part]), torch.from_numpy(y[part]), folds[part])
        ceiling.update(torch.from_numpy(y[part]), names[part])
    return stats, ceiling


def rank_main(rank: int, rendezvous: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        x, y, names = make_problem(n_images=71, n_features=13, n_targets=N_TARGETS)
        stats, ceiling = accumulate(
            x[rank::2],
            y[rank::2],
            names[rank::2],
            keep_rows=False,
            voxel_chunk=11,
            on_disk=True,
            buffer_trials=23,
        )
        stats.sum_over_ranks(dist.all_reduce)
        ceiling.sum_over_ranks()
        if rank == 0:
            fit = fit_ridge(stats, penalties=PENALTIES)
            np.savez(
                out,
                *[t.numpy() for t in summed(stats)],
                weight=fit.weight.numpy(),
                intercept=fit.intercept.numpy(),
                penalty=fit.penalty.numpy(),
                ceiling=ceiling.ceiling()["ceiling_r"],
            )
    finally:
        dist.destroy_process_group()


def summed(stats: RidgeStatistics) -> list[torch.Tensor]:
    """Every sum, the shift and the cross-products of all chunks, in a fixed order."""
    cross = torch.cat([stats.xty.read(j) for j in range(len(stats.chunks))], dim=2)
    sums = [stats.count, stats.sum_x, stats.xtx, stats.sum_y, stats.sum_yy, cross]
    return [*sums, stats.shift_x, stats.shift_y]


def numpy_ceiling(y: np.ndarray, names: list[str]) -> np.ndarray:
    labels = np.asarray(names)
    images = np.unique(labels)
    within = sum(((y[labels == i] - y[labels == i].mean(0)) ** 2).sum(0) for i in images)
    noise = within / (len(y) - len(images))
    return np.sqrt(np.clip(1 - noise / y.var(0, ddof=1), 0, None))


@pytest.mark.slow
def test_statistics_summed_over_two_ranks_equal_one_process(tmp_path):
    out = tmp_path / "rank0.npz"
    mp.spawn(rank_main, args=(str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    saved = np.load(out)
    x, y, names = make_problem(n_images=71, n_features=13, n_targets=N_TARGETS)
    one_process, _ = accumulate(x, y, names)
    shift_x, shift_y = saved["arr_6"], saved["arr_7"]
    assert np.abs(shift_x - one_process.shift_x.numpy()).max() > 0.1  # the ranks' mean shift
    one_process.rebase(torch.from_numpy(shift_x), torch.from_numpy(shift_y))
    for i, tensor in enumerate(summed(one_process)):
        np.testing.assert_allclose(saved[f"arr_{i}"], tensor.numpy(), rtol=1e-10, atol=1e-8)
    folds = folds_of(names, N_FOLDS).numpy()
    weight, intercept, penalty = reference_fit(x, y, folds, PENALTIES, [x.shape[1]], [], "r")
    np.testing.assert_array_equal(saved["penalty"], penalty)
    np.testing.assert_allclose(saved["weight"], weight, rtol=0, atol=1e-8 * np.abs(weight).max())
    np.testing.assert_allclose(
        saved["intercept"], intercept, rtol=0, atol=1e-8 * np.abs(intercept).max()
    )
    np.testing.assert_allclose(saved["ceiling"], numpy_ceiling(y, names), rtol=1e-10)


@pytest.mark.slow
def test_lightning_ddp_fit_test_and_predict_equal_the_references(tiny_laion_root, tmp_path):
    import json

    import lightning as L
    from encoder_helpers import split_arrays

    from neurotorch.lightning import LaionFMRIDataModule
    from neurotorch.models import LinearEncoder
    from neurotorch.models.predictions import PredictionWriter

    # 156 training, 20 validation and 64 test trials: no rank is padded with repeated trials.
    # The training epoch runs on the ranks; the test runs in fresh ranks from the returned model.
    settings = dict(
        data_dir=str(tiny_laion_root), subject="sub-01", voxels={"roi": "FFA1"}, batch_size=16
    )
    dm = LaionFMRIDataModule(**settings)
    model = LinearEncoder(penalties=PENALTIES, per_voxel=False, output_dir=str(tmp_path))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
        callbacks=[PredictionWriter(output_dir=str(tmp_path / "predict"))],
    )
    trainer.fit(model, dm)
    trainer.test(model, dm)
    # predict the validation part (20 trials: batches of 16 and 4, one a rank)
    trainer.predict(model, LaionFMRIDataModule(**settings, predict_part="val"))
    dm.setup("fit")
    parts = [split_arrays(dm, part) for part in ("train", "val")]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    names = [n for p in parts for n in p[2]]
    folds = folds_of(names, N_FOLDS).numpy()
    weight, intercept, _ = reference_fit(x, y, folds, PENALTIES, [x.shape[1]], [], "r2", False)
    # the spawned ranks' fit, returned to this process through the model's state dict
    np.testing.assert_allclose(
        model.weight.numpy(), weight, rtol=0, atol=1e-8 * np.abs(weight).max()
    )
    np.testing.assert_allclose(
        model.bias.numpy(), intercept, rtol=0, atol=1e-8 * np.abs(intercept).max()
    )
    # each rank wrote the rows it predicted; together every validation trial once, with ids
    ranks = [dict(np.load(tmp_path / "predict" / f"predictions-rank{r}.npz")) for r in (0, 1)]
    assert [len(r["trial"]) for r in ranks] == [16, 4]
    predicted = {
        (str(session), int(trial)): row
        for r in ranks
        for session, trial, row in zip(r["session"], r["trial"], r["prediction"], strict=True)
    }
    val_ids = [
        (str(session), int(trial))
        for batch in dm.dataloader("val", shuffle=False)
        for session, trial in zip(batch["session"], batch["trial"], strict=True)
    ]
    assert sorted(predicted) == sorted(val_ids) and len(val_ids) == 20
    expected_val = parts[1][0] @ weight + intercept
    got_val = np.stack([predicted[key] for key in val_ids])
    np.testing.assert_allclose(
        got_val, expected_val, rtol=0, atol=1e-5 * np.abs(expected_val).max()
    )
    x_test, y_test, test_names = split_arrays(dm, "test")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = x_test @ weight + intercept
    pc, yc = expected - expected.mean(0), y_test - y_test.mean(0)
    r = (pc * yc).sum(0) / np.sqrt((pc**2).sum(0) * (yc**2).sum(0))
    assert metrics["median_r"] == pytest.approx(np.median(r), abs=1e-6)
    assert metrics["median_ceiling_r"] == pytest.approx(
        np.median(numpy_ceiling(y_test, test_names)), rel=1e-9
    )
