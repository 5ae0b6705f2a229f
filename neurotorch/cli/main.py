"""`main`: parse the command line, run the sub-command, and turn every failure into one line.

Every sub-command fails the same way: one ``error: <what is wrong and what to do>`` on standard
error and exit status 2 for a usage error (unknown option, bad value) or 1 for anything else (a
missing or damaged file, an unknown subject). ``--debug`` (anywhere on the line) or
``NEUROTORCH_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from neurotorch.cli import (
    configs,
    describe,
    download,
    features,
    grid,
    lightning,
    lnm,
    prepare,
    synth,
    verify,
)
from neurotorch.cli.arguments import EXIT_DATA, EXIT_USAGE, Parser, UsageError

DEBUG_FLAG = "--debug"
COMMANDS = (configs, synth, prepare, download, describe, verify, lnm, grid, features)
LIGHTNING_HELP = {
    "fit": "train a model from a config (--config NAME_OR_FILE), then test it",
    "validate": "score a fitted model (--ckpt_path) on the validation split",
    "test": "score a fitted model (--ckpt_path) on the test split",
    "predict": "write a fitted model's predictions (--ckpt_path) with their item ids",
}


def build_parser() -> Parser:
    from neurotorch import __version__

    parser = Parser(
        prog="neurotorch",
        description="PyTorch-first data loading for NeuroAI. Training: neurotorch "
        "fit|validate|test|predict --config NAME_OR_FILE (neurotorch configs lists the "
        "built-in configs).",
        epilog="Environment: NEUROTORCH_DATA, NEUROTORCH_CACHE, NEUROTORCH_PROGRESS=0, "
        "NEUROTORCH_LOG_LEVEL, NEUROTORCH_DEBUG=1.",
    )
    parser.add_argument("--version", action="version", version=f"neurotorch {__version__}")
    parser.add_argument(
        DEBUG_FLAG, action="store_true", help="show the traceback of an error (any position)"
    )
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=Parser)
    for name in lightning.SUBCOMMANDS:
        sub.add_parser(name, help=LIGHTNING_HELP[name], add_help=False)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _run(argv: list[str]) -> int:
    if argv and argv[0] in lightning.SUBCOMMANDS:
        return lightning.run(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(args.func(args) or 0)


def _message(exc: BaseException) -> str:
    """The exception's own message, also when torch re-raised it from a DataLoader worker.

    torch puts the worker's traceback into the message ("Caught X in DataLoader worker process
    0. Original Traceback ..."); only the text after its last ``module.X: `` line is kept.
    """
    text = str(exc).rstrip() or type(exc).__name__
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    start = text.rfind(f"\n{name}: ")
    if "Original Traceback" in text and start >= 0:
        text = text[start + len(name) + 3 :]
    return text


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``neurotorch`` command line; return its exit status."""
    from neurotorch.errors import NeurotorchError, UnitIndexError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get("NEUROTORCH_DEBUG", "0") not in ("", "0")
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        return _run(argv)
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, UsageError | UnitIndexError):  # --unit K past the last unit
            return _fail(str(exc), EXIT_USAGE)
        if isinstance(exc, NeurotorchError | OSError | ValueError):
            return _fail(_message(exc), EXIT_DATA)
        return _fail(
            f"unexpected {type(exc).__name__}: {_message(exc)}. Rerun with --debug (or "
            "NEUROTORCH_DEBUG=1) for the traceback, and report it.",
            EXIT_DATA,
        )
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
