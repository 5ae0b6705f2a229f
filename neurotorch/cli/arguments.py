"""What every sub-command shares: the parser that raises instead of exiting, and argument types."""

from __future__ import annotations

import argparse

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


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def probability(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    value = float(text)
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
