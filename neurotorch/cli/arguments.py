"""What every sub-command shares: the parser that raises instead of exiting, and argument types."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from neurotorch._lazy import import_object

EXIT_USAGE, EXIT_DATA = 2, 1


class UsageError(Exception):
    """The command line itself is wrong (exit status 2)."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help text followed by the default of every option that has one (not None, not off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and not action.required
        return f"{text} (default: %(default)s)" if shown and "%(default)" not in text else text


class Parser(argparse.ArgumentParser):
    """An argparse parser that raises `UsageError` instead of printing usage and exiting, and
    whose ``--help`` shows every option's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


class LazyChoices:
    """The ``choices`` of an option, a library constant imported on first use (parsing the
    option, or showing help), so that building the parser imports nothing heavy."""

    def __init__(self, target: str):
        self.target = target  # "package.module:NAME"

    def __iter__(self) -> Iterator:
        return iter(import_object(self.target))

    def __contains__(self, value: object) -> bool:
        return value in import_object(self.target)


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # argparse would name the type function ("invalid positive_int value")
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def probability(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def add_endpoint_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint-url", default=None, help="S3 endpoint (default: AWS_ENDPOINT_URL_S3)"
    )


def storage_options(args: argparse.Namespace) -> dict | None:
    """fsspec options from ``--endpoint-url`` (``None``: the environment decides)."""
    return {"endpoint_url": args.endpoint_url} if args.endpoint_url else None


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


# -- units of work (neurotorch.parallel): the same options and help on every command -------------

UNIT_OPTION_HELP = {
    "--workers": "run N units at once on this machine: local worker processes (a Dask "
    "LocalCluster with the 'parallel' extra, else a process pool); download runs them as threads",
    "--scheduler": "run the units on the Dask cluster at ADDRESS (tcp://host:8786) or described "
    "by a scheduler file (.json), e.g. a dask-jobqueue SLURMCluster",
    "--unit": "run only unit K, as listed by --list-units (repeatable); a job array runs one per "
    "task: --unit $SLURM_ARRAY_TASK_ID",
    "--list-units": "print the units (index, done or todo, key) and exit",
}


def add_unit_options(
    parser: argparse.ArgumentParser, workers_default: int | None = None
) -> argparse._ArgumentGroup:
    """``--workers``, ``--scheduler``, ``--unit`` and ``--list-units`` (see docs/parallel.md), in
    a group of their own, returned for the command's own unit options."""
    group = parser.add_argument_group("units of work (docs/parallel.md)")
    group.add_argument(
        "--workers",
        type=positive_int,
        default=workers_default,
        metavar="N",
        help=UNIT_OPTION_HELP["--workers"],
    )
    group.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help=UNIT_OPTION_HELP["--scheduler"]
    )
    group.add_argument(
        "--unit",
        type=non_negative_int,
        action="append",
        default=None,
        metavar="K",
        help=UNIT_OPTION_HELP["--unit"],
    )
    group.add_argument("--list-units", action="store_true", help=UNIT_OPTION_HELP["--list-units"])
    return group


def unit_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `neurotorch.parallel.run_units` the options give."""
    return {"workers": args.workers, "scheduler": args.scheduler, "only": args.unit}


def uses_units(args: argparse.Namespace) -> bool:
    """Whether any unit option was given (a command then runs as units)."""
    return bool(args.workers or args.scheduler or args.unit or args.list_units)
