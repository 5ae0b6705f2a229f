"""LightningCLI for neurotorch configs: ``class_path``/``init_args`` for model and data.

``fit`` also runs the test split when it finishes (``--test_after_fit false`` turns that off), so
one command trains and reports test metrics, and always leaves a checkpoint for
``validate``/``test --ckpt_path``: closed-form models (ridge, isotonic) take no optimizer step, so
``ModelCheckpoint`` alone would save nothing for them. ``fit`` says once where the data, the
generated datasets and the caches are; ``NEUROTORCH_PROGRESS=0`` turns Lightning's progress bar
off too.
"""

from __future__ import annotations

import logging
import os
import warnings

from lightning.pytorch.cli import LightningCLI

from neurotorch import config

log = logging.getLogger(__name__)

# Lightning warnings that neurotorch's own models and datasets trigger by design: closed-form
# models (ridge, isotonic) have no optimizer, and every neurotorch IterableDataset splits its
# items between workers itself, so its length is right with any number of workers.
BY_DESIGN_WARNINGS = (
    r"`LightningModule.configure_optimizers` returned `None`",
    r"Your `IterableDataset` has `__len__` defined",
)


class NeurotorchLightningCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data and a test pass after ``fit``."""

    def __init__(self, **kwargs):
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        with warnings.catch_warnings():
            for message in BY_DESIGN_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            super().__init__(**kwargs)

    def parse_arguments(self, parser, args) -> None:
        """Parse ``args`` (the command line that `neurotorch.cli.main` passes on) as is.

        Lightning warns whenever both ``args`` and ``sys.argv`` are set, which is always the case
        here since ``args`` is ``sys.argv[1:]``.
        """
        self.config = parser.parse_args(args)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="run the test split after fit"
        )

    def before_instantiate_classes(self) -> None:
        if not config.progress_enabled():
            chosen = self.config[self.subcommand] if self.subcommand else self.config
            chosen.trainer.enable_progress_bar = False

    def before_fit(self) -> None:
        if not self.trainer.is_global_zero:
            return
        root = getattr(self.datamodule, "root", None)
        where = f"data: {getattr(root, 'url', root)}; " if root is not None else ""
        log.info(
            "%sgenerated datasets: %s (NEUROTORCH_DATA); caches: %s (NEUROTORCH_CACHE)",
            where, config.data_home(), config.cache_dir(),
        )  # fmt: skip

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if callback is not None and not callback.best_model_path and callback.dirpath:
            path = os.path.join(callback.dirpath, "last.ckpt")
            self.trainer.save_checkpoint(path, weights_only=False)
            if self.trainer.is_global_zero:
                log.info("checkpoint: %s", path)
        if self.config[self.subcommand].get("test_after_fit", True):
            self.trainer.test(self.model, datamodule=self.datamodule)
