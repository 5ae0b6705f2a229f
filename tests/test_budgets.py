"""The per-test time budgets: measured costs read from a JUnit report, applied by conftest."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test_budgets.py"


def load_script():
    spec = importlib.util.spec_from_file_location("test_budgets_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_costs_sum_setup_call_and_teardown_per_node_and_budgets_scale_above_a_floor(tmp_path):
    report = tmp_path / "report.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_a" name="test_fast" time="0.5"/>'
        '<testcase classname="tests.test_a" name="test_slow[fmri-2]" time="7.25"/>'
        '<testcase classname="tests.test_b.TestGroup" name="test_in_class" time="4.0"/>'
        '<testcase classname="tests.faults.test_c" name="test_nested" time="6.01"/>'
        "</testsuite></testsuites>"
    )
    script = load_script()
    costs = script.measured_seconds(report)
    assert costs == {
        "tests/test_a.py::test_fast": 0.5,
        "tests/test_a.py::test_slow[fmri-2]": 7.25,
        "tests/test_b.py::TestGroup::test_in_class": 4.0,
        "tests/faults/test_c.py::test_nested": 6.01,
    }
    assert script.budgets(costs) == {  # 20× the cost, at least 120 s, rounded up
        "tests/test_a.py::test_fast": 120,
        "tests/test_a.py::test_slow[fmri-2]": 145,
        "tests/test_b.py::TestGroup::test_in_class": 120,
        "tests/faults/test_c.py::test_nested": 121,
    }


def test_this_test_runs_under_its_own_measured_budget(request):
    table = Path(__file__).with_name("budgets.json")
    budgets = json.loads(table.read_text())["budgets_s"]
    marker = request.node.get_closest_marker("timeout")
    if request.node.nodeid in budgets:
        assert marker is not None and marker.args == (budgets[request.node.nodeid],)
    else:  # not measured yet: the global limit of pyproject.toml
        assert marker is None
