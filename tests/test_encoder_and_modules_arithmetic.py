"""Arithmetic of the ridge encoder's cross-validation scores, its test statistics and report, the
DataModules' loaders, the unit engine's job-array listing and the synthetic writer, each against
an independent computation: numpy by hand, ``np.corrcoef``, scikit-learn, a hand count."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from feature_models import one_thread  # noqa: F401 - a fixture
from record_ids import trainer as quiet_trainer
from ridge_reference import make_problem

from neurotorch.models.encoder_report import MIN_CEILING_R, summarise_encoder
from neurotorch.models.held_out import (
    CeilingStatistics,
    CorrelationStatistics,
    median_fraction_margin,
)
from neurotorch.models.ridge import fit_ridge, folds_of
from neurotorch.models.ridge_statistics import RidgeStatistics

PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)


# -- the ridge fit's cross-validation score ------------------------------------------------------


def names_in_folds(n: int, folds: set[int], n_folds: int) -> list[str]:
    """``n`` image names whose fold (crc32 of the name modulo ``n_folds``) is one of ``folds``."""
    names, i = [], 0
    while len(names) < n:
        name = f"pic{i:05d}.jpg"
        if zlib.crc32(name.encode()) % n_folds in folds:
            names.append(name)
        i += 1
    return names


def by_hand_cv_score(x, y, folds, penalty):
    """Pearson r on each non-empty held-out fold of a centred closed-form ridge fit on the other
    trials, averaged over those folds; penalty ``p`` × the mean eigenvalue of the centred
    covariance of all trials (one space), one penalty per target."""
    centred = x - x.mean(0)
    mean_eig = np.trace(centred.T @ centred) / x.shape[1]
    used = np.unique(folds)
    total = np.zeros(y.shape[1])
    for k in used:
        train, held = folds != k, folds == k
        xm, ym = x[train].mean(0), y[train].mean(0)
        xc, yc = x[train] - xm, y[train] - ym
        for t in range(y.shape[1]):
            lam = penalty[t] * mean_eig
            w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ yc[:, t])
            pred = x[held] @ w + ym[t] - xm @ w
            total[t] += np.corrcoef(pred, y[held, t])[0, 1]
    return total / len(used)


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_cv_score_is_the_mean_over_the_folds_that_hold_trials(solver):
    """Five folds of which only three hold trials: the chosen penalties' cross-validation score
    is their mean r over those three held-out folds, not a mean over five."""
    n_images, n_features = (61, 7) if solver == "primal" else (13, 60)
    x, y, names = make_problem(n_images=n_images, n_features=n_features, n_targets=6, seed=5)
    chosen = names_in_folds(n_images, {0, 2, 3}, 5)
    names = [chosen[int(n[3:6])] for n in names]  # img012.jpg -> the 13th chosen name
    folds = folds_of(names, 5)
    assert sorted(set(folds.tolist())) == [0, 2, 3]
    stats = RidgeStatistics(x.shape[1], y.shape[1], n_folds=5)
    for start in range(0, len(x), 29):
        part = slice(start, start + 29)
        stats.update(torch.from_numpy(x[part]), torch.from_numpy(y[part]), folds[part])
    fit = fit_ridge(stats, penalties=PENALTIES, score="r", solver=solver)
    assert fit.solver == solver
    expected = by_hand_cv_score(x, y, folds.numpy(), fit.penalty[0].numpy())
    np.testing.assert_allclose(fit.cv_score.numpy(), expected, rtol=1e-8, atol=1e-10)


def test_folds_are_the_crc32_of_the_image_name_in_every_process():
    """The fold of a trial is ``crc32(image name) % n_folds``: the same in every process (DDP
    ranks, a resumed run), whatever Python's string-hash seed."""
    import subprocess
    import sys

    names = [f"img{i:03d}.jpg" for i in range(40)]
    expected = [zlib.crc32(name.encode()) % 5 for name in names]
    assert folds_of(names, 5).tolist() == expected
    script = (
        "import sys; from neurotorch.models.ridge import folds_of;"
        "print(folds_of(sys.argv[1:], 5).tolist())"
    )
    for seed in ("1", "2"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script, *names], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == str(expected)


# -- test statistics: per-voxel scores, the noise ceiling, the report ----------------------------


def test_scores_summed_over_batches_equal_numpy_and_scikit_learn_over_all_rows():
    from sklearn.metrics import mean_squared_error, r2_score

    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 9)) * rng.uniform(0.5, 3, 9) + rng.normal(0, 5, 9)
    pred = 0.6 * y + rng.normal(size=y.shape) + 0.3
    stats = CorrelationStatistics(9)
    for rows in (slice(0, 20), slice(20, 45), slice(45, 50)):  # batches of unequal size
        stats.update(torch.from_numpy(pred[rows]), torch.from_numpy(y[rows]))
    r = [np.corrcoef(pred[:, v], y[:, v])[0, 1] for v in range(9)]
    np.testing.assert_allclose(stats.score("r").numpy(), r, rtol=1e-10)
    np.testing.assert_allclose(
        stats.score("r2").numpy(), r2_score(y, pred, multioutput="raw_values"), rtol=1e-10
    )
    np.testing.assert_allclose(
        stats.score("mse").numpy(),
        -mean_squared_error(y, pred, multioutput="raw_values"),
        rtol=1e-10,
    )


@pytest.mark.parametrize("conversion_chunk", [4096, 4], ids=["one-chunk", "voxel-chunks"])
def test_ceiling_and_its_standard_error_follow_the_documented_formulas(
    conversion_chunk, monkeypatch
):
    """``ĉ² = 1 - σ̂² / var(y)`` with ``σ̂²`` the pooled within-image variance over ``N - I``
    degrees of freedom and ``var(y)`` with ddof 1; ``sd(ĉ) = (1 - ĉ²) sqrt(2 / (N - I)) / (2 ĉ)``;
    the same when a batch is converted a few voxels at a time (as a brain is, 4096 at a time)."""
    from neurotorch.models import held_out

    monkeypatch.setattr(held_out, "CONVERSION_CHUNK", conversion_chunk)
    rng = np.random.default_rng(1)
    repeats = [1, 2, 3, 4, 1, 2, 5, 3, 2, 1, 4]
    image = rng.permutation(np.repeat(np.arange(len(repeats)), repeats))
    signal = rng.normal(size=(len(repeats), 6)) * 2
    y = signal[image] + rng.normal(size=(len(image), 6))
    names = [f"im{i}.png" for i in image]
    stats = CeilingStatistics(6)
    stats.update(torch.from_numpy(y[:13]), names[:13])
    stats.update(torch.from_numpy(y[13:]), names[13:])
    got = stats.ceiling()
    n, n_images = len(y), len(repeats)
    frame = pd.DataFrame(y).assign(image=image)
    within = frame.groupby("image").transform(lambda c: c - c.mean()).pow(2).sum().to_numpy()
    explainable = np.clip(1 - within / (n - n_images) / y.var(0, ddof=1), 0, None)
    assert explainable.min() > 0.3  # every voxel has a ceiling, so the sd is defined
    assert (got["n_rows"], got["n_images"]) == (n, n_images)
    np.testing.assert_allclose(got["explainable"], explainable, rtol=1e-10)
    np.testing.assert_allclose(got["ceiling_r"], np.sqrt(explainable), rtol=1e-10)
    sd = (1 - explainable) * np.sqrt(2 / (n - n_images)) / (2 * np.sqrt(explainable))
    np.testing.assert_allclose(got["ceiling_sd"], sd, rtol=1e-10)


def test_summary_metrics_equal_numpy_over_the_voxels_they_describe():
    rng = np.random.default_rng(2)
    v = 40
    r = rng.uniform(-0.6, 0.8, v)
    r2 = rng.uniform(-0.2, 0.6, v)
    ceiling_r = rng.uniform(0.0, 0.9, v)
    ceiling_r[:6] = 0.05  # below MIN_CEILING_R: out of every ratio
    r[:6] = 0.7  # ... and large, so that counting them would move the medians
    ceiling_sd = rng.uniform(0.01, 0.1, v)
    ceiling = {
        "ceiling_r": ceiling_r,
        "explainable": ceiling_r**2,
        "ceiling_sd": ceiling_sd,
        "n_rows": 90,
        "n_images": 30,
    }
    table = pd.DataFrame({"voxel": np.arange(v) * 3, "roi": np.where(np.arange(v) % 2, "A", "B")})
    penalty = np.stack([rng.choice([0.1, 1.0, 10.0], v), rng.choice([100.0, 1000.0], v)])
    partition = rng.uniform(0, 0.3, (2, v))
    metrics = summarise_encoder(
        r,
        r2,
        ceiling=ceiling,
        voxel_table=table,
        penalty=penalty,
        partition=partition,
        spaces=["CLIP", "DINOv2"],
    )
    usable = ceiling_r >= MIN_CEILING_R
    fraction = r[usable] / ceiling_r[usable]
    signed = np.median(np.sign(fraction) * fraction**2)
    assert signed != np.median(fraction**2)  # negative r: the sign of the squares matters
    assert metrics["n_voxels"] == v
    assert metrics["mean_r"] == pytest.approx(np.mean(r), rel=1e-12)
    assert metrics["median_r"] == pytest.approx(np.median(r), rel=1e-12)
    assert metrics["median_r2"] == pytest.approx(np.median(r2), rel=1e-12)
    assert metrics["n_voxels_above_min_ceiling"] == usable.sum()
    assert metrics["median_fraction_of_ceiling"] == pytest.approx(np.median(fraction), rel=1e-12)
    assert metrics["median_fraction_of_explainable_variance"] == pytest.approx(signed, rel=1e-12)
    for roi in ("A", "B"):
        in_roi = table["roi"].to_numpy() == roi
        kept = in_roi & usable
        assert metrics["per_roi"][roi]["n_voxels"] == in_roi.sum()
        assert metrics["per_roi"][roi]["median_r"] == pytest.approx(np.median(r[in_roi]))
        assert metrics["per_roi"][roi]["median_fraction_of_ceiling"] == pytest.approx(
            np.median(r[kept] / ceiling_r[kept]), rel=1e-12
        )
    for s, space in enumerate(["CLIP", "DINOv2"]):
        described = metrics["feature_spaces"][space]
        assert described["median_penalty"] == np.median(penalty[s])
        assert described["median_variance_share"] == pytest.approx(np.median(partition[s]))
    # the margin: 3 standard errors of a median plus the O(1/N) bias of 1 / ĉ
    relative = ceiling_sd[usable] / ceiling_r[usable]
    spread = np.median(np.abs(fraction) * relative)
    bias = np.median(np.abs(fraction) * relative**2)
    margin = 3 * 1.2533 * spread / np.sqrt(usable.sum()) + bias
    assert metrics["fraction_of_ceiling_margin"] == pytest.approx(margin, rel=1e-12)
    assert median_fraction_margin(fraction, ceiling_r[usable], ceiling_sd[usable]) == margin


# -- the encoder inside Lightning ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ffa1(tiny_laion_root):
    """The FFA1 voxels of sub-01 of the tiny tree, batches of 64."""
    return {
        "data_dir": str(tiny_laion_root),
        "subject": "sub-01",
        "voxels": {"roi": "FFA1"},
        "batch_size": 64,
    }


@pytest.fixture(scope="module")
def fitted_ffa1(ffa1, tmp_path_factory):
    """An encoder fitted on the FFA1 voxels, its data module and trainer."""
    from neurotorch.lightning import LaionFMRIDataModule
    from neurotorch.models import LinearEncoder

    dm = LaionFMRIDataModule(**ffa1)
    out = tmp_path_factory.mktemp("report")
    model = LinearEncoder(penalties=(0.1, 1.0, 10.0), output_dir=str(out))
    run = quiet_trainer(out)  # one epoch, no logger, no checkpoints
    run.fit(model, dm)
    return dm, model, run


def predicted_and_observed(dm, model, part: str):
    from encoder_helpers import split_arrays

    x, y, _ = split_arrays(dm, part)
    return x @ model.weight.numpy() + model.bias.numpy(), y


def numpy_r(pred, y) -> np.ndarray:
    return np.array([np.corrcoef(pred[:, v], y[:, v])[0, 1] for v in range(y.shape[1])])


def test_validating_a_fitted_encoder_logs_the_median_of_numpys_per_voxel_r(fitted_ffa1):
    dm, model, trainer = fitted_ffa1
    (logged,) = trainer.validate(model, dm, verbose=False)
    r = numpy_r(*predicted_and_observed(dm, model, "val"))
    assert abs(np.median(r) - np.mean(r)) > 1e-3  # the median, not another average
    assert logged["val_median_r"] == pytest.approx(np.median(r), rel=1e-6)


def test_the_test_report_holds_numpys_r_and_scikit_learns_r2(fitted_ffa1):
    from sklearn.metrics import r2_score

    dm, model, trainer = fitted_ffa1
    trainer.test(model, dm, verbose=False)
    pred, y = predicted_and_observed(dm, model, "test")
    r, r2 = numpy_r(pred, y), r2_score(y, pred, multioutput="raw_values")
    assert abs(np.median(r2) - np.median(r**2)) > 1e-3  # R², not the squared correlation
    np.testing.assert_allclose(model.test_r, r, rtol=1e-6)
    assert model.test_metrics["median_r"] == pytest.approx(np.median(r), rel=1e-6)
    assert model.test_metrics["median_r2"] == pytest.approx(np.median(r2), rel=1e-6)


@pytest.mark.parametrize("keys", [["embedding"], ["embedding_CLIP", "embedding_DINOv2"]])
def test_the_memory_plan_counts_one_candidate_per_penalty_and_band_weighting(keys, monkeypatch):
    """The preflight sizes the score table by the candidates the fit tries: the penalties times
    every weighting of the further spaces (one space: the penalties alone)."""
    import itertools

    import lightning as L

    from neurotorch.models import LinearEncoder, linear_encoder

    seen = []
    real = linear_encoder.plan_memory
    monkeypatch.setattr(
        linear_encoder, "plan_memory", lambda size, chunk: seen.append(size) or real(size, chunk)
    )
    penalties, ratios = (0.1, 1.0, 10.0, 100.0), (0.5, 1.0, 2.0)
    model = LinearEncoder(penalties=penalties, band_ratios=ratios, feature_key=keys)
    model.trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    model._plan_memory(n_features=12, n_voxels=30, batch_size=8)
    weightings = list(itertools.product([1.0], *[ratios] * (len(keys) - 1)))
    assert seen[0].n_candidates == len(penalties) * len(weightings)


# -- the DataModules' loaders --------------------------------------------------------------------


class Numbered(torch.utils.data.Dataset):
    """Items ``{"part", "index"}`` of one part."""

    def __init__(self, part: str, n: int):
        self.part, self.n = part, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"part": self.part, "index": i}


SIZES = {"train": 23, "val": 9, "test": 11}


def numbered_module(**settings):
    """A DataModule of the base class whose parts are `Numbered` items."""
    from neurotorch.lightning.base import NeurotorchDataModule

    class Parts(NeurotorchDataModule):
        def build_dataset(self, part):
            return Numbered(part, SIZES[part])

    return Parts(**settings)


def served(loader) -> list[tuple[str, int]]:
    return [
        (p, int(i)) for batch in loader for p, i in zip(batch["part"], batch["index"], strict=True)
    ]


@pytest.mark.parametrize("part", ["train", "val", "test"])
def test_predict_serves_its_part_in_order_and_evaluation_parts_are_never_shuffled(part):
    dm = numbered_module(batch_size=4, predict_part=part)
    assert served(dm.predict_dataloader()) == [(part, i) for i in range(SIZES[part])]
    for evaluated in ("val", "test"):
        assert served(dm.dataloader(evaluated)) == [(evaluated, i) for i in range(SIZES[evaluated])]
    training = served(dm.dataloader("train"))
    assert sorted(training) == [("train", i) for i in range(SIZES["train"])]
    assert training != sorted(training)  # the training part is shuffled


def test_the_training_order_is_the_seeded_sampler_of_the_modules_seed():
    from neurotorch.data.sampling import GroupedBatchSampler

    def order(seed: int) -> list[int]:
        sampler = GroupedBatchSampler.for_dataset(
            Numbered("train", SIZES["train"]), 4, shuffle=True, seed=seed
        )
        return [i for batch in sampler for i in batch]

    dm = numbered_module(batch_size=4, seed=3)
    assert [i for _, i in served(dm.dataloader("train"))] == order(3) != order(0)


def test_a_streaming_module_gives_its_seed_and_shuffles_the_training_part_only(ffa1):
    from neurotorch.data.fmri.settings import TRAINING_SHUFFLE_BUFFER
    from neurotorch.lightning import LaionFMRIDataModule

    dm = LaionFMRIDataModule(**ffa1, streaming=True, seed=3)
    train, val, test = (dm.dataset(part) for part in ("train", "val", "test"))
    assert (train.seed, val.seed, test.seed) == (3, 3, 3)
    assert train.read.shuffle_buffer == TRAINING_SHUFFLE_BUFFER
    assert val.read.shuffle_buffer == 0 and test.read.shuffle_buffer == 0
    names = [n for batch in dm.dataloader("test") for n in batch["image_name"]]
    in_order = [n for batch in dm.dataloader("test", shuffle=False) for n in batch["image_name"]]
    assert names == in_order


def test_the_synthetic_dataset_of_a_module_is_written_with_the_modules_seed():
    import json
    from pathlib import Path

    from neurotorch.lightning import LaionFMRIDataModule

    dm = LaionFMRIDataModule(data_dir="synthetic", synthetic={"size": "tiny"}, seed=2)
    root = Path(dm.root.url)
    info = json.loads((root / "_groundtruth" / "dataset.json").read_text())
    assert root.name == "laion-fmri-tiny-seed2" and info["seed"] == 2


# -- the unit engine -----------------------------------------------------------------------------


def test_listed_unit_positions_are_the_job_array_indices(tmp_path):
    """``--list-units`` prints each unit's position; ``--unit K`` (``only=[K]``) runs the unit
    printed at K."""
    from parallel_units import SquaresUnit, runs

    from neurotorch.parallel import run_units, unit_lines

    work = [SquaresUnit(str(tmp_path), k) for k in range(12)]
    lines = unit_lines(work)
    assert [line.split()[0] for line in lines] == [str(k) for k in range(12)]
    listed = lines[10].split()
    assert listed[1] == "todo"
    (result,) = run_units(work, only=[int(listed[0])], progress=False)
    assert result.key == listed[2] and runs(tmp_path) == [listed[2]]
    assert unit_lines(work)[10].split()[1] == "done"


def test_a_unit_done_by_the_time_it_holds_its_lock_is_skipped_not_run_again(tmp_path):
    from parallel_units import SquaresUnit, runs

    from neurotorch.parallel import execute_unit

    unit = SquaresUnit(str(tmp_path), 3)
    assert execute_unit(unit).status == "ran"
    again = execute_unit(unit)  # as a second run finds it once the first released the lock
    assert again.status == "skipped" and again.value is None
    assert runs(tmp_path) == [unit.key]


# -- the synthetic writer ------------------------------------------------------------------------


def test_the_grid_is_centred_on_the_origin():
    import nibabel as nib

    from neurotorch.synthetic.brain import VOXEL_MM, grid_affine

    for shape in [(14, 16, 14), (5, 8, 3)]:
        affine = grid_affine(shape)
        centre = (np.asarray(shape) - 1) / 2
        np.testing.assert_allclose(nib.affines.apply_affine(affine, centre), 0, atol=1e-12)
        corner = nib.affines.apply_affine(affine, [0, 0, 0])
        np.testing.assert_allclose(corner, -centre * VOXEL_MM, rtol=1e-12)


def read_map(path):
    import nibabel as nib

    return nib.load(path).get_fdata()


def test_session_tables_number_runs_from_one_and_r2mean_averages_the_sessions(tiny_laion_root):
    glm = tiny_laion_root / "derivatives/glmsingle-tedana/sub-01"
    session_r2 = []
    for ses in ("ses-01", "ses-02"):
        func = glm / ses / "func"
        table = pd.read_csv(func / f"sub-01_{ses}_task-images_desc-SingletrialBetas_trials.tsv",
                            sep="\t")  # fmt: skip
        n_runs = max(1, round(len(table) / 50))
        runs = table.sort_values("beta_index")["run"].to_numpy()
        assert runs[0] == 1 and runs[-1] == n_runs and np.all(np.diff(runs) >= 0)
        assert set(runs) == set(range(1, n_runs + 1))
        session_r2.append(
            read_map(
                func / f"sub-01_{ses}_task-images_space-T1w_stat-rsquare_desc-R2_statmap.nii.gz"
            )
        )
    mean = read_map(glm / "sub-01_task-images_space-T1w_stat-rsquare_desc-R2mean_statmap.nii.gz")
    brain = np.isfinite(mean)
    assert brain.sum() > 100
    np.testing.assert_allclose(
        mean[brain], np.mean(session_r2, axis=0)[brain], rtol=1e-5, atol=1e-4
    )


def test_repetitions_of_an_image_are_spread_over_the_sessions(tiny_laion_root):
    """Each image shown r times is shown ``r // S`` or ``r // S + 1`` times in each of the ``S``
    sessions (NSD-style: a repetition in every session, not all in one)."""
    glm = tiny_laion_root / "derivatives/glmsingle-tedana/sub-01"
    counts = pd.concat(
        [
            pd.read_csv(
                glm / ses / "func" / f"sub-01_{ses}_task-images_desc-SingletrialBetas_trials.tsv",
                sep="\t",
            )  # fmt: skip
            for ses in ("ses-01", "ses-02")
        ]
    ).pipe(lambda t: pd.crosstab(t["label"], t["session"]))
    shown = counts.sum(axis=1)
    assert shown.max() == 12
    assert ((counts.min(axis=1) >= shown // 2) & (counts.max(axis=1) <= shown // 2 + 1)).all()


def test_the_realistic_preset_adds_noise_to_the_signal_voxels_only(tiny_laion_root, tmp_path):
    from neurotorch.synthetic.laion_fmri import SNR_PRESETS, make_laion_fmri

    root = make_laion_fmri(tmp_path / "realistic", size="tiny", seed=0, snr="realistic")
    default = np.load(tiny_laion_root / "_groundtruth" / "sub-01_encoding.npz")
    realistic = np.load(root / "_groundtruth" / "sub-01_encoding.npz")
    signal = np.zeros(len(default["noise_sd"]), dtype=bool)
    signal[default["signal_rows"]] = True
    assert 0 < signal.sum() < len(signal)
    np.testing.assert_allclose(
        realistic["noise_sd"][signal], SNR_PRESETS["realistic"] * default["noise_sd"][signal]
    )
    np.testing.assert_array_equal(realistic["noise_sd"][~signal], default["noise_sd"][~signal])


def test_every_embedding_row_has_unit_norm(tiny_laion_root):
    import h5py

    for model in ("CLIP", "DINOv2", "PEcore", "SigLIP2"):
        path = tiny_laion_root / "stimuli" / f"task-images_desc-{model}_embeddings.h5"
        with h5py.File(path) as f:
            rows = f["embedding"][:].astype(np.float64)
        # float16 rounding: a relative error of 2**-11 per entry
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1, atol=2e-3)


# -- feature extraction --------------------------------------------------------------------------


def test_a_torchrun_rank_is_the_global_rank_not_the_node_local_one(monkeypatch):
    from neurotorch.features.extract import ExtractionOptions, rank_and_world_size

    # the second process of the second node of a 2 × 2 torchrun job
    for name, value in {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    assert not torch.distributed.is_initialized()
    assert rank_and_world_size(ExtractionOptions(device="cpu")) == (3, 4)
    monkeypatch.setenv("WORLD_SIZE", "2")  # a rank outside the world: one process after all
    assert rank_and_world_size(ExtractionOptions(device="cpu")) == (0, 1)


@pytest.mark.usefixtures("one_thread")
def test_pca_spaces_of_one_model_fit_on_their_own_seeds_sample(tiny_laion_root, tmp_path):
    """Two ``pooling="pca"`` spaces of one model pass that differ in their seed only: each is
    scikit-learn's PCA fitted on the documented sample of its own seed."""
    from feature_models import TinyNet, direct_outputs, normalised, stimulus_images
    from sklearn.decomposition import PCA

    from neurotorch.features import ExtractionOptions, FeatureSpec, ImageTransform, load_features

    model, tiny = TinyNet(), ImageTransform(resize=32, crop=32)
    specs = [
        FeatureSpec(
            model,
            layer="block",
            pooling="pca",
            k=3,
            seed=seed,
            pca_images=30,
            transform=tiny,
            name=f"block_pca_seed{seed}",
        )  # fmt: skip
        for seed in (1, 2)
    ]
    options = ExtractionOptions(chunk_size=32, batch_size=16, cache_dir=tmp_path / "cache")
    got = load_features(specs, tiny_laion_root, options=options)
    images = stimulus_images(tiny_laion_root)[1]
    batch = torch.stack([normalised(image) for image in images])
    flat = direct_outputs(TinyNet(), batch, ["block"])["block"].flatten(1).numpy()
    flat = flat.astype(np.float64)
    for spec in specs:
        rows = np.sort(np.random.default_rng(spec.seed).choice(len(flat), 30, replace=False))
        want = PCA(n_components=3, svd_solver="full").fit(flat[rows]).transform(flat)
        values = got[spec.name].astype(np.float64)
        signs = np.sign((values * want).sum(axis=0))  # a component's sign is a convention
        np.testing.assert_allclose(values * signs, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_one_worker_runs_the_units_in_this_process(tmp_path, monkeypatch):
    """``workers=1`` is the loop in this process, as ``workers=None``: no worker process."""
    import os
    from pathlib import Path

    from parallel_units import PidUnit

    from neurotorch.parallel import run_units

    tests = str(Path(__file__).resolve().parent)  # a worker process could import the unit
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [tests, os.getenv("PYTHONPATH")]))
    )
    results = run_units([PidUnit(str(tmp_path), k) for k in range(3)], workers=1, progress=False)
    assert [r.value for r in results] == [os.getpid()] * 3


def test_anatomical_t1w_shows_a_bright_brain_and_t2w_a_dark_one(tiny_laion_root):
    anat = tiny_laion_root / "derivatives/anatomical/sub-01/ses-PrismaAnat/anat"
    brain = read_map(anat / "sub-01_ses-PrismaAnat_space-T1w_res-1pt8_desc-brain_mask.nii.gz") > 0
    t1 = read_map(anat / "sub-01_ses-PrismaAnat_space-T1w_res-1pt8_T1w.nii.gz")
    t2 = read_map(anat / "sub-01_ses-PrismaAnat_space-T1w_res-1pt8_T2w.nii.gz")
    assert t1[brain].mean() > 5 * t1[~brain].mean()  # T1w: white-ish brain, dark background
    assert t2[brain].mean() < t2[~brain].mean() / 2  # T2w: the contrast inverted


@pytest.mark.usefixtures("one_thread")
def test_specs_of_one_model_with_other_preprocessing_are_each_computed_with_their_own(
    tiny_laion_root, tmp_path
):
    from feature_models import TinyNet

    from neurotorch.features import ExtractionOptions, FeatureSpec, ImageTransform, load_features

    model = TinyNet()
    specs = [
        FeatureSpec(
            model,
            layer="block",
            pooling="avg",
            transform=ImageTransform(resize=32, crop=crop),
            name=f"block_crop{crop}",
        )  # fmt: skip
        for crop in (32, 20)
    ]

    def options(folder: str) -> ExtractionOptions:
        return ExtractionOptions(chunk_size=64, batch_size=32, cache_dir=tmp_path / folder)

    together = load_features(specs, tiny_laion_root, options=options("together"))
    for spec in specs:
        alone = load_features(spec, tiny_laion_root, options=options(spec.name))[spec.name]
        np.testing.assert_array_equal(together[spec.name], alone)
    assert not np.allclose(together["block_crop32"], together["block_crop20"])


def test_a_failed_units_line_names_its_error():
    from neurotorch.parallel import UnitResult, result_lines

    results = [
        UnitResult("prepare/sub-01", "ran", value=3),
        UnitResult("prepare/sub-02", "failed", error="ValueError: a bad volume"),
        UnitResult("prepare/sub-03", "skipped"),
    ]
    assert result_lines(results) == [
        "ran  prepare/sub-01",
        "failed  prepare/sub-02  ValueError: a bad volume",
        "skipped  prepare/sub-03",
    ]


@pytest.mark.parametrize("subject", ["sub-01", "sub-02"])
def test_a_subjects_split_pool_is_the_shared_images_and_its_own_unique_ones(
    subject, tiny_laion_root
):
    import json

    metadata = pd.read_csv(tiny_laion_root / "stimuli" / "task-images_metadata.csv")
    laion = metadata[metadata["dataset"] == "LAION"]
    own = laion[(laion["unique_or_shared"] == "shared") | (laion["participant"] == subject)]
    split = json.loads((tiny_laion_root / "splits" / subject / "random_0.json").read_text())
    train, test = (set(split["variants"][0][part]) for part in ("train_ids", "test_ids"))
    assert not train & test and len(train) == split["n_train"]
    assert train | test == set(own["image_name"])
