"""``fit``/``validate``/``test``/``predict``: Lightning's CLI over neurotorch's configs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from neurotorch.cli.arguments import UsageError

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def run(argv: Sequence[str]) -> int:
    """Run LightningCLI with ``class_path``/``init_args`` configs for model and data."""
    from neurotorch.lightning.cli import NeurotorchLightningCLI

    try:
        NeurotorchLightningCLI(
            args=list(argv), parser_kwargs={"exit_on_error": False, "prog": "neurotorch"}
        )
    except argparse.ArgumentError as err:
        raise UsageError(f"{err} (see 'neurotorch {argv[0]} --help')") from err
    return 0
