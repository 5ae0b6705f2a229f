"""Build the API reference (HTML) from the docstrings with pdoc.

    python scripts/build_api_docs.py [OUT]        # default: site/api

Every public module of the package gets a page (modules whose name starts with ``_`` are
internal); docstrings are read as numpydoc. Exit status 1 when a module fails to import or pdoc
warns (a broken cross-reference, an unparsable docstring).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.render

import neurotorch


def public_modules() -> list[str]:
    """Every importable module of neurotorch whose dotted name has no ``_``-prefixed part."""
    names = ["neurotorch"]
    for info in pkgutil.walk_packages(neurotorch.__path__, prefix="neurotorch."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def resolve_lazy_exports(modules: list[str]) -> None:
    """Import every name a package exports lazily, so that pdoc finds it in the package."""
    for name in modules:
        module = importlib.import_module(name)
        for export in getattr(module, "__all__", ()):
            if export not in vars(module):
                setattr(module, export, getattr(module, export))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="site/api", help="output folder")
    args = parser.parse_args(argv)
    pdoc.render.configure(docformat="numpy", footer_text=f"neurotorch {neurotorch.__version__}")
    modules = public_modules()
    resolve_lazy_exports(modules)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules, output_directory=Path(args.out))
    problems = [
        w
        for w in caught
        if "pdoc" in (w.filename or "") and "has already been added" not in str(w.message)
    ]  # a package without __all__ lists its submodules itself: they are given twice, harmlessly
    for warning in problems:
        print(f"warning: {warning.message}", file=sys.stderr)
    pages = sorted(Path(args.out).rglob("*.html"))
    print(f"{len(pages)} pages in {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
