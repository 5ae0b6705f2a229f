"""The realistic bugs `scripts/mutation_check.py` applies, one module per area.

Every module of this package defines ``MUTANTS``, a list of `Mutant`; `all_mutants` collects them.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    """Replace ``original`` (found exactly once in ``path``) by ``mutated``; ``tests`` must fail."""

    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]


def all_mutants() -> list[Mutant]:
    """Every module's ``MUTANTS``, modules in name order."""
    found: list[Mutant] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        found += importlib.import_module(f"{__name__}.{info.name}").MUTANTS
    names = [m.name for m in found]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"mutant names used twice: {repeated}")
    return found
