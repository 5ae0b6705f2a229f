"""LightningCLI for neurotorch configs: ``class_path``/``init_args`` for model and data.

``fit`` also runs the test split when it finishes (``--test_after_fit false`` turns that off), so
one command trains and reports test metrics.
"""

from __future__ import annotations

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
        if self.config[self.subcommand].get("test_after_fit", True):
            self.trainer.test(self.model, datamodule=self.datamodule)
