"""LightningCLI for neurotorch configs: ``class_path``/``init_args`` for model and data.

``fit`` also runs the test split when it finishes (``--test_after_fit false`` turns that off), so
one command trains and reports test metrics, and always leaves a checkpoint for
``validate``/``test --ckpt_path``: closed-form models (ridge, isotonic) take no optimizer step, so
``ModelCheckpoint`` alone would save nothing for them.
"""

from __future__ import annotations

import os

from lightning.pytorch.cli import LightningCLI


class NeurotorchLightningCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data and a test pass after ``fit``."""

    def __init__(self, **kwargs):
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="run the test split after fit"
        )

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if callback is not None and not callback.best_model_path and callback.dirpath:
            path = os.path.join(callback.dirpath, "last.ckpt")
            self.trainer.save_checkpoint(path)
            if self.trainer.is_global_zero:
                print(f"checkpoint: {path}")
        if self.config[self.subcommand].get("test_after_fit", True):
            self.trainer.test(self.model, datamodule=self.datamodule)
