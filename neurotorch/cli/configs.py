"""``neurotorch configs``: the built-in experiment configs, listed, and copied out to edit.

The configs ship inside the package (``neurotorch/configs/*.yaml``; a checkout's top-level
``configs/`` is a link to that folder). ``--config`` of ``fit``/``validate``/``test``/``predict``
takes a file, or the name of a built-in config from any folder: ``encoder``, ``encoder.yaml``
and ``configs/encoder.yaml`` all name ``neurotorch/configs/encoder.yaml`` when no such file is
there (`resolve_config`).
"""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path

import yaml

from neurotorch.cli.arguments import UsageError
from neurotorch.errors import DatasetExistsError
from neurotorch.io.atomic import write_text

SUFFIX = ".yaml"
FOLDER = "configs"


def builtin_folder() -> Path:
    """The package's folder of built-in configs."""
    return Path(str(resources.files("neurotorch") / FOLDER))


def builtin_configs() -> dict[str, Path]:
    """Name → path of every built-in config, by name."""
    return {path.stem: path for path in sorted(builtin_folder().glob(f"*{SUFFIX}"))}


def describe(path: Path) -> str:
    """The first line of a config's leading comment (what it trains)."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def builtin_name(text: str) -> str | None:
    """The built-in config that ``text`` names (``encoder``, ``encoder.yaml``,
    ``configs/encoder.yaml``), or None."""
    path = Path(text)
    if path.parent not in (Path("."), Path(FOLDER)) or path.suffix not in ("", SUFFIX):
        return None
    return path.stem if path.stem in builtin_configs() else None


def resolve_config(text: str) -> str:
    """The file ``--config text`` means: ``text`` itself if it is a file, else the built-in config
    it names; `UsageError` listing the built-ins otherwise, or naming the line of a file that
    is not valid YAML."""
    if "://" in text:
        return text
    if os.path.isfile(text):
        check_yaml(Path(text))
        return text
    name = builtin_name(text)
    if name is None:
        raise UsageError(
            f"--config {text}: no such file, and no built-in config of that name; built-in: "
            f"{', '.join(builtin_configs())} (neurotorch configs lists them)"
        )
    return str(builtin_configs()[name])


def check_yaml(path: Path) -> None:
    """`UsageError` naming the lines and columns of what is wrong in a config file that is not
    valid YAML (Lightning's parser reports the problem without its place)."""
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UsageError(
            f"--config {path}: not valid YAML: {_yaml_problem(err)}; fix the file"
        ) from err


def _yaml_problem(err: yaml.YAMLError) -> str:
    if not isinstance(err, yaml.MarkedYAMLError):  # e.g. a control character
        return " ".join(str(err).split())
    parts = [
        f"{text} at line {mark.line + 1}, column {mark.column + 1}" if mark else text
        for text, mark in ((err.context, err.context_mark), (err.problem, err.problem_mark))
        if text
    ]
    return ": ".join(parts)


def copy_config(name: str, destination: str | None = None, *, force: bool = False) -> Path:
    """Copy the built-in config ``name`` to ``destination`` (a file, or a folder to put
    ``<name>.yaml`` in: an existing one, or a new one written with a trailing slash; default
    the current folder); never over a file unless ``force``."""
    found = builtin_name(name)
    if found is None:
        raise UsageError(f"no built-in config {name!r}; built-in: {', '.join(builtin_configs())}")
    target = Path(destination or ".")
    if target.is_dir() or str(destination).endswith(("/", os.sep)):
        target = target / f"{found}{SUFFIX}"
    if target.exists() and not force:
        raise DatasetExistsError(
            f"{target} exists; choose another destination, or replace it with --force"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_text(target, builtin_configs()[found].read_text())


def run(args: argparse.Namespace) -> int:
    if args.action == "copy":
        if not args.name:
            raise UsageError("configs copy needs the NAME of a built-in config")
        path = copy_config(args.name, args.destination, force=args.force)
        print(f"{args.name} copied to {path}; run it with: neurotorch fit --config {path}")
        return 0
    if args.name:
        raise UsageError(f"unexpected {args.name!r}: use 'neurotorch configs copy NAME [DEST]'")
    configs = builtin_configs()
    width = max(map(len, configs))
    for name, path in configs.items():
        print(f"{name:<{width}}  {describe(path)}")
    print("\nrun one: neurotorch fit --config NAME; edit one: neurotorch configs copy NAME [DEST]")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "configs",
        help="list the built-in experiment configs, or copy one out to edit",
        description="Without arguments: list the built-in configs (neurotorch fit --config NAME "
        "runs one from any folder). 'copy NAME [DEST]' writes one to DEST (a file or a folder; "
        "default the current folder) to edit.",
    )
    p.add_argument("action", nargs="?", choices=["list", "copy"], default="list", help="what to do")
    p.add_argument("name", nargs="?", default=None, help="the built-in config to copy")
    p.add_argument(
        "destination", nargs="?", default=None, help="file or folder to copy it to (default: .)"
    )
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=run)
