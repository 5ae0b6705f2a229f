"""``neurotorch features``: list models' layers and the feature cache, extract, describe an entry."""

from __future__ import annotations

import argparse
import json

from neurotorch.cli.arguments import UsageError, positive_int


def _json_option(text: str | None, what: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what} must be a JSON object, e.g. '{{\"resize\": 224}}': {exc}"
        ) from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object, got {text!r}")
    return value


def _specs(args: argparse.Namespace, layers: list[str]) -> list:
    from neurotorch.features import FeatureSpec

    common = {
        "model": args.model,
        "source": args.source,
        "weights": args.weights,
        "config": _json_option(args.config, "--config"),
        "transform": _json_option(args.transform, "--transform"),
        "seed": args.seed,
    }
    pooling = getattr(args, "pooling", "avg")
    k = getattr(args, "k", None)
    return [FeatureSpec(layer=layer, pooling=pooling, k=k, **common) for layer in layers]


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:.1f} kB"


def _entry_line(summary: dict) -> str:
    n_images, dim = summary["shape"]
    done, total = summary["chunks"]
    model = summary["model"]
    return (
        f"{summary['entry']}  {summary['name']}: {model['model']} [{summary['layer'] or 'output'}"
        f", {summary['pooling']['kind']}] {n_images} x {dim if dim is not None else '?'}, "
        f"chunks {done}/{total}{' complete' if summary['complete'] else ''}, "
        f"{_size(summary['bytes'])}"
    )


def run_list(args: argparse.Namespace) -> int:
    from neurotorch.features.cache import features_root, list_entries

    if args.model is not None:
        from neurotorch.features.forward import layer_shapes

        for name, kind, shape in layer_shapes(_specs(args, [""])[0]):
            shown = "x".join(map(str, shape)) if shape is not None else "-"
            print(f"{name or '(output)'}  {kind}  {shown}")
        return 0
    entries = list_entries(args.cache_dir)
    if not entries:
        print(f"the feature cache {features_root(args.cache_dir)} is empty")
    for entry in entries:
        print(_entry_line(entry.describe()))
    return 0


def run_extract(args: argparse.Namespace) -> int:
    from neurotorch.features import ExtractionOptions, extract_features
    from neurotorch.synthetic.resolve import resolve_data_dir

    options = ExtractionOptions(
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        chunk_size=args.chunk_size,
        workers=args.workers,
        scheduler=args.scheduler,
        cache_dir=args.cache_dir,
    )
    data_dir = resolve_data_dir("laion-fmri", args.data_dir)
    for entry in extract_features(_specs(args, args.layer), data_dir, options=options):
        print(_entry_line(entry.describe()))
    return 0


def run_describe(args: argparse.Namespace) -> int:
    from neurotorch.features.cache import find_entry

    summary = find_entry(args.entry, args.cache_dir).describe()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(_entry_line(summary))
    for part in ("model", "layer", "pooling", "transform", "stimuli", "chunk_size", "path"):
        print(f"  {part}: {json.dumps(summary[part])}")
    return 0


def _model_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "--model",
        required=required,
        default=None,
        help="model name: a transformers hub id or folder, a torchvision/timm/open_clip name",
    )
    p.add_argument(
        "--source",
        default=None,
        choices=["transformers", "torchvision", "timm", "open_clip"],
        help="library of the model (default: transformers)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="weights: the pretrained default if omitted; 'random' (seeded, no download), a "
        "torchvision weights name, an open_clip tag, or a local file",
    )
    p.add_argument(
        "--config", default=None, help="architecture options as JSON (transformers: model_type...)"
    )
    p.add_argument(
        "--transform",
        default=None,
        help="preprocessing as JSON (ImageTransform fields: resize, crop, mean, std, "
        "interpolation); default: the model's own",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of random weights and projections")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from neurotorch.cli.arguments import Parser

    p = sub.add_parser(
        "features", help="stimulus features of vision models: list, extract, describe the cache"
    )
    verbs = p.add_subparsers(
        dest="verb",
        metavar="verb",
        parser_class=Parser,
        required=True,
        help="list, extract or describe (neurotorch features VERB --help)",
    )
    listing = verbs.add_parser(
        "list", help="the feature cache's entries, or (--model) a model's layers and output shapes"
    )
    _model_options(listing, required=False)
    extract = verbs.add_parser(
        "extract", help="compute a model's layers over the stimulus set into the cache"
    )
    _model_options(extract, required=True)
    extract.add_argument("--layer", nargs="+", required=True, help="module name(s), '' = output")
    extract.add_argument(
        "--pooling",
        default="avg",
        choices=["avg", "cls", "flatten", "random_projection", "pca"],
        help="how a layer's output becomes one vector per image",
    )
    extract.add_argument("--k", type=positive_int, default=None, help="dimensions of a projection")
    extract.add_argument(
        "--data-dir", default=None, help="dataset root, or 'synthetic' (default: configured root)"
    )
    extract.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if any)")
    extract.add_argument("--batch-size", type=positive_int, default=64, help="images per pass")
    extract.add_argument(
        "--num-workers", type=int, default=0, help="DataLoader workers decoding images"
    )
    extract.add_argument("--chunk-size", type=positive_int, default=256, help="images per chunk")
    extract.add_argument(
        "--workers", type=positive_int, default=None, help="local processes running chunks"
    )
    extract.add_argument(
        "--scheduler", default=None, help="Dask scheduler address (tcp://host:8786)"
    )
    describe = verbs.add_parser("describe", help="one cache entry: key parts, shape, chunks, size")
    describe.add_argument("entry", help="an entry's name (or a unique prefix) or folder")
    describe.add_argument("--json", action="store_true", help="print the summary as JSON")
    for verb in (listing, extract, describe):
        verb.add_argument(
            "--cache-dir", default=None, help="cache folder (default: $NEUROTORCH_CACHE)"
        )
    listing.set_defaults(func=run_list)
    extract.set_defaults(func=run_extract)
    describe.set_defaults(func=run_describe)
