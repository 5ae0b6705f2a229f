"""Mutation check: apply realistic bugs to a copy of the package and see whether the tests catch them.

The mutants live in ``scripts/mutants/`` (one module per area). Each replaces one exact piece of
source (which must occur exactly once) in a scratch copy of the repository and runs the named
tests there; a mutant is *caught* when those tests fail. A mutant that survives marks a behaviour
no test guards.

    python scripts/mutation_check.py                 # every mutant
    python scripts/mutation_check.py --list          # names only
    python scripts/mutation_check.py worker-remainder-dropped grouped-padding-removed

Exit status 1 when a mutant survives or no longer applies (its source changed: update the list).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mutants import Mutant, all_mutants

REPO = Path(__file__).resolve().parents[1]
MUTANTS = all_mutants()


def _copy_repo(target: Path) -> None:
    ignore = shutil.ignore_patterns(
        ".git", ".ci-venv", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis",
        "lightning_logs", "runs", "notebooks",
    )  # fmt: skip
    shutil.copytree(REPO, target, ignore=ignore, dirs_exist_ok=True)


def run_mutant(mutant: Mutant, scratch: Path) -> str:
    """``caught``, ``survived`` or ``stale`` (the original source is not found exactly once)."""
    copy = scratch / mutant.name
    _copy_repo(copy)
    source = copy / mutant.path
    text = source.read_text()
    if text.count(mutant.original) != 1:
        return "stale"
    source.write_text(text.replace(mutant.original, mutant.mutated))
    env = dict(os.environ, PYTHONPATH=str(copy), NEUROTORCH_PROGRESS="0")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests]
    result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
    return (
        "caught" if result.returncode == 1 else ("survived" if result.returncode == 0 else "error")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutants' names and exit")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    if args.list:
        print("\n".join(known))
        return 0
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown mutant(s) {unknown}; see --list")
    chosen = [known[n] for n in args.names] if args.names else MUTANTS
    outcomes = {}
    with tempfile.TemporaryDirectory(prefix="neurotorch-mutants-") as scratch:
        for mutant in chosen:
            start = time.perf_counter()
            outcomes[mutant.name] = run_mutant(mutant, Path(scratch))
            print(
                f"{mutant.name:40s} {outcomes[mutant.name]:9s} {time.perf_counter() - start:6.1f} s"
            )
    caught = sum(outcome == "caught" for outcome in outcomes.values())
    print(f"mutants: {caught} caught of {len(outcomes)}")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
