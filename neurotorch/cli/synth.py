"""``neurotorch synth``: write a synthetic dataset in a real on-disk format."""

from __future__ import annotations

import argparse
from pathlib import Path

from neurotorch._lazy import import_object
from neurotorch.cli.arguments import UsageError, positive_int
from neurotorch.synthetic._once import MARKER
from neurotorch.synthetic.resolve import WRITERS as FAMILIES

SIZE_PRESETS = ("tiny", "small", "bench")  # the SIZES of every synthetic family
LAION_ONLY_SIZES = ("real",)  # LAION-fMRI's own geometry


def run(args: argparse.Namespace) -> int:
    writer = import_object(FAMILIES[args.family])
    options: dict = {"shuffle_trials_tables": True} if args.shuffled_trials else {}
    if args.sessions is not None:
        options["sessions"] = args.sessions
    if args.family != "laion-fmri":
        if options:
            raise UsageError("--shuffled-trials and --sessions apply to laion-fmri only")
        if args.size in LAION_ONLY_SIZES:
            raise UsageError(f"--size {args.size} applies to laion-fmri only")
    out = Path(args.out)
    existed = out.is_dir() and any(out.iterdir())
    before = _marker_stamps(out)
    root = writer(out, size=args.size, seed=args.seed, overwrite=args.overwrite, **options)
    if existed and not args.overwrite:  # the writer reuses only a dataset of the same settings
        if _marker_stamps(out) == before:
            print(f"synthetic {args.family} dataset already in {root} (same size and seed); kept")
        else:
            print(f"synthetic {args.family} dataset in {root} lacked files; written again")
    else:
        done = "replaced in" if existed else "written to"
        print(f"synthetic {args.family} dataset {done} {root}")
    return 0


def _marker_stamps(out: Path) -> list[tuple[str, int]]:
    """The synthetic datasets' markers under ``out`` and their times: a dataset written again
    (because it lacked files) gets a new marker."""
    if not out.is_dir():
        return []
    return sorted((str(p), p.stat().st_mtime_ns) for p in out.rglob(MARKER))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic dataset in a real on-disk format")
    p.add_argument("family", choices=sorted(FAMILIES), help="dataset family")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--size",
        default="small",
        choices=SIZE_PRESETS + LAION_ONLY_SIZES,
        help="size preset; real: LAION-fMRI's geometry (143³ at 1.8 mm, 1,050 trials per "
        "session, ≈ 2.3 GB of betas per session, written in bounded memory)",
    )
    p.add_argument(
        "--sessions",
        type=positive_int,
        default=None,
        help="laion-fmri: sessions per subject (default: the preset's); sessions keep their length",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument(
        "--shuffled-trials",
        action="store_true",
        help="laion-fmri: write trials tables in a random row order (pairing is by beta_index)",
    )
    p.set_defaults(func=run)
