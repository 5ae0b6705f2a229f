"""The end-of-run summary of the fault-injection suite.

Every case of ``tests/test_faults.py`` records its outcome with ``record_property``: key
``"fault"`` (``named``, ``misnamed``, ``unnamed``, ``silent`` or ``left-temporary-files``) for a
damaged input, key ``"durability"`` (``intact`` or ``damaged``) for a crash, concurrency or
disk-full scenario.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any


def recorded(reports: Iterable[Any], key: str) -> Counter:
    """Outcomes recorded under ``key`` by the call phase of ``reports``."""
    return Counter(
        value
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == key
    )


def summary_lines(stats: dict[str, list[Any]]) -> list[str]:
    """The summary lines for pytest's ``terminalreporter.stats`` (none if no case ran)."""
    reports = [report for group in stats.values() for report in group]
    lines = []
    faults = recorded(reports, "fault")
    if faults:
        line = (
            f"faults: {sum(faults.values())} cases, {faults['named']} named errors, "
            f"{faults['silent']} silent"
        )
        others = {k: v for k, v in faults.items() if k not in ("named", "silent")}
        lines.append(line + "".join(f", {v} {k}" for k, v in sorted(others.items())))
    durability = recorded(reports, "durability")
    if durability:
        lines.append(
            f"faults: {sum(durability.values())} crash/concurrency/disk-full scenarios, "
            f"{durability['intact']} left a complete or empty cache, {durability['damaged']} damaged"
        )
    return lines
