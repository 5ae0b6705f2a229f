"""``neurotorch download``: a subset of a dataset, in parallel and resumable."""

from __future__ import annotations

import argparse

from neurotorch.cli.arguments import (
    add_endpoint_option,
    add_unit_options,
    storage_options,
    unit_options,
)
from neurotorch.cli.verify import print_lines


def run(args: argparse.Namespace) -> int:
    from neurotorch.fmri.download import download_laion_fmri, download_units
    from neurotorch.parallel import unit_lines

    selection = dict(
        subjects=args.subject,
        sessions=args.ses,
        include_stimuli=args.include_stimuli,
        include_anatomical=args.include_anatomical,
        source=args.source,
        storage_options=storage_options(args),
    )
    if args.list_units:
        print_lines(unit_lines(download_units(args.out, **selection)))
        return 0
    result = download_laion_fmri(
        args.out, accept_license=args.accept_license, **selection, **unit_options(args)
    )
    present = len(result.files) - len(result.transferred)
    print(
        f"{len(result.files)} files in {result.out}: {len(result.transferred)} transferred "
        f"({result.bytes_transferred / 1e6:.1f} MB), {present} already complete"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="download a subset of a dataset (parallel, resumable)")
    p.add_argument("family", choices=["laion-fmri"], help="dataset family")
    p.add_argument("--out", required=True, help="local folder that becomes the dataset root")
    p.add_argument(
        "--subject", "--sub", action="append", help="subject id, repeatable (default: all)"
    )
    p.add_argument(
        "--ses", "--session", action="append", help="session id, repeatable (default: all)"
    )
    p.add_argument(
        "--include-stimuli", action="store_true", help="also the stimuli (licence applies)"
    )
    p.add_argument("--include-anatomical", action="store_true", help="also every anatomical image")
    p.add_argument("--accept-license", action="store_true", help="accept the stimulus licence")
    p.add_argument(
        "--source", default=None, help="URL or folder to copy from (default s3://laion-fmri)"
    )
    add_endpoint_option(p)
    add_unit_options(p, workers_default=8)
    p.set_defaults(func=run)
