"""Mutation check: apply realistic bugs to a copy of the package and see whether the tests catch them.

The mutants live in ``scripts/mutants/`` (one module per area). Each replaces one exact piece of
source (which must occur exactly once) in a scratch copy of the repository and runs the named
tests there; a mutant is *caught* when those tests fail. A mutant that survives marks a behaviour
no test guards.

    python scripts/mutation_check.py                 # every mutant
    python scripts/mutation_check.py --list          # names only
    python scripts/mutation_check.py worker-remainder-dropped grouped-padding-removed
    python scripts/mutation_check.py --baseline      # the guarding tests pass without mutation

Exit status 1 when a mutant survives or no longer applies (its source changed: update the list),
or, with ``--baseline``, when a mutant's tests fail on the unmutated code: such a mutant is
"caught" whatever it changes.
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


def _run_tests(copy: Path, tests: tuple[str, ...]) -> int:
    """pytest's exit status for ``tests`` run in the repository copy ``copy``."""
    env = dict(os.environ, PYTHONPATH=str(copy), NEUROTORCH_PROGRESS="0")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True).returncode


def run_mutant(mutant: Mutant, scratch: Path) -> str:
    """``caught``, ``survived`` or ``stale`` (the original source is not found exactly once)."""
    copy = scratch / mutant.name
    _copy_repo(copy)
    source = copy / mutant.path
    text = source.read_text()
    if text.count(mutant.original) != 1:
        return "stale"
    source.write_text(text.replace(mutant.original, mutant.mutated))
    status = _run_tests(copy, mutant.tests)
    return "caught" if status == 1 else ("survived" if status == 0 else "error")


def baseline(chosen: list[Mutant], scratch: Path) -> int:
    """Run every distinct set of guarding tests once on an unmutated copy; 1 if any fails."""
    copy = scratch / "unmutated"
    _copy_repo(copy)
    failing = 0
    for tests in dict.fromkeys(m.tests for m in chosen):
        start = time.perf_counter()
        status = _run_tests(copy, tests)
        users = [m.name for m in chosen if m.tests == tests]
        outcome = "passes" if status == 0 else f"FAILS (exit {status})"
        print(
            f"{outcome:16s} {time.perf_counter() - start:6.1f} s  {' '.join(tests)}  [{', '.join(users)}]"
        )
        failing += status != 0
    print(
        f"guarding test sets: {failing} of {len(dict.fromkeys(m.tests for m in chosen))} fail unmutated"
    )
    return 1 if failing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutants' names and exit")
    parser.add_argument(
        "--baseline", action="store_true", help="run the guarding tests without any mutation"
    )
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    if args.list:
        print("\n".join(known))
        return 0
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown mutant(s) {unknown}; see --list")
    chosen = [known[n] for n in args.names] if args.names else MUTANTS
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="neurotorch-mutants-") as scratch:
            return baseline(chosen, Path(scratch))
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
