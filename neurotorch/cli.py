"""The ``neurotorch`` command.

``fit``/``validate``/``test``/``predict`` go to Lightning's CLI (``--config configs/x.yaml``);
the other sub-commands (``synth``, ``prepare``, ``describe``, ...) are plain argparse commands,
each a small function below that calls the library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def run_lightning(argv: Sequence[str]) -> int:
    """Run LightningCLI with ``class_path``/``init_args`` configs for model and data."""
    from neurotorch.lightning.cli import NeurotorchLightningCLI

    NeurotorchLightningCLI(args=list(argv))
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
    root = writer(args.out, size=args.size, seed=args.seed, overwrite=args.overwrite)
    print(f"synthetic {args.family} dataset written to {root}")
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic dataset in a real on-disk format")
    p.add_argument("family", choices=sorted(SYNTH_FAMILIES), help="dataset family")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", default="small", help="size preset: tiny, small or bench")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.set_defaults(func=_cmd_synth)


def _cmd_download(args: argparse.Namespace) -> int:
    from neurotorch.errors import NeurotorchError
    from neurotorch.fmri.download import download_laion_fmri

    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    try:
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
    except NeurotorchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    present = len(result.files) - len(result.transferred)
    print(
        f"{len(result.files)} files in {result.out}: {len(result.transferred)} transferred "
        f"({result.bytes_transferred / 1e6:.1f} MB), {present} already complete"
    )
    return 0


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
    p.add_argument(
        "--endpoint-url", default=None, help="S3 endpoint (default: AWS_ENDPOINT_URL_S3)"
    )
    p.add_argument("--workers", type=int, default=8, help="parallel transfers")
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
    p.add_argument("--data-dir", default=None, help="dataset root (default: $LAION_FMRI_DATA_DIR)")
    p.add_argument("--subject", nargs="+", default=["sub-01"], help="subject id(s)")
    p.add_argument("--session", nargs="+", default=None, help="session id(s); default all")
    p.add_argument(
        "--roi", nargs="+", default=None, help="ROI names/categories (union); default whole brain"
    )
    p.add_argument(
        "--nc-threshold",
        type=float,
        default=None,
        help="keep voxels whose noise ceiling (%%) exceeds this",
    )
    p.add_argument("--mask-source", default="anatomical", choices=["anatomical", "rsquare"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--cache-dir", default=None, help="store folder (default: $NEUROTORCH_CACHE)")
    p.set_defaults(func=_cmd_prepare)


def _cmd_describe(args: argparse.Namespace) -> int:
    import json

    from neurotorch.describe import describe
    from neurotorch.errors import NeurotorchError

    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    try:
        summary = describe(args.source, storage_options=options)
    except NeurotorchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary)
    return 0


def _add_describe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "describe", help="summarise a dataset folder or URL (fMRI, M/EEG, connectome)"
    )
    p.add_argument("source", help="dataset root: a folder or a URL such as s3://bucket/prefix")
    p.add_argument(
        "--endpoint-url", default=None, help="S3 endpoint (default: AWS_ENDPOINT_URL_S3)"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_describe)


def _cmd_verify(args: argparse.Namespace) -> int:
    from neurotorch.errors import NeurotorchError
    from neurotorch.io.integrity import file_table, summary_table, verify_path

    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    try:
        results = verify_path(args.source, options)
    except NeurotorchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    listed = [r for r in results if args.all or r.status == "bad"]
    for line in [*(file_table(listed) if listed else ()), *summary_table(results)]:
        print(line)
    return 1 if any(r.status == "bad" for r in results) else 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="read every file of a dataset folder or URL in full and check its checksums"
    )
    p.add_argument("source", help="a folder, a file, or a URL such as s3://bucket/prefix")
    p.add_argument(
        "--endpoint-url", default=None, help="S3 endpoint (default: AWS_ENDPOINT_URL_S3)"
    )
    p.add_argument("--all", action="store_true", help="list every file, not only the bad ones")
    p.set_defaults(func=_cmd_verify)


def _cmd_lnm(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neurotorch.connectome import ConnectomeBatches, load_lesions, network_map
    from neurotorch.plotting.connectome import plot_network_map

    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    batches = ConnectomeBatches(args.connectome, storage_options=options)
    lesions = load_lesions(args.lesion_dir, batches)
    result = network_map(lesions, batches, device=args.device)
    paths = result.save(args.out, alpha=args.alpha)
    for k, name in enumerate(result.names):
        png = Path(args.out) / f"{name}_desc-t_map.png"
        paths.append(plot_network_map(result, k, png, kind="t", lesion_mask=lesions.masks[k]))
    print(result.summary(args.alpha).to_string(index=False))
    print(f"{len(paths)} files written to {args.out}")
    return 0


def _add_lnm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lnm", help="lesion network mapping of NIfTI lesion masks over a connectome")
    p.add_argument("lesion_dir", help="folder of lesion masks (.nii/.nii.gz) or one mask")
    p.add_argument(
        "--connectome", required=True, help="folder or URL (s3://...) of connectome batch files"
    )
    p.add_argument(
        "--endpoint-url", default=None, help="S3 endpoint (default: AWS_ENDPOINT_URL_S3)"
    )
    p.add_argument("--out", required=True, help="output folder for maps, summary.csv and PNGs")
    p.add_argument("--alpha", type=float, default=0.05, help="FDR level of the summary")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.set_defaults(func=_cmd_lnm)


PARSER_BUILDERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_synth,
    _add_prepare,
    _add_download,
    _add_describe,
    _add_verify,
    _add_lnm,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurotorch",
        description="PyTorch-first data loading for NeuroAI. "
        "Training: neurotorch fit|validate|test --config configs/<experiment>.yaml",
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name in LIGHTNING_SUBCOMMANDS:
        sub.add_parser(
            name, help=f"Lightning {name} from a YAML config (--config FILE)", add_help=False
        )
    for add in PARSER_BUILDERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        return run_lightning(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)
