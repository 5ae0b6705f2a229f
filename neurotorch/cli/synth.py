"""``neurotorch synth``: write a synthetic dataset in a real on-disk format."""

from __future__ import annotations

import argparse
from pathlib import Path

from neurotorch._lazy import import_object
from neurotorch.cli.arguments import UsageError
from neurotorch.synthetic.resolve import WRITERS as FAMILIES

SIZE_PRESETS = ("tiny", "small", "bench")  # the SIZES of every synthetic family


def run(args: argparse.Namespace) -> int:
    writer = import_object(FAMILIES[args.family])
    options = {"shuffle_trials_tables": True} if args.shuffled_trials else {}
    if options and args.family != "laion-fmri":
        raise UsageError("--shuffled-trials applies to laion-fmri only")
    out = Path(args.out)
    existed = out.is_dir() and any(out.iterdir())
    root = writer(out, size=args.size, seed=args.seed, overwrite=args.overwrite, **options)
    if existed and not args.overwrite:  # the writer reuses only a dataset of the same settings
        print(f"synthetic {args.family} dataset already in {root} (same size and seed); kept")
    else:
        done = "replaced in" if existed else "written to"
        print(f"synthetic {args.family} dataset {done} {root}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic dataset in a real on-disk format")
    p.add_argument("family", choices=sorted(FAMILIES), help="dataset family")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", default="small", choices=SIZE_PRESETS, help="size preset")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument(
        "--shuffled-trials",
        action="store_true",
        help="laion-fmri: write trials tables in a random row order (pairing is by beta_index)",
    )
    p.set_defaults(func=run)
