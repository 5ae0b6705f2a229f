"""`LinearEncoder`: a voxel-wise (banded) ridge encoding model, stimulus features → betas.

One training epoch accumulates per-fold sufficient statistics of the training and validation
trials (folds grouped by image); when validation ends (or testing starts, without validation) the
statistics are summed over DDP ranks, each voxel's penalties are chosen by k-fold cross-validation
and the model is refitted on all of them (`neurotorch.models.ridge`). Before the first batch a
memory preflight (`neurotorch.models.encoder_memory`) chooses the voxel chunks (and whether the
cross-products go to a scratch file) or refuses with `EncoderMemoryError`; testing, validating and
predicting work voxel chunk by chunk too. Testing logs per-voxel r and
R², the noise ceiling of the test trials themselves and the fraction of it reached
(`neurotorch.models.held_out`), the variance explained by each feature space, and writes
``metrics.json`` plus a PNG. Predicting returns each trial's voxel responses with its ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from neurotorch._docs import fill_doc
from neurotorch._options import check_bool, check_int, check_number, check_option
from neurotorch.errors import EncoderConfigError, NotFittedError
from neurotorch.log import results
from neurotorch.models.batch_keys import require_keys
from neurotorch.models.cross_products import voxel_chunks
from neurotorch.models.encoder_memory import EncoderSize, MemoryPlan, plan_memory
from neurotorch.models.held_out import (
    CONVERSION_CHUNK,
    CeilingStatistics,
    CorrelationStatistics,
    PartitionStatistics,
)
from neurotorch.models.module import ReferenceModule
from neurotorch.models.ridge import (
    DEFAULT_BAND_RATIOS,
    DEFAULT_PENALTIES,
    SCORES,
    SOLVERS,
    Score,
    Solver,
    fit_ridge,
    folds_of,
)
from neurotorch.models.ridge_statistics import PRECISIONS, Precision, RidgeStatistics

#: Batch keys that identify a trial; predictions carry those the batches hold.
ID_KEYS = ("subject", "session", "trial", "image_name", "index")


@fill_doc
class LinearEncoder(ReferenceModule):
    """Voxel-wise ridge regression from ``batch[feature_key]`` to ``batch[target_key]``.

    Parameters
    ----------
    penalties
        Grid of ridge penalties, relative to the mean eigenvalue of each feature space's centred
        covariance (positive numbers).
    n_folds
        Cross-validation folds over the training and validation trials, grouped by image (at
        least 2).
    score
        What the penalty choice maximises: ``"r"`` (Pearson r), ``"r2"`` (coefficient of
        determination) or ``"mse"`` (minimised).
    per_voxel
        One penalty per voxel (else one for all voxels, chosen by the mean score).
    feature_key
        Batch key of the features ``(n, D)``, or a list of keys: one feature space each, with a
        penalty of its own per voxel (banded ridge).
    band_ratios
        Weights of each further feature space relative to the first, tried per voxel (banded
        ridge).
    solver
        ``"auto"`` (dual when there are fewer trials than features, on one process),
        ``"primal"`` or ``"dual"``.
    target_key
        Batch key of the targets ``(n, V)``: the betas.
    image_key
        Batch key of the image names; they define the cross-validation folds.
    %(output_dir)s
    voxel_chunk
        Voxels per chunk of the statistics and of the solve. Fewer than the voxels: the per-fold
        cross-products ``Xᵀy`` go to an unnamed scratch file under ``NEUROTORCH_CACHE/scratch``
        (removed when the fit ends), one chunk in memory at a time. Default: chosen before the
        first batch from the available memory (all in memory when it fits); a fit that cannot fit
        is refused with `neurotorch.errors.EncoderMemoryError`, which says what to use.
    precision
        ``"float64"`` or ``"float32"`` cross-products and weights (half the memory; the chosen
        penalties and weights agree with float64 to the tolerance of ``docs/encoder.md``).
    """

    def __init__(
        self,
        penalties: Sequence[float] = DEFAULT_PENALTIES,
        n_folds: int = 5,
        score: Score = "r2",
        per_voxel: bool = True,
        feature_key: str | list[str] = "embedding",
        band_ratios: Sequence[float] = DEFAULT_BAND_RATIOS,
        solver: Solver = "auto",
        target_key: str = "betas",
        image_key: str = "image_name",
        output_dir: str | None = None,
        voxel_chunk: int | None = None,
        precision: Precision = "float64",
    ):
        super().__init__()
        check_int("n_folds", n_folds, minimum=2)
        check_bool("per_voxel", per_voxel)
        if not feature_key or (not isinstance(feature_key, str) and len(feature_key) > 1
                               and not len(band_ratios)):  # fmt: skip
            raise EncoderConfigError(
                f"feature_key needs at least one key, and band_ratios one ratio when there are "
                f"several; got feature_key={feature_key!r}, band_ratios={list(band_ratios)!r}."
            )
        check_option("score", score, SCORES)
        check_option("solver", solver, SOLVERS)
        check_option("precision", precision, PRECISIONS)
        if voxel_chunk is not None:
            check_int("voxel_chunk", voxel_chunk, minimum=1)
        for name, grid in (("penalties", penalties), ("band_ratios", band_ratios)):
            for k, value in enumerate(grid):
                check_number(f"{name}[{k}]", value, minimum=0, open_minimum=True)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.feature_keys = [feature_key] if isinstance(feature_key, str) else list(feature_key)
        self.register_buffer("weight", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("penalty", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("band_sizes", torch.zeros(0, dtype=torch.long))
        # DDP wraps only modules with a trainable parameter; the fit itself needs none
        self.ddp_anchor = torch.nn.Parameter(torch.zeros(0))
        self._stats: RidgeStatistics | None = None
        self.memory_plan: MemoryPlan | None = None
        self._collecting = False
        self._subjects: set[str] = set()
        # what the weights were fitted on (saved in checkpoints): evaluation refuses other data
        self._fitted_subjects: list[str] = []
        self._fitted_voxels: np.ndarray | None = None
        self._val_stats: CorrelationStatistics | None = None
        self._test: tuple[CorrelationStatistics, CeilingStatistics, PartitionStatistics] | None = (
            None
        )
        self.test_metrics: dict | None = None
        self.test_r: np.ndarray | None = None
        self.test_ceiling: dict | None = None

    # -- inference -------------------------------------------------------------------------
    def features(self, batch: dict) -> torch.Tensor:
        """The feature spaces of a batch side by side, ``(n, D)`` float64."""
        require_keys(
            batch,
            self.feature_keys,
            model="LinearEncoder",
            source="a LaionFMRIDataModule (set feature_key to the embedding key(s) it serves)",
        )
        return torch.cat([batch[key].to(torch.float64) for key in self.feature_keys], dim=1)

    def targets(self, batch: dict) -> torch.Tensor:
        """The betas of a batch, ``(n, V)``."""
        key = self.hparams.target_key
        require_keys(batch, (key,), model="LinearEncoder", source="a LaionFMRIDataModule")
        return batch[key]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted voxel responses ``(n, V)`` float32 of features ``(n, D)``."""
        if not self.fitted:
            self._refuse("predict")
        out = features.new_empty(features.shape[0], self.weight.shape[1], dtype=torch.float32)
        for columns, parts in self._predicted_parts(features):
            out[:, columns] = parts.sum(0) + self.bias[columns]
        return out

    def _predicted_parts(self, features: torch.Tensor):
        """Per voxel chunk: its columns and each feature space's part of the predictions without
        the intercept, ``(S, n, C)`` (float64 temporaries of one chunk at a time)."""
        x = features.to(self.weight.dtype)
        spaces = torch.split(torch.arange(x.shape[1], device=x.device), self.band_sizes.tolist())
        for columns in voxel_chunks(self.weight.shape[1], CONVERSION_CHUNK):
            weight = self.weight[:, columns]
            yield columns, torch.stack([x[:, s] @ weight[s] for s in spaces]).to(torch.float64)

    @property
    def fitted(self) -> bool:
        """Whether the model has weights (fitted, or loaded from a checkpoint)."""
        return self.weight.numel() > 0

    def _check_fitted(self, what: str) -> None:
        """Refuse to ``what`` unless fitted or about to fit (statistics collected)."""
        if not self.fitted and self._stats is None:
            self._refuse(what)

    @staticmethod
    def _refuse(what: str) -> None:
        raise NotFittedError("LinearEncoder", what)

    def configure_optimizers(self):
        return None

    def _reduce_sum(self, tensor: torch.Tensor) -> None:
        """Sum ``tensor`` over the DDP ranks in place."""
        tensor.copy_(self.trainer.strategy.reduce(tensor, reduce_op="sum"))

    def _sum_over_ranks(self, tensors: list[torch.Tensor]) -> None:
        if self.trainer is not None and self.trainer.world_size > 1:
            for t in tensors:
                self._reduce_sum(t)

    # -- training: one pass of per-fold statistics (validation trials join them) ------------
    def on_fit_start(self) -> None:
        """The memory preflight, when the data module says the sizes before the first batch."""
        self.memory_plan = None
        datamodule = getattr(self.trainer, "datamodule", None)
        n_voxels = getattr(datamodule, "n_voxels", None)
        dims = getattr(datamodule, "feature_dims", None)
        if (
            self.hparams.target_key == "betas"
            and isinstance(n_voxels, dict)
            and len(n_voxels) == 1
            and isinstance(dims, dict)
            and set(self.feature_keys) <= set(dims)
        ):
            n_features = sum(dims[key] for key in self.feature_keys)
            batch_size = getattr(datamodule, "batch_size", 256)
            self._plan_memory(n_features, next(iter(n_voxels.values())), batch_size)

    def _plan_memory(self, n_features: int, n_voxels: int, batch_size: int) -> MemoryPlan:
        """Choose the voxel chunks (rank 0's choice on every rank) or refuse the fit."""
        hp = self.hparams
        size = EncoderSize(
            n_features=n_features,
            n_voxels=n_voxels,
            n_folds=hp.n_folds,
            n_candidates=len(hp.penalties) * len(hp.band_ratios) ** (len(self.feature_keys) - 1),
            n_spaces=len(self.feature_keys),
            batch_size=batch_size,
            n_test_images=self._test_images(),
            precision=hp.precision,
        )
        plan = None
        if self.trainer is None or self.trainer.is_global_zero:
            plan = plan_memory(size, hp.voxel_chunk)
        if self.trainer is not None and self.trainer.world_size > 1:
            plan = self.trainer.strategy.broadcast(plan)
        assert plan is not None, "rank 0 plans the memory of every rank"
        self.memory_plan = plan
        results.info("memory plan: %s", plan.describe(size))
        return plan

    def _test_images(self) -> int:
        """Distinct images of the data module's test trials, where it says (else 0)."""
        datasets = getattr(getattr(self.trainer, "datamodule", None), "datasets", None)
        trials = getattr((datasets or {}).get("test"), "trials", None)
        if isinstance(trials, pd.DataFrame) and "label" in trials:
            return int(trials["label"].nunique())
        return 0

    def on_train_start(self) -> None:
        """Refuse to resume inside a training epoch: the statistics of its first batches are
        not in checkpoints (Lightning calls no epoch-start hook when it resumes there)."""
        trainer = self.trainer
        loop = trainer.fit_loop
        drawn = loop.epoch_loop.batch_progress.current.ready  # restored from a checkpoint
        total = trainer.num_training_batches
        if loop.restarting and drawn and not (self.fitted and drawn >= total):
            raise EncoderConfigError(
                f"This fit resumes from a checkpoint taken inside a training epoch (after {drawn} "
                "batches), but LinearEncoder's statistics of those batches are not in "
                "checkpoints: the fit would use the rest of the epoch only. Resume from a "
                "checkpoint taken at the end of an epoch (Lightning's default last.ckpt), or fit "
                "again."
            )

    def on_train_epoch_start(self) -> None:
        self._close_statistics()
        trainer = self.trainer
        every = trainer.val_check_batch
        if (
            sum(trainer.num_val_batches)
            and every is not None
            and every < trainer.num_training_batches
        ):
            raise EncoderConfigError(
                f"LinearEncoder fits once per epoch, on all its training trials, when the "
                f"validation that ends the epoch ends; validation every {every} "
                f"of the epoch's {trainer.num_training_batches} batches (val_check_interval="
                f"{trainer.val_check_interval}) would fit on part of them. Leave "
                "val_check_interval at 1.0."
            )

    def _close_statistics(self) -> None:
        if self._stats is not None:
            self._stats.close()
        self._stats = None

    def _accumulate(self, batch: dict) -> None:
        x, y = self.features(batch), self.targets(batch)
        subjects = set(batch.get("subject", ()))
        if self._stats is None:
            plan = self.memory_plan or self._plan_memory(x.shape[1], y.shape[1], x.shape[0])
            self._stats = RidgeStatistics(
                x.shape[1],
                y.shape[1],
                self.hparams.n_folds,
                keep_rows=self.trainer is None or self.trainer.world_size == 1,
                device=x.device,
                precision=self.hparams.precision,
                voxel_chunk=plan.voxel_chunk,
                on_disk=plan.on_disk,
            )
            self._subjects = subjects
            self.band_sizes = torch.tensor([batch[k].shape[1] for k in self.feature_keys])
        if subjects | self._subjects != self._subjects or len(subjects) > 1:
            raise EncoderConfigError(
                f"LinearEncoder fits the voxels of one subject, but the training batches hold "
                f"{sorted(subjects | self._subjects)}; train one encoder per subject."
            )
        self._stats.update(x, y, folds_of(batch[self.hparams.image_key], self.hparams.n_folds))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        self._accumulate(batch)

    def on_train_epoch_end(self) -> None:
        """Without a validation part (``val_fraction=0``, ``limit_val_batches=0``) no validation
        epoch ends to fit on: the training trials alone are fitted here."""
        if self._stats is not None and not sum(self.trainer.num_val_batches):
            self._fit()

    def _fit(self) -> None:
        """Sum the statistics over ranks, choose penalties by cross-validation, refit."""
        stats, hp = self._stats, self.hparams
        assert stats is not None, "the statistics were collected before the fit"
        try:
            if self.trainer is not None and self.trainer.world_size > 1:
                stats.sum_over_ranks(self._reduce_sum)
            fit = fit_ridge(
                stats,
                penalties=hp.penalties,
                bands=self.band_sizes.tolist(),
                band_ratios=hp.band_ratios,
                score=hp.score,
                per_target=hp.per_voxel,
                solver=hp.solver,
            )
        finally:
            self._close_statistics()
        self.weight, self.bias, self.penalty = fit.weight, fit.intercept, fit.penalty
        self._fitted_subjects = sorted(self._subjects)
        table = self._voxel_table()
        self._fitted_voxels = None
        if table is not None and "voxel" in table and len(table) == self.weight.shape[1]:
            self._fitted_voxels = table["voxel"].to_numpy()
        if not self.trainer.predicting:  # Lightning logs nothing while predicting
            self.log(f"cv_median_{hp.score}", float(fit.cv_score.median()), prog_bar=True)

    # -- validation: joins the cross-validation during fit, else scores the fitted model -----
    def on_validation_epoch_start(self) -> None:
        self._collecting = self._stats is not None
        self._val_stats = None
        if not (self._collecting or self.trainer.sanity_checking):
            self._check_fitted("validate")
            self._check_voxel_selection()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if self._collecting:
            self._accumulate(batch)
        elif self.fitted:
            y = self.targets(batch)
            self._check_batch(batch, y)
            if self._val_stats is None:
                self._val_stats = CorrelationStatistics(y.shape[1], device=y.device)
            for columns, parts in self._predicted_parts(self.features(batch)):
                self._val_stats.update(parts.sum(0) + self.bias[columns], y[:, columns], columns)

    def on_validation_epoch_end(self) -> None:
        if self._collecting:
            self._collecting = False
            self._fit()
        elif self._val_stats is not None:
            self._sum_over_ranks(self._val_stats.tensors())
            self.log("val_median_r", float(self._val_stats.correlation().median()))

    # -- predict: each trial's voxel responses with its ids ------------------------------------
    def on_predict_epoch_start(self) -> None:
        self._check_fitted("predict")
        if self._stats is not None:
            self._fit()
        self._check_voxel_selection()

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """``prediction`` ``(n, V)`` float32 and the trials' ids (`ID_KEYS` the batch holds)."""
        ids = {key: batch[key] for key in ID_KEYS if key in batch}
        self._check_batch(batch, batch.get(self.hparams.target_key))
        return {"prediction": self(self.features(batch)), **ids}

    def prediction_axes(self) -> dict[str, np.ndarray]:
        """``voxel``: the flat grid index of each prediction column, where the data module says."""
        table = self._voxel_table()
        return {} if table is None or "voxel" not in table else {"voxel": table["voxel"].to_numpy()}

    def _voxel_table(self) -> pd.DataFrame | None:
        """The data module's voxel table of the fitted subject, if it has one."""
        table = getattr(getattr(self.trainer, "datamodule", None), "voxel_table", None)
        if isinstance(table, dict):  # several subjects: the one this encoder was fitted on
            table = table.get(next(iter(self._subjects), None))
        return table

    # -- test: metrics, JSON and plot --------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._check_fitted("test")
        if self._stats is not None:
            self._fit()
        self._check_voxel_selection()
        self._test = None

    def test_step(self, batch: dict, batch_idx: int) -> None:
        x, y = self.features(batch), self.targets(batch)
        self._check_batch(batch, y)
        if self._test is None:
            self._test = (
                CorrelationStatistics(y.shape[1], device=y.device),
                CeilingStatistics(y.shape[1], device=y.device),
                PartitionStatistics(len(self.band_sizes), y.shape[1], device=y.device),
            )
            self._subjects = set(batch.get("subject", ())) or self._subjects
        scores, ceiling, partition = self._test
        for columns, parts in self._predicted_parts(x):
            scores.update(parts.sum(0) + self.bias[columns], y[:, columns], columns)
            partition.update(parts, y[:, columns], columns)
        if not (torch.as_tensor(batch.get("n_repeats", 1)) > 1).any():  # single trials only
            ceiling.update(y, batch[self.hparams.image_key])

    def on_test_epoch_end(self) -> None:
        from neurotorch.models.encoder_report import summarise_encoder, write_encoder_report

        assert self._test is not None, "Lightning runs no test epoch without a batch"
        scores, ceiling, partition = self._test
        self._sum_over_ranks(scores.tensors() + partition.tensors())
        ceiling.sum_over_ranks()
        self.test_r = scores.score("r").cpu().numpy()
        self.test_ceiling = ceiling.ceiling()
        shares = partition.r2().cpu().numpy()
        metrics = summarise_encoder(
            self.test_r,
            scores.score("r2").cpu().numpy(),
            ceiling=self.test_ceiling,
            voxel_table=self._voxel_table(),
            penalty=self.penalty.cpu().numpy(),
            partition=shares,
            spaces=self.space_names(),
        )
        self.test_metrics = metrics
        for key in ("median_r", "median_r2", "median_fraction_of_ceiling"):
            if metrics.get(key) is not None:
                self.log(f"test_{key}", metrics[key])
        if self.trainer.is_global_zero:
            out = Path(
                self.hparams.output_dir or self.trainer.log_dir or self.trainer.default_root_dir
            )
            paths = write_encoder_report(
                out,
                metrics,
                r=self.test_r,
                ceiling=self.test_ceiling,
                partition=shares if len(shares) > 1 else None,
                title=self._run_title(),
            )
            results.info(summary_line(metrics))
            results.info("metrics: %s\nplot:    %s", paths["metrics"], paths["plot"])

    def space_names(self) -> list[str]:
        """A name per feature space: the embedding model (``CLIP``) where the key says it."""
        names = [key.removeprefix("embedding_") for key in self.feature_keys]
        features = self._datamodule_setting("features")
        if names == ["embedding"] and isinstance(features, str):
            names = [features]
        return names

    def _datamodule_setting(self, name: str):
        hparams = getattr(getattr(self.trainer, "datamodule", None), "hparams", {})
        return hparams.get(name) if hasattr(hparams, "get") else None

    def _run_title(self) -> str:
        """Which subject, features and split the test report is about."""
        subjects = ", ".join(sorted(self._subjects)) or "test trials"
        datamodule = getattr(self.trainer, "datamodule", None)
        selection = getattr(datamodule, "trial_selection", None)  # the fMRI DataModule's trials
        split, pool = getattr(selection, "split", None), getattr(selection, "pool", None)
        where = f"split {split}" + (f" of pool {pool}" if pool else "") if split else "test split"
        rows = self.test_ceiling["n_rows"] if self.test_ceiling else None
        counted = f" ({rows} test trials)" if rows else ""
        return f"{subjects}: {' + '.join(self.space_names())} → betas, {where}{counted}"

    # -- evaluation sees the data the weights were fitted on -------------------------------------
    def _check_voxel_selection(self) -> None:
        """Refuse a data module without the fitted subject, or whose voxel selection of it is not
        the fit's."""
        served = getattr(getattr(self.trainer, "datamodule", None), "subjects", None)
        if self._fitted_subjects and isinstance(served, list) and served:
            self._check_subjects(set(served))
        table = self._voxel_table()
        if self._fitted_voxels is None or table is None or "voxel" not in table:
            return
        selected = table["voxel"].to_numpy()
        if not np.array_equal(selected, self._fitted_voxels):
            common = len(np.intersect1d(selected, self._fitted_voxels))
            raise EncoderConfigError(
                f"This LinearEncoder was fitted on {len(self._fitted_voxels)} voxels of "
                f"{', '.join(self._fitted_subjects)}, but the data select {len(selected)} "
                f"({common} of them the fitted ones): evaluate it with the voxel selection of "
                "its fit (the data's 'voxels' settings), or fit it on this one."
            )

    def _check_batch(self, batch: dict, betas: torch.Tensor | None) -> None:
        """Refuse a batch of another subject, or with another number of voxels, than the fit's."""
        self._check_subjects(set(batch.get("subject", ())))
        if betas is not None and betas.shape[1] != self.weight.shape[1]:
            raise EncoderConfigError(
                f"This LinearEncoder predicts {self.weight.shape[1]} voxels, but the batches "
                f"hold {betas.shape[1]}: evaluate it with the voxel selection of its fit (the "
                "data's 'voxels' settings)."
            )

    def _check_subjects(self, subjects: set[str]) -> None:
        if self._fitted_subjects and subjects and subjects != set(self._fitted_subjects):
            raise EncoderConfigError(
                f"This LinearEncoder was fitted on {', '.join(self._fitted_subjects)}, but the "
                f"data hold {', '.join(sorted(subjects))}: its weights predict the fitted "
                "subject's voxels; evaluate it on that subject, or fit one per subject."
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fitted_data"] = {
            "subjects": self._fitted_subjects,
            "voxels": None if self._fitted_voxels is None else torch.tensor(self._fitted_voxels),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        fitted = checkpoint.get("fitted_data") or {}
        self._fitted_subjects = list(fitted.get("subjects") or [])
        voxels = fitted.get("voxels")
        self._fitted_voxels = None if voxels is None else torch.as_tensor(voxels).numpy()
        self._subjects = set(self._fitted_subjects) or self._subjects

    # -- checkpoints and DDP spawn results: buffers are sized by the data, resize before loading
    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        for name in ("weight", "bias", "penalty", "band_sizes"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def per_voxel_r(self) -> np.ndarray | None:
        """Per-voxel test correlation of the last test run (``None`` before one)."""
        return self.test_r


def summary_line(metrics: dict) -> str:
    """The test line of an encoder's metrics: median r, fraction of the noise ceiling and, for
    several feature spaces, each one's median share of the explained variance."""
    line = f"test: median r = {metrics['median_r']:.3f} over {metrics['n_voxels']} voxels"
    if metrics.get("median_fraction_of_ceiling") is not None:
        line += (
            f"; median fraction of noise ceiling = {metrics['median_fraction_of_ceiling']:.3f}"
            f" ± {metrics['fraction_of_ceiling_margin']:.3f}"
        )
    else:
        line += f"; no noise ceiling ({metrics['ceiling_note']})"
    spaces = metrics.get("feature_spaces", {})
    if len(spaces) > 1:
        shares = ", ".join(
            f"{name} {space['median_variance_share']:.3f}" for name, space in spaces.items()
        )
        line += f"; median variance share: {shares}"
    return line
