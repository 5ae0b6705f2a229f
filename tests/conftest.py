"""Shared fixtures: an isolated cache and data home, and one tiny synthetic LAION-fMRI tree."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Isolate every test run (and the worker processes it starts) from the user's cache and data.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="neurotorch-tests-"))
os.environ["NEUROTORCH_CACHE"] = str(_SESSION_HOME / "cache")
os.environ["NEUROTORCH_DATA"] = str(_SESSION_HOME / "data")
os.environ["NEUROTORCH_PROGRESS"] = "0"
os.environ["XDG_CONFIG_HOME"] = str(_SESSION_HOME / "config")  # laion_fmri's data-dir config
os.environ.pop("LAION_FMRI_DATA_DIR", None)
os.environ.pop("CALIBRAIN_DATA", None)


@pytest.fixture(scope="session")
def tiny_laion_root(tmp_path_factory) -> Path:
    """A tiny synthetic LAION-fMRI tree (2 subjects × 2 sessions), written once per test run."""
    from neurotorch.synthetic.laion_fmri import make_laion_fmri

    return make_laion_fmri(tmp_path_factory.mktemp("laion") / "tiny", size="tiny", seed=0)


def pytest_collection_modifyitems(items) -> None:
    """Give each measured test its own time budget (scripts/test_budgets.py writes them)."""
    table = Path(__file__).with_name("budgets.json")
    budgets = json.loads(table.read_text())["budgets_s"] if table.exists() else {}
    for item in items:
        if item.nodeid in budgets:
            item.add_marker(pytest.mark.timeout(budgets[item.nodeid]))


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the totals of the fault-injection suite (see tests/faults/summary.py)."""
    from faults.summary import summary_lines

    for line in summary_lines(terminalreporter.stats):
        terminalreporter.write_line(line)


def pytest_unconfigure(config) -> None:
    """Remove the run's cache and data home: a run leaves nothing behind in the temp folder."""
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)
