"""The ``neurotorch`` command: one module per sub-command, `main` in `neurotorch.cli.main`.

``fit``/``validate``/``test``/``predict`` go to Lightning's CLI (``--config FILE``); the other
sub-commands (``synth``, ``prepare``, ``describe``, ...) are argparse commands, each a module of
this package with ``add_parser`` and ``run``.
"""

from neurotorch.cli.main import main

__all__ = ["main"]
