"""``neurotorch lnm``: lesion network mapping of NIfTI lesion masks over a connectome."""

from __future__ import annotations

import argparse

from neurotorch.cli.arguments import add_endpoint_option, probability, storage_options


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neurotorch.connectome import Atlas, ConnectomeBatches, load_lesions, network_map
    from neurotorch.errors import ParameterError
    from neurotorch.plotting.connectome import plot_network_map

    if bool(args.atlas) != bool(args.atlas_labels):
        raise ParameterError("--atlas and --atlas-labels go together: give both or neither.")
    batches = ConnectomeBatches(
        args.connectome, storage_options=storage_options(args), space=args.space
    )
    lesion_options = dict(
        threshold=args.threshold,
        space=args.lesion_space,
        resample=args.resample,
        allow_other_space=args.allow_other_space,
    )
    lesions = load_lesions(args.lesion_dir, batches, **lesion_options)
    result = network_map(
        lesions, batches, device=args.device, method=args.method,
        pini_percentile=args.pini_percentile, n_permutations=args.permutations, seed=args.seed,
    )  # fmt: skip
    tables = {}
    if args.atlas:
        atlas = Atlas.from_files(args.atlas, args.atlas_labels)
        tables["parcels"] = atlas.aggregate(result, kinds=("r", "t"), how=args.aggregation)
        tables["regional_damage"] = atlas.regional_damage(args.lesion_dir, args.threshold)
    paths = result.save(
        args.out, alpha=args.alpha, t_threshold=args.t_threshold,
        table_format=args.table_format, tables=tables,
    )  # fmt: skip
    for k, name in enumerate(result.names):
        png = Path(args.out) / f"{name}_desc-t_map.png"
        paths.append(plot_network_map(result, k, png, kind="t", lesion_mask=lesions.masks[k]))
    print(result.summary(args.alpha, args.t_threshold).to_string(index=False))
    print(f"{len(paths)} files written to {args.out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lnm", help="lesion network mapping of NIfTI lesion masks over a connectome")
    p.add_argument("lesion_dir", help="folder of lesion masks (.nii/.nii.gz) or one mask")
    p.add_argument(
        "--connectome", required=True, help="folder or URL (s3://...) of connectome batch files"
    )
    add_endpoint_option(p)
    p.add_argument("--out", required=True, help="output folder for maps, tables and PNGs")
    p.add_argument(
        "--alpha", type=probability, default=0.05, help="FDR (and FWER) level, in (0, 1)"
    )
    p.add_argument("--t-threshold", type=float, default=None, help="also write |t| > T masks")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--method", choices=["boes", "pini"], default="boes", help="seed voxels")
    p.add_argument("--pini-percentile", type=float, default=20.0, help="PINI loading percentile")
    p.add_argument("--permutations", type=int, default=0, help="sign flips for FWER p maps")
    p.add_argument("--seed", type=int, default=0, help="seed of the sign flips")
    p.add_argument("--threshold", type=float, default=None, help="binarise masks as value > T")
    p.add_argument("--resample", action="store_true", help="resample masks on another grid")
    p.add_argument("--space", default=None, help="connectome space, for files that declare none")
    p.add_argument("--lesion-space", default=None, help="space of the lesion masks")
    p.add_argument(
        "--allow-other-space", action="store_true", help="accept lesions in another space"
    )
    p.add_argument("--atlas", default=None, help="label image for parcel tables")
    p.add_argument("--atlas-labels", default=None, help="labels table of --atlas (tsv/csv/txt)")
    p.add_argument(
        "--aggregation", choices=["mean", "sum", "median", "percent"], default="mean",
        help="how --atlas parcels summarise the maps",
    )  # fmt: skip
    p.add_argument("--table-format", choices=["csv", "tsv"], default="csv", help="table format")
    p.set_defaults(func=run)
