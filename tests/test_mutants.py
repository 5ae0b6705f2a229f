"""The mutants of scripts/mutants/ still apply: each one's source occurs exactly once in its file
and names tests that exist, so a refactoring cannot silently retire the check of a behaviour
(scripts/mutation_check.py runs them; this test only checks that they can run)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_mutant_applies_to_the_source_and_names_existing_test_files():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from mutants import all_mutants
    finally:
        sys.path.remove(str(REPO / "scripts"))
    mutants = all_mutants()
    names = [mutant.name for mutant in mutants]
    assert len(names) == len(set(names)), "two mutants share a name"
    stale = [
        f"{mutant.name} ({mutant.path})"
        for mutant in mutants
        if (REPO / mutant.path).read_text().count(mutant.original) != 1
    ]
    assert not stale, f"mutants whose source changed (update them): {stale}"
    missing = [
        f"{mutant.name}: {test}"
        for mutant in mutants
        for test in mutant.tests
        if not (REPO / test.split("::")[0].split("[")[0]).exists()
    ]
    assert not missing, f"mutants naming test files that do not exist: {missing}"
