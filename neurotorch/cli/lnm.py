"""``neurotorch lnm``: lesion network mapping of NIfTI lesion masks over a connectome."""

from __future__ import annotations

import argparse

from neurotorch.cli.arguments import (
    add_endpoint_option,
    add_unit_options,
    non_negative_int,
    positive_int,
    probability,
    storage_options,
    unit_options,
    uses_units,
)
from neurotorch.cli.verify import print_lines

AGGREGATIONS = ("mean", "sum", "median", "percent")
CONVENTIONS = ("neurotorch", "lacuna")


def torch_device(text: str) -> str:
    """An argparse type: a torch device that exists on this machine (``cuda`` needs a GPU)."""
    from neurotorch.config import check_device
    from neurotorch.errors import ParameterError

    try:
        check_device(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def run(args: argparse.Namespace) -> int:
    from neurotorch.connectome import Atlas, ConnectomeBatches, load_lesions, network_map
    from neurotorch.connectome.outputs import check_output_folder
    from neurotorch.errors import MissingDependencyError, ParameterError
    from neurotorch.plotting.connectome import plot_network_map, require_nilearn

    if bool(args.atlas) != bool(args.atlas_labels):
        raise ParameterError("--atlas and --atlas-labels go together: give both or neither.")
    units = uses_units(args) or bool(args.units_dir)
    if units and args.device != "cpu":
        raise ParameterError(
            f"--device {args.device} applies to the run in one process; units of work "
            "(--workers, --scheduler, --unit) compute on the CPU."
        )
    writes_maps = not (args.list_units or args.unit)
    if writes_maps:  # refuse what would fail at the end before minutes of work, not after
        check_output_folder(args.out, overwrite=args.overwrite, what="lesion network maps")
    if args.figures and writes_maps:
        try:
            require_nilearn()
        except MissingDependencyError as exc:
            raise MissingDependencyError(f"{exc} Or pass --no-figures.") from None
    batches = ConnectomeBatches(
        args.connectome, storage_options=storage_options(args), space=args.space
    )
    lesions = load_lesions(
        args.lesion_dir,
        batches,
        threshold=args.threshold,
        space=args.lesion_space,
        resample=args.resample,
        allow_other_space=args.allow_other_space,
    )
    options = dict(
        method=args.method,
        pini_percentile=args.pini_percentile,
        n_permutations=args.permutations,
        seed=args.seed,
    )
    if units:
        result = _run_units(args, lesions, batches, options=options)
        if result is None:
            return 0
    else:
        result = network_map(lesions, batches, device=args.device, **options)
    tables = {}
    if args.atlas:
        atlas = Atlas.from_files(args.atlas, args.atlas_labels)
        tables["parcels"] = atlas.aggregate(
            result, kinds=("r", "t"), how=args.aggregation, convention=args.convention
        )
        tables["regional_damage"] = atlas.regional_damage(args.lesion_dir, args.threshold)
    paths = result.save(
        args.out,
        alpha=args.alpha,
        t_threshold=args.t_threshold,
        table_format=args.table_format,
        tables=tables,
        figure=plot_network_map if args.figures else None,
        overwrite=args.overwrite,
    )
    print(result.summary(args.alpha, args.t_threshold))
    print(f"{len(paths)} files written to {args.out}")
    return 0


def _run_units(args: argparse.Namespace, lesions, batches, options: dict):
    """The run as units of work (`neurotorch.connectome.lnm_units`): the result, or ``None``
    after ``--list-units`` or ``--unit`` (which print what they did)."""
    from neurotorch.connectome.lnm_units import plan_network_map
    from neurotorch.parallel import result_lines, run_units, unit_lines

    plan = plan_network_map(
        args.units_dir or f"{args.out.rstrip('/')}.units",
        lesions,
        batches,
        lesions_per_unit=args.lesions_per_unit,
        permutations_per_unit=args.permutations_per_unit,
        **options,
    )
    engine = unit_options(args)
    if args.list_units:
        print_lines(unit_lines(plan.units()))
        return None
    if engine["only"]:
        print_lines(result_lines(run_units(plan.units(), **engine)))
        return None
    return plan.run(workers=engine["workers"], scheduler=engine["scheduler"])


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lnm", help="lesion network mapping of NIfTI lesion masks over a connectome")
    p.add_argument("lesion_dir", help="folder of lesion masks (.nii/.nii.gz) or one mask")
    p.add_argument(
        "--connectome", required=True, help="folder or URL (s3://...) of connectome batch files"
    )
    add_endpoint_option(p)
    p.add_argument(
        "--out",
        required=True,
        help="output folder: new, empty, or a previous neurotorch output (with --overwrite)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace a previous neurotorch output at --out"
    )
    p.add_argument(
        "--alpha", type=probability, default=0.05, help="FDR (and FWER) level, in (0, 1)"
    )
    p.add_argument("--t-threshold", type=float, default=None, help="also write |t| > T masks")
    p.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--method", choices=["boes", "pini"], default="boes", help="seed voxels")
    p.add_argument("--pini-percentile", type=float, default=20.0, help="PINI loading percentile")
    p.add_argument(
        "--permutations", type=non_negative_int, default=0, help="sign flips for FWER p maps"
    )
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
        "--aggregation",
        choices=AGGREGATIONS,
        default="mean",
        help="how --atlas parcels summarise the maps",
    )
    p.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="neurotorch",
        help="parcel statistics over the brain mask (neurotorch) or the whole grid (lacuna)",
    )
    p.add_argument(
        "--table-format", choices=["csv", "tsv"], default="csv", help="format of the tables"
    )
    p.add_argument(
        "--no-figures",
        dest="figures",
        action="store_false",
        help="skip the <lesion>_figure.png maps (drawn with nilearn)",
    )
    units = add_unit_options(p)
    units.add_argument(
        "--units-dir",
        default=None,
        help="folder of the units' outputs, seen by every worker (default: OUT.units)",
    )
    units.add_argument(
        "--lesions-per-unit", type=positive_int, default=32, help="lesions per unit of work"
    )
    units.add_argument(
        "--permutations-per-unit",
        type=positive_int,
        default=1000,
        help="sign flips per permutation unit",
    )
    p.set_defaults(func=run)
