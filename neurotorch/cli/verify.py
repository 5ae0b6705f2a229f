"""``neurotorch verify``: read every file of a dataset in full and check its checksums."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable

from neurotorch.cli.arguments import add_endpoint_option, storage_options


def print_lines(lines: Iterable[str]) -> None:
    """Print ``lines`` to standard output; a reader that closed the pipe (``| head``) ends the
    output quietly, the Unix way, instead of an error."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        # nothing more can be written: point stdout at /dev/null so the flush at exit is silent
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def run(args: argparse.Namespace) -> int:
    from neurotorch.io.integrity import file_table, summary_table
    from neurotorch.verify import verify_path

    results = verify_path(args.source, storage_options(args))
    listed = [r for r in results if args.all or r.status == "bad"]
    print_lines([*(file_table(listed) if listed else ()), *summary_table(results)])
    return 1 if any(r.status == "bad" for r in results) else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="read every file of a dataset folder or URL in full and check its checksums"
    )
    p.add_argument("source", help="a folder, a file, or a URL such as s3://bucket/prefix")
    add_endpoint_option(p)
    p.add_argument("--all", action="store_true", help="list every file, not only the bad ones")
    p.set_defaults(func=run)
