"""Write ``tests/budgets.json``: each test's time budget, from its measured cost.

pytest-timeout stops a test that runs past its budget. One global limit is either too short for
the slowest tests on a busy machine or far too long to catch a hang in a fast one, so each test
gets ``max(FLOOR_S, FACTOR × measured)`` seconds, where ``measured`` is its setup + call +
teardown time in a JUnit report (pytest's ``--junitxml``); ``tests/conftest.py`` applies them. A
test absent from the file (added since the last measurement) keeps the global ``timeout`` of
pyproject.toml. Measure on an idle machine, or on a busy one (the budgets
are then only larger)::

    python -m pytest --junitxml=report.xml && python scripts/test_budgets.py report.xml
"""

from __future__ import annotations

import argparse
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

BUDGETS = Path(__file__).resolve().parents[1] / "tests" / "budgets.json"
#: A test may take this many times its measured cost (a machine at load ~10 is about 5× slower).
FACTOR = 20
#: No budget below this: a test that is fast in the full suite may be the one that builds the
#: session's synthetic data when it runs alone (the M/EEG docs page took 33–60 s so, on a busy
#: machine, against 3 s in the suite).
FLOOR_S = 120


def measured_seconds(report: Path) -> dict[str, float]:
    """Seconds per test node id (``tests/test_x.py::test_y[param]``) from a JUnit report."""
    costs: dict[str, float] = {}
    for case in ET.parse(report).iter("testcase"):
        module = case.get("classname", "").split(".")
        if not module[0]:
            continue
        path = "/".join(part for part in module if not part[:1].isupper()) + ".py"
        classes = [part for part in module if part[:1].isupper()]
        node = "::".join([path, *classes, case.get("name", "")])
        costs[node] = costs.get(node, 0.0) + float(case.get("time", 0.0))
    return costs


def budgets(costs: dict[str, float]) -> dict[str, int]:
    """Whole seconds per test: its cost times the factor, at least the floor."""
    return {node: max(FLOOR_S, math.ceil(FACTOR * s)) for node, s in sorted(costs.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a JUnit XML report of a full test run")
    args = parser.parse_args()
    found = budgets(measured_seconds(args.report))
    document = {"factor": FACTOR, "floor_s": FLOOR_S, "budgets_s": found}
    BUDGETS.write_text(json.dumps(document, indent=1) + "\n")
    above = sum(budget > FLOOR_S for budget in found.values())
    print(f"{len(found)} tests, {above} of them above the {FLOOR_S} s floor; written to {BUDGETS}")


if __name__ == "__main__":
    main()
