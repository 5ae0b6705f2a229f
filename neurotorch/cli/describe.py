"""``neurotorch describe``: summarise a dataset folder or URL."""

from __future__ import annotations

import argparse

from neurotorch.cli.arguments import add_endpoint_option, storage_options
from neurotorch.cli.verify import print_lines


def run(args: argparse.Namespace) -> int:
    import json

    from neurotorch.describe import describe

    summary = describe(args.source, storage_options=storage_options(args))
    text = json.dumps(summary.to_dict(), indent=2) if args.json else str(summary)
    print_lines(text.splitlines())
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "describe", help="summarise a dataset folder or URL (fMRI, M/EEG, connectome)"
    )
    p.add_argument("source", help="dataset root: a folder or a URL such as s3://bucket/prefix")
    add_endpoint_option(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)
