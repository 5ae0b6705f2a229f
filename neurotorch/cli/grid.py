"""``neurotorch grid``: CaliBrain's calibration grid of simulated runs (`neurotorch.meeg.run_grid`),
one unit of work per run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from neurotorch.cli.arguments import (
    LazyChoices,
    add_endpoint_option,
    add_unit_options,
    non_negative_int,
    positive_int,
    storage_options,
    unit_options,
)
from neurotorch.cli.verify import print_lines
from neurotorch.meeg.layout import LEADFIELD_DIR, ORIENTATIONS, leadfield_name

if TYPE_CHECKING:
    from neurotorch.meeg.leadfield import LeadfieldBuilder

SOLVERS = LazyChoices("neurotorch.meeg.solvers:SOLVERS")
NOISE_TYPES = LazyChoices("neurotorch.meeg.posterior:NOISE_TYPES")
MANIFEST_PATHS = LazyChoices("neurotorch.meeg.grid:MANIFEST_PATHS")


def alpha_snr(text: str) -> float:
    """An argparse type: a signal-to-noise mixing weight, a number in [0, 1]."""
    from neurotorch._options import check_number
    from neurotorch.errors import ParameterError

    try:
        return check_number("alpha_SNR", float(text), minimum=0.0, maximum=1.0)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def solver_options(text: str) -> dict:
    """An argparse type: a JSON object of solver options."""
    try:
        options = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(f'must be a JSON object such as {{"key": 1}}, got {text}')
    return options


def leadfield_dir(text: str) -> str:
    """The leadfield folder: ``text``, or the synthetic CaliBrain root's (written on first use)."""
    from neurotorch.synthetic.resolve import is_synthetic, resolve_data_dir

    if is_synthetic(text):
        return str(Path(resolve_data_dir("calibrain", text)) / LEADFIELD_DIR)
    return text


def found_subjects(builder: LeadfieldBuilder, orientations: list[str]) -> list[str]:
    """The subjects with a leadfield of any of ``orientations`` in the builder's folder."""
    from neurotorch.errors import DataNotFoundError

    suffixes = [
        leadfield_name("S", o).removeprefix("S") for o in orientations
    ]  # _<o>_leadfield.npz
    subjects = sorted(
        {
            name.removesuffix(suffix)
            for name in builder.root.listdir()
            for suffix in suffixes
            if name.endswith(suffix) and len(name) > len(suffix)
        }
    )
    if not subjects:
        raise DataNotFoundError(
            f"No {' or '.join(orientations)} leadfield (<subject>_<orientation>_leadfield.npz) "
            f"in {builder.leadfield_dir}; give the folder that holds them."
        )
    return subjects


def run(args: argparse.Namespace) -> int:
    from neurotorch.errors import DataNotFoundError
    from neurotorch.meeg.grid import MANIFEST, plan_grid
    from neurotorch.meeg.leadfield import LeadfieldBuilder
    from neurotorch.parallel import result_lines, run_units, unit_lines

    builder = LeadfieldBuilder(leadfield_dir(args.leadfield_dir), storage_options(args))
    if not builder.root.isdir():
        raise DataNotFoundError(
            f"Leadfield folder {builder.leadfield_dir} not found: give a folder of "
            "<subject>_<orientation>_leadfield.npz files, or 'synthetic'."
        )
    data_grid = {
        "subject": args.subject or found_subjects(builder, args.orientation),
        "orientation_type": args.orientation,
        "nnz": args.nnz,
        "alpha_SNR": args.alpha_snr,
    }
    plan = plan_grid(
        builder,
        args.out,
        data_grid,
        noise_types=args.noise_types,
        n_runs=args.n_runs,
        random_state=args.seed,
        solver=args.solver,
        solver_options=args.solver_options,
        manifest_paths=args.manifest_paths,
    )
    engine = unit_options(args)
    if args.list_units:
        print_lines(unit_lines(plan.units()))
        return 0
    if engine["only"]:
        print_lines(result_lines(run_units(plan.units(), **engine)))
        return 0
    todo = sum(not unit.done() for unit in plan.units())
    manifest = plan.run(workers=engine["workers"], scheduler=engine["scheduler"])
    print(f"runs computed: {todo}, already done: {len(manifest) - todo}")
    print(f"manifest: {Path(plan.out_dir, MANIFEST)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "grid", help="CaliBrain's calibration grid: simulated runs, posterior summaries, manifest"
    )
    p.add_argument(
        "leadfield_dir",
        help="folder (or URL) of <subject>_<orientation>_leadfield.npz files, or 'synthetic' "
        "(the built-in synthetic CaliBrain root, written on first use)",
    )
    add_endpoint_option(p)
    p.add_argument(
        "--out",
        required=True,
        help="new folder of the runs (the runs go to OUT.units first, renamed at the end)",
    )
    p.add_argument(
        "--subject",
        nargs="+",
        default=None,
        help="subjects (default: every subject with a leadfield in LEADFIELD_DIR)",
    )
    p.add_argument(
        "--orientation",
        nargs="+",
        choices=ORIENTATIONS,
        default=list(ORIENTATIONS),
        metavar="ORIENTATION",
        help="source orientations: %(choices)s",
    )
    p.add_argument(
        "--nnz", nargs="+", type=positive_int, required=True, help="active sources per trial"
    )
    p.add_argument(
        "--alpha-snr",
        nargs="+",
        type=alpha_snr,
        required=True,
        help="signal weights alpha_SNR in [0, 1] (1: no noise)",
    )
    p.add_argument(
        "--noise-types",
        nargs="+",
        choices=NOISE_TYPES,
        default=["oracle"],
        metavar="NOISE_TYPE",
        help="noise variances of the posterior (CaliBrain's noise_type): %(choices)s",
    )
    p.add_argument("--n-runs", type=positive_int, default=2, help="runs per configuration")
    p.add_argument("--seed", type=non_negative_int, default=42, help="seed of the per-run seeds")
    p.add_argument(
        "--solver", choices=SOLVERS, default="BMN", metavar="NAME", help="solver: %(choices)s"
    )
    p.add_argument(
        "--solver-options",
        type=solver_options,
        default=None,
        metavar="JSON",
        help="the solver's options, e.g. '{\"normalization\": true}'",
    )
    p.add_argument(
        "--manifest-paths",
        choices=MANIFEST_PATHS,
        default="relative",
        metavar="HOW",
        help="summary paths in the manifest, %(choices)s: relative to its folder (movable) or "
        "absolute",
    )
    add_unit_options(p)
    p.set_defaults(func=run)
