"""What every benchmark needs to measure fairly: a fresh process per measurement, its own peak
memory, and A/B runs alternated within each round.

Peak RSS: ``ru_maxrss`` of ``getrusage(RUSAGE_SELF)`` is inherited across ``fork`` and kept
across ``exec`` on Linux, so a child started by a benchmark that had already allocated reports
the parent's peak. The high-water mark of the child's own address space (``VmHWM`` in
``/proc/self/status``) starts afresh at ``exec``; `peak_rss` reads it (``ru_maxrss`` where there
is no ``/proc``). `peak_rss_of_children` is the largest ``VmHWM`` among the processes a
measurement started and waited for (DataLoader workers).

    from bench_processes import interleaved, peak_rss, run_child
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

STATUS = Path("/proc/self/status")


def peak_rss() -> int:
    """Peak resident memory of this process in bytes (``VmHWM``; ``ru_maxrss`` without /proc)."""
    if STATUS.exists():
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def peak_rss_of_children() -> int:
    """The largest peak RSS among the terminated children this process waited for, in bytes.

    A child forked from this process starts with this process's pages mapped, so its peak
    includes what was resident at the fork (shared, not copied)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def peak_rss_of_live_children() -> int:
    """The largest peak RSS (``VmHWM``) among this process's running children, in bytes: the
    workers of a DataLoader whose workers persist (not yet waited for, so not counted by
    `peak_rss_of_children`). 0 without /proc."""
    peaks = [0]
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                status = Path("/proc", pid, "status").read_text()
            except OSError:  # exited meanwhile
                continue
            peaks += [
                int(line.split()[1]) * 1024
                for line in status.splitlines()
                if line.startswith("VmHWM:")
            ]
    return max(peaks)


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its terminated children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_child(script: str | Path, arguments: Sequence[str], env: dict | None = None) -> dict:
    """Run ``python script *arguments`` in a fresh process; return the JSON object it prints last.

    Raises
    ------
    RuntimeError
        The child failed (its stderr tail is in the message).
    """
    done = subprocess.run(
        [sys.executable, str(script), *arguments], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def interleaved(runs: dict[str, Callable[[], dict]], repeat: int) -> dict[str, list[dict]]:
    """Every run ``repeat`` times, alternating: round k runs them in order, round k + 1 in
    reverse, so that a machine slowing down (other jobs) hits every run alike. Each result is
    what the run returned, with ``seconds`` added when it has none (wall time of the call)."""
    results: dict[str, list[dict]] = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(repeat):
        for name in names if round_ % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            result = runs[name]()
            result.setdefault("seconds", time.perf_counter() - start)
            results[name].append(result)
    return results


def best(results: list[dict], key: str = "seconds") -> dict:
    """The run with the least ``key`` (the one least disturbed by other jobs)."""
    return min(results, key=lambda r: r[key])


def median(results: list[dict], key: str = "seconds") -> float:
    values = sorted(r[key] for r in results)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
