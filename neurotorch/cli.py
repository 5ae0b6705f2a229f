"""The ``neurotorch`` command.

``fit``/``validate``/``test``/``predict`` go to Lightning's CLI (``--config configs/x.yaml``);
the other sub-commands (``synth``, ``prepare``, ``describe``, ...) are plain argparse commands,
each a small function below that calls the library.

Every sub-command fails the same way: one ``error: <what is wrong and what to do>`` on standard
error and exit status 2 for a usage error (unknown option, bad value) or 1 for anything else (a
missing or damaged file, an unknown subject). ``--debug`` (anywhere on the line) or
``NEUROTORCH_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
SIZE_PRESETS = ("tiny", "small", "bench")  # the SIZES of every synthetic family
DEBUG_FLAG = "--debug"
EXIT_USAGE, EXIT_DATA = 2, 1


class UsageError(Exception):
    """The command line itself is wrong (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser that raises `UsageError` instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def run_lightning(argv: Sequence[str]) -> int:
    """Run LightningCLI with ``class_path``/``init_args`` configs for model and data."""
    from neurotorch.lightning.cli import NeurotorchLightningCLI

    try:
        NeurotorchLightningCLI(
            args=list(argv), parser_kwargs={"exit_on_error": False, "prog": "neurotorch"}
        )
    except argparse.ArgumentError as err:
        raise UsageError(f"{err} (see 'neurotorch {argv[0]} --help')") from err
    return 0


# family -> "module:function"; each writer takes (out, size=, seed=, overwrite=) and returns the root.
SYNTH_FAMILIES = {
    "laion-fmri": "neurotorch.synthetic.laion_fmri:make_laion_fmri",
    "calibrain": "neurotorch.synthetic.meeg:make_calibrain",
    "connectome": "neurotorch.synthetic.connectome:make_connectome_dataset",
}


def _cmd_synth(args: argparse.Namespace) -> int:
    import importlib

    module_name, func_name = SYNTH_FAMILIES[args.family].split(":")
    writer = getattr(importlib.import_module(module_name), func_name)
    options = {"shuffle_trials_tables": True} if args.shuffled_trials else {}
    if options and args.family != "laion-fmri":
        raise SystemExit("error: --shuffled-trials applies to laion-fmri only")
    root = writer(args.out, size=args.size, seed=args.seed, overwrite=args.overwrite, **options)
    print(f"synthetic {args.family} dataset written to {root}")
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic dataset in a real on-disk format")
    p.add_argument("family", choices=sorted(SYNTH_FAMILIES), help="dataset family")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", default="small", choices=SIZE_PRESETS, help="size preset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument(
        "--shuffled-trials",
        action="store_true",
        help="laion-fmri: write trials tables in a random row order (pairing is by beta_index)",
    )
    p.set_defaults(func=_cmd_synth)


def _cmd_download(args: argparse.Namespace) -> int:
    from neurotorch.fmri.download import download_laion_fmri

    options = _storage_options(args)
    result = download_laion_fmri(
        args.out,
        subjects=args.subject,
        sessions=args.ses,
        include_stimuli=args.include_stimuli,
        include_anatomical=args.include_anatomical,
        source=args.source,
        storage_options=options,
        accept_license=args.accept_license,
        workers=args.workers,
    )
    present = len(result.files) - len(result.transferred)
    print(
        f"{len(result.files)} files in {result.out}: {len(result.transferred)} transferred "
        f"({result.bytes_transferred / 1e6:.1f} MB), {present} already complete"
    )
    return 0


def _storage_options(args: argparse.Namespace) -> dict | None:
    """fsspec options from ``--endpoint-url`` (``None``: the environment decides)."""
    return {"endpoint_url": args.endpoint_url} if args.endpoint_url else None


def _add_endpoint_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint-url", default=None, help="S3 endpoint (default: AWS_ENDPOINT_URL_S3)"
    )


def _add_download(sub: argparse._SubParsersAction) -> None:
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
    _add_endpoint_option(p)
    p.add_argument("--workers", type=positive_int, default=8, help="parallel transfers")
    p.set_defaults(func=_cmd_download)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from neurotorch.data.store import build_store

    for subject in args.subject:
        store = build_store(
            args.data_dir, subject, args.session, roi=args.roi, nc_threshold=args.nc_threshold,
            mask_source=args.mask_source, dtype=args.dtype, cache_dir=args.cache_dir,
        )  # fmt: skip
        print(
            f"{subject}: {len(store.sessions)} session(s) × {store.n_voxels} voxels ({store.dtype}) in {store.directory}"
        )
    return 0


def _add_prepare(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--mask-source", default="anatomical", choices=["anatomical", "rsquare"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--cache-dir", default=None, help="store folder (default: $NEUROTORCH_CACHE)")
    p.set_defaults(func=_cmd_prepare)


def _cmd_describe(args: argparse.Namespace) -> int:
    import json

    from neurotorch.describe import describe

    options = _storage_options(args)
    summary = describe(args.source, storage_options=options)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary)
    return 0


def _add_describe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "describe", help="summarise a dataset folder or URL (fMRI, M/EEG, connectome)"
    )
    p.add_argument("source", help="dataset root: a folder or a URL such as s3://bucket/prefix")
    _add_endpoint_option(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_describe)


def _cmd_verify(args: argparse.Namespace) -> int:
    from neurotorch.io.integrity import file_table, summary_table, verify_path

    options = _storage_options(args)
    results = verify_path(args.source, options)
    listed = [r for r in results if args.all or r.status == "bad"]
    for line in [*(file_table(listed) if listed else ()), *summary_table(results)]:
        print(line)
    return 1 if any(r.status == "bad" for r in results) else 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="read every file of a dataset folder or URL in full and check its checksums"
    )
    p.add_argument("source", help="a folder, a file, or a URL such as s3://bucket/prefix")
    _add_endpoint_option(p)
    p.add_argument("--all", action="store_true", help="list every file, not only the bad ones")
    p.set_defaults(func=_cmd_verify)


def _cmd_lnm(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neurotorch.connectome import Atlas, ConnectomeBatches, load_lesions, network_map
    from neurotorch.errors import ParameterError
    from neurotorch.plotting.connectome import plot_network_map

    if bool(args.atlas) != bool(args.atlas_labels):
        raise ParameterError("--atlas and --atlas-labels go together: give both or neither.")
    options = _storage_options(args)
    batches = ConnectomeBatches(args.connectome, storage_options=options, space=args.space)
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


def _add_lnm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lnm", help="lesion network mapping of NIfTI lesion masks over a connectome")
    p.add_argument("lesion_dir", help="folder of lesion masks (.nii/.nii.gz) or one mask")
    p.add_argument(
        "--connectome", required=True, help="folder or URL (s3://...) of connectome batch files"
    )
    _add_endpoint_option(p)
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
    p.add_argument("--table-format", choices=["csv", "tsv"], default="csv")
    p.set_defaults(func=_cmd_lnm)


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def probability(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


PARSER_BUILDERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_synth,
    _add_prepare,
    _add_download,
    _add_describe,
    _add_verify,
    _add_lnm,
]


def build_parser() -> argparse.ArgumentParser:
    from neurotorch import __version__

    parser = _Parser(
        prog="neurotorch",
        description="PyTorch-first data loading for NeuroAI. "
        "Training: neurotorch fit|validate|test --config configs/<experiment>.yaml",
        epilog="Environment: NEUROTORCH_DATA, NEUROTORCH_CACHE, NEUROTORCH_PROGRESS=0, "
        "NEUROTORCH_LOG_LEVEL, NEUROTORCH_DEBUG=1.",
    )
    parser.add_argument("--version", action="version", version=f"neurotorch {__version__}")
    parser.add_argument(
        DEBUG_FLAG, action="store_true", help="show the traceback of an error (any position)"
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name in LIGHTNING_SUBCOMMANDS:
        sub.add_parser(
            name, help=f"Lightning {name} from a YAML config (--config FILE)", add_help=False
        )
    for add in PARSER_BUILDERS:
        add(sub)
    return parser


def _run(argv: list[str]) -> int:
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        return run_lightning(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


def _message(exc: BaseException) -> str:
    """The exception's own message, also when torch re-raised it from a DataLoader worker.

    torch puts the worker's traceback into the message ("Caught X in DataLoader worker process
    0. Original Traceback ..."); only the text after its last ``module.X: `` line is kept.
    """
    text = str(exc).rstrip() or type(exc).__name__
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    start = text.rfind(f"\n{name}: ")
    if "Original Traceback" in text and start >= 0:
        text = text[start + len(name) + 3 :]
    return text


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``neurotorch`` command line; return its exit status."""
    from neurotorch.errors import NeurotorchError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get("NEUROTORCH_DEBUG", "0") not in ("", "0")
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        return _run(argv)
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, UsageError):
            return _fail(str(exc), EXIT_USAGE)
        if isinstance(exc, NeurotorchError | OSError | ValueError):
            return _fail(_message(exc), EXIT_DATA)
        return _fail(
            f"unexpected {type(exc).__name__}: {_message(exc)}. Rerun with --debug (or NEUROTORCH_DEBUG=1) "
            "for the traceback, and report it.",
            EXIT_DATA,
        )
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
