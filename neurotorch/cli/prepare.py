"""``neurotorch prepare``: build the prepared (memory-mappable) betas store.

Each session is one unit of work (`neurotorch.data.fmri.store.SessionUnit`), run in this process,
on local workers (``--workers N``), on a Dask cluster (``--scheduler ADDRESS``), or one unit per
job-array task (``--unit K``, with the positions ``--list-units`` prints).
"""

from __future__ import annotations

import argparse
from collections import Counter

from neurotorch.cli.arguments import add_unit_options, unit_options
from neurotorch.cli.verify import print_lines


def run(args: argparse.Namespace) -> int:
    from neurotorch.data.fmri.store import opened_store, prepare_units
    from neurotorch.fmri.voxel_selection import VoxelSelection
    from neurotorch.parallel import run_units, unit_lines

    voxels = VoxelSelection(
        roi=args.roi, nc_threshold=args.nc_threshold, mask_source=args.mask_source
    )
    per_subject = {
        subject: prepare_units(
            args.data_dir,
            subject,
            args.session,
            voxels=voxels,
            dtype=args.dtype,
            cache_dir=args.cache_dir,
        )
        for subject in args.subject
    }
    units = [unit for subject_units in per_subject.values() for unit in subject_units]
    if args.list_units:
        print_lines(unit_lines(units))
        return 0
    results = run_units(units, **unit_options(args), desc="prepare")
    counts = Counter(result.status for result in results)
    print(f"units: {counts['ran']} ran, {counts['skipped']} already done")
    if args.unit is not None:
        return 0
    for subject, subject_units in per_subject.items():
        store = opened_store(subject_units, nan_policy="raise")
        print(
            f"{subject}: {len(store.sessions)} session(s) × {store.n_voxels} voxels "
            f"({store.dtype}) in {store.directory}"
        )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare", help="build the prepared (memory-mappable) betas store of LAION-fMRI subjects"
    )
    p.add_argument("--data-dir", default=None, help="dataset root (default: the configured root)")
    p.add_argument("--subject", nargs="+", default=["sub-01"], help="subject id(s)")
    p.add_argument("--session", nargs="+", default=None, help="session id(s); default all")
    p.add_argument(
        "--roi", nargs="+", default=None, help="ROI names/categories (union); default whole brain"
    )
    p.add_argument(
        "--nc-threshold",
        type=float,
        default=None,
        help="keep voxels whose noise ceiling (%%) is at least this",
    )
    p.add_argument(
        "--mask-source",
        default="anatomical",
        choices=["anatomical", "rsquare"],
        help="brain mask: the anatomical mask, or the voxels whose mean R² is finite and not 0",
    )
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "float16"], help="dtype of the store"
    )
    p.add_argument("--cache-dir", default=None, help="store folder (default: $NEUROTORCH_CACHE)")
    add_unit_options(p)
    p.set_defaults(func=run)
