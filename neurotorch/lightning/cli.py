"""LightningCLI for neurotorch configs: ``class_path``/``init_args`` for model and data.

* neurotorch's models and DataModules are known by their short names (``--model LinearEncoder``,
  ``--data LaionFMRIDataModule``) and listed in ``fit --help``;
* ``fit`` runs the test split when it finishes (``--test_after_fit false`` turns that off) and
  always leaves ``checkpoints/last.ckpt`` (closed-form models take no optimizer step, so
  ``ModelCheckpoint`` alone saves nothing for them) and prints where it is;
* ``validate``/``test``/``predict`` need ``--ckpt_path``: a model that was never fitted is a usage
  error, raised before any data is read or any run folder is made;
* ``predict`` writes the predictions with their item ids to ``predictions.npz`` in the run folder
  (`neurotorch.models.predictions.PredictionWriter`);
* a calm console: none of Lightning's adverts, none of the deprecation warnings that the pinned
  Lightning/torch/jsonargparse stack raises by itself, no empty summary of a model without
  parameters; Lightning's own progress notes ("GPU available", "Seed set") show only with
  ``NEUROTORCH_LOG_LEVEL=DEBUG``; ``NEUROTORCH_PROGRESS=0`` turns the progress bar off.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence

from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary
from lightning.pytorch.cli import LightningCLI

from neurotorch import config
from neurotorch.errors import DatasetExistsError, FormatError, ParameterError
from neurotorch.log import results

log = logging.getLogger(__name__)

EVALUATION_COMMANDS = ("validate", "test", "predict")
# Warnings that neurotorch's models and datasets trigger by design (closed-form models have no
# optimizer; every neurotorch IterableDataset splits its items between workers itself, so its
# length is right with any number of workers), and warnings the pinned stack raises whatever the
# user does (torch's LeafSpec deprecation inside Lightning, jsonargparse's ``skip_none`` inside
# LightningCLI, the checkpoint folder that necessarily differs on every ``--ckpt_path`` run).
QUIET_WARNINGS = (
    r"`LightningModule.configure_optimizers` returned `None`",
    r"Your `IterableDataset` has `__len__` defined",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"[\s\S]*was deprecated in v4\.[\d.]+ and will be removed in v5",  # jsonargparse, by Lightning
    r"\s*By default only one JsonargparseDeprecationWarning",
    r"The dirpath has changed from",
)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
# where Lightning logs its adverts (a filter acts on the logger a record starts from)
ADVERT_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)
ADVERT = "💡 Tip:"


class _NoAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERT)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within the block: no Lightning adverts, no by-design or stack warnings, and Lightning's
    INFO notes only when neurotorch's level is DEBUG."""
    level = logging.INFO if log.getEffectiveLevel() <= logging.DEBUG else logging.WARNING
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    previous = [logger.level for logger in loggers]
    adverts = _NoAdverts()
    for logger in loggers:
        logger.setLevel(level)
    for name in ADVERT_LOGGERS:
        logging.getLogger(name).addFilter(adverts)
    try:
        with warnings.catch_warnings():
            for message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, level_before in zip(loggers, previous, strict=True):
            logger.setLevel(level_before)
        for name in ADVERT_LOGGERS:
            logging.getLogger(name).removeFilter(adverts)


def register_neurotorch_classes() -> None:
    """Import neurotorch's models and DataModules, so jsonargparse knows their short names and
    lists them in ``--help`` (it finds subclasses among the imported classes)."""
    from neurotorch import lightning as datamodules
    from neurotorch import models

    for package in (models, datamodules):
        for name in package.__all__:
            getattr(package, name)


def _looks_like_a_checkpoint(path: str) -> bool:
    """Whether ``path`` is in one of torch.save's formats: a zip archive (the current one) or a
    pickle (the legacy one, first byte 0x80)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as file:
        return file.read(1) == b"\x80"


def usage_error(message: str) -> argparse.ArgumentError:
    """A usage error of the command line (exit status 2 from ``neurotorch``)."""
    return argparse.ArgumentError(None, message)


def _hide_empty_summary(trainer) -> None:
    """Skip the model summary of a model without parameters (closed-form models): Lightning would
    print an empty table. Models that build their parameters in ``setup`` keep theirs."""
    for callback in trainer.callbacks:
        if isinstance(callback, ModelSummary):
            show = callback.on_fit_start

            def on_fit_start(trainer, pl_module, show=show) -> None:
                if any(p.numel() for p in pl_module.parameters()):
                    show(trainer, pl_module)

            callback.on_fit_start = on_fit_start  # type: ignore[method-assign]


#: Files a run writes into its folder: its config, the models' reports and plots, predictions,
#: checkpoints (as glob patterns under the folder).
RUN_FILES = (
    "config.yaml",
    "metrics.json",
    "predictions.npz",
    "*_test.png",
    "calibration_*.json",
    "coverage_*.png",
    "checkpoints/*.ckpt",
)


def _model_options_given(args: Sequence[str] | None) -> list[str]:
    """The model options named on the command line, as config keys (``model.init_args.x``)."""
    keys = []
    for arg in args or []:
        name = arg.split("=", 1)[0]
        if name.startswith("--model.") and name != "--model.class_path":
            key = name[2:].removeprefix("model.").removeprefix("init_args.")
            keys.append(f"model.init_args.{key}")
    return keys


class NeurotorchLightningCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data, short class names, a test pass after
    ``fit``, ``last.ckpt``, predictions written to the run folder and a calm console."""

    def __init__(self, **kwargs):
        register_neurotorch_classes()
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault(
            "save_config_kwargs", {"overwrite": True}
        )  # checked by _refuse_used_folder
        with quiet_lightning():
            super().__init__(**kwargs)

    def parse_arguments(self, parser, args) -> None:
        """Parse ``args`` (the command line that `neurotorch.cli.main` passes on) as is.

        Lightning warns whenever both ``args`` and ``sys.argv`` are set, which is always the case
        here since ``args`` is ``sys.argv[1:]``.
        """
        self.config = parser.parse_args(args)
        self._model_options = _model_options_given(args)
        # Lightning reads a checkpoint's hyperparameters next: a file of another kind is named
        chosen = self.config.get("subcommand")
        checkpoint = self.config[chosen].get("ckpt_path") if chosen else None
        if checkpoint and os.path.isfile(checkpoint) and not _looks_like_a_checkpoint(checkpoint):
            raise FormatError(
                f"--ckpt_path {checkpoint} is not a checkpoint (a file written by torch.save, "
                "as Lightning writes them); give the last.ckpt that neurotorch fit printed."
            )

    def _parse_ckpt_path(self) -> None:
        """Lightning sets the model's options to the checkpoint's hyperparameters; the options
        given on the command line (``--model.init_args.coverage_mode pointwise``) are then set
        again, so that what the user asked for is what runs (a changed architecture fails
        when the weights load, by name)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return super()._parse_ckpt_path()
        given = {key: self.config[subcommand].get(key) for key in self._model_options}
        super()._parse_ckpt_path()
        chosen = self.config[subcommand]
        for key, value in given.items():
            if chosen.get(key) != value:
                log.info("%s: %r from the command line, not the checkpoint's", key, value)
                chosen[key] = value

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="run the test split after fit"
        )

    def _subcommand_config(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        """Refuse an evaluation without a checkpoint, before any folder or data is touched."""
        chosen = self._subcommand_config()
        if not config.progress_enabled():
            chosen.trainer.enable_progress_bar = False
        if self.subcommand not in EVALUATION_COMMANDS:
            return
        checkpoint = chosen.get("ckpt_path")
        if not checkpoint:
            raise usage_error(
                f"{self.subcommand} needs a fitted model: give its checkpoint with --ckpt_path "
                "(neurotorch fit writes runs/<name>/version_N/checkpoints/last.ckpt and prints "
                "its path)"
            )
        if "://" not in str(checkpoint) and not os.path.isfile(checkpoint):
            raise FileNotFoundError(
                f"--ckpt_path {checkpoint}: no such file; give the last.ckpt that neurotorch fit "
                "printed."
            )

    def instantiate_classes(self) -> None:
        """Instantiate model, data and trainer; a value a class refuses is a usage error."""
        try:
            super().instantiate_classes()
        except ValueError as err:  # jsonargparse wraps what a constructor raised
            cause = err.__cause__
            if isinstance(cause, ParameterError):
                found = re.search(r"class_path='([\w.]+)'", str(err))
                owner = f"{found.group(1).rsplit('.', 1)[-1]}: " if found else ""
                raise usage_error(f"{owner}{cause}") from cause
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def _refuse_used_folder(self) -> None:
        """Refuse a run folder, or the model's ``output_dir`` for its reports, that already
        holds a run's files (a logger version given twice, ``--trainer.logger false`` in a folder
        with a config of one's own, an ``output_dir`` used before), before the logger or the run
        writes anything there."""
        run_folder = self.trainer.log_dir or self.trainer.default_root_dir
        report_folder = getattr(getattr(self.model, "hparams", None), "output_dir", None)
        for folder in dict.fromkeys(f for f in (run_folder, report_folder) if f):
            self._refuse_files_in(folder)

    @staticmethod
    def _refuse_files_in(folder: str) -> None:
        """`DatasetExistsError` if ``folder`` holds a file a run writes (`RUN_FILES`)."""
        found = sorted(
            os.path.relpath(path, folder)
            for pattern in RUN_FILES
            for path in glob.glob(os.path.join(glob.escape(folder), pattern))
            if os.path.isfile(path)
        )
        if found:
            raise DatasetExistsError(
                f"{folder} already holds {', '.join(found)}, which this run "
                "would overwrite. Give it a folder of its own: keep the logger's new version "
                "folder (runs/<name>/version_N), or choose another "
                "--trainer.logger.init_args.version, --trainer.default_root_dir or "
                "--model.init_args.output_dir."
            )

    def before_validate(self) -> None:
        self._refuse_used_folder()

    def before_test(self) -> None:
        self._refuse_used_folder()

    def before_fit(self) -> None:
        self._refuse_used_folder()
        _hide_empty_summary(self.trainer)
        if not self.trainer.is_global_zero:
            return
        root = getattr(self.datamodule, "root", None)
        where = f"data: {getattr(root, 'url', root)}; " if root is not None else ""
        log.info(
            f"{where}generated datasets: {config.data_home()} (NEUROTORCH_DATA); caches: "
            f"{config.cache_dir()} (NEUROTORCH_CACHE)"
        )

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            path = callback.last_model_path or os.path.join(callback.dirpath, "last.ckpt")
            if not callback.last_model_path:  # no save_last: the fitted state, saved here
                self.trainer.save_checkpoint(path, weights_only=False)
            if self.trainer.is_global_zero:
                results.info("checkpoint: %s", path)
        if self._subcommand_config().get("test_after_fit", True):
            self.trainer.test(self.model, datamodule=self.datamodule)

    def before_predict(self) -> None:
        from neurotorch.models.predictions import PredictionWriter

        self._refuse_used_folder()
        self.trainer.callbacks.append(PredictionWriter())  # type: ignore[attr-defined]
