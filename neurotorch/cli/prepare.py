"""``neurotorch prepare``: build the prepared (memory-mappable) betas store."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from neurotorch.data.fmri.store import build_store
    from neurotorch.fmri.voxel_selection import VoxelSelection

    voxels = VoxelSelection(
        roi=args.roi, nc_threshold=args.nc_threshold, mask_source=args.mask_source
    )
    for subject in args.subject:
        store = build_store(
            args.data_dir,
            subject,
            args.session,
            voxels=voxels,
            dtype=args.dtype,
            cache_dir=args.cache_dir,
        )
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
        help="brain mask: the anatomical mask, or R2mean > 0",
    )
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "float16"], help="dtype of the store"
    )
    p.add_argument("--cache-dir", default=None, help="store folder (default: $NEUROTORCH_CACHE)")
    p.set_defaults(func=run)
