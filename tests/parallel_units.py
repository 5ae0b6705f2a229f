"""A unit of work for the engine tests: a seeded computation written atomically, manifest last.

Every run appends a line to ``runs.log`` (under the unit's lock, so concurrent runs cannot
interleave), which lets a test count how often each unit really ran.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurotorch.io.atomic import atomic_path, write_json


@dataclass(frozen=True)
class SquaresUnit:
    """``sum(x**2)`` of a seeded array, written to ``<out>/<key>.npy`` (+ ``.json`` manifest)."""

    out: str
    index: int
    fail: bool = False  # raise instead of computing
    die_once: bool = False  # SIGKILL its own worker the first time it runs

    @property
    def key(self) -> str:
        return f"squares-{self.index:03d}"

    @property
    def lock_path(self) -> Path:
        return Path(self.out) / f"{self.key}.lock"

    def expected(self) -> np.ndarray:
        x = np.random.default_rng(self.index).standard_normal(1000)
        return np.cumsum(x**2)

    def done(self) -> bool:
        manifest = Path(self.out) / f"{self.key}.json"
        return manifest.exists() and json.loads(manifest.read_text())["key"] == self.key

    def run(self) -> float:
        out = Path(self.out)
        with open(out / "runs.log", "a") as log:
            log.write(f"{self.key}\n")
        if self.die_once and not (out / f"{self.key}.died").exists():
            (out / f"{self.key}.died").touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fail:
            raise ValueError(f"unit {self.index} was told to fail")
        values = self.expected()
        with atomic_path(out / f"{self.key}.npy") as tmp:
            np.save(tmp, values)
        write_json(out / f"{self.key}.json", {"key": self.key})
        return float(values[-1])


def runs(out: Path) -> list[str]:
    log = out / "runs.log"
    return log.read_text().split() if log.exists() else []


@dataclass(frozen=True)
class DieAtCommit:
    """A real unit whose worker is SIGKILLed the first time it runs, after ``commits`` of its
    files were committed (`neurotorch.io.atomic.commit_file`) and before the next: the unit is
    then half written, as when a node is lost mid-unit. ``flag`` marks that it died once."""

    unit: object
    flag: str
    commits: int = 1

    @property
    def key(self) -> str:
        return self.unit.key

    @property
    def lock_path(self):
        return self.unit.lock_path

    def done(self) -> bool:
        return self.unit.done()

    def run(self):
        if not Path(self.flag).exists():
            Path(self.flag).touch()
            from neurotorch.io import atomic

            committed = atomic.commit_file
            count = [0]

            def dying(written, path):
                if count[0] == self.commits:
                    os.kill(os.getpid(), signal.SIGKILL)
                count[0] += 1
                return committed(written, path)

            atomic.commit_file = dying
        return self.unit.run()


@dataclass(frozen=True)
class PidUnit:
    """Writes the id of the process that ran it to ``<out>/pid-<index>.txt``; with ``wait_for``
    it first waits (10 s at most) for that file, polling `neurotorch.parallel.stop_requested`."""

    out: str
    index: int
    wait_for: str | None = None

    @property
    def key(self) -> str:
        return f"pid-{self.index:03d}"

    @property
    def lock_path(self) -> None:
        return None

    def done(self) -> bool:
        return (Path(self.out) / f"{self.key}.txt").exists()

    def run(self) -> int:
        import time

        from neurotorch.parallel import stop_requested

        if self.wait_for is not None:
            deadline = time.monotonic() + 10
            while not Path(self.wait_for).exists() and time.monotonic() < deadline:
                if stop_requested():
                    raise InterruptedError(f"{self.key} stopped")
                time.sleep(0.01)
        write_json(Path(self.out) / f"{self.key}.txt", os.getpid())
        return os.getpid()


@dataclass(frozen=True)
class InterruptUnit:
    """Raises KeyboardInterrupt (what Ctrl-C raises) once ``after`` exists."""

    out: str
    after: str

    key = "interrupt"
    lock_path = None

    def done(self) -> bool:
        return False

    def run(self) -> None:
        import time

        while not Path(self.after).exists():
            time.sleep(0.01)
        raise KeyboardInterrupt


@contextlib.contextmanager
def two_worker_client():
    """A client of 2 single-threaded, non-daemonic local workers that import the tests' helper
    modules (such as this one)."""
    import dask
    import pytest
    from distributed import Client, LocalCluster

    tests = str(Path(__file__).resolve().parent)
    with pytest.MonkeyPatch.context() as patch:
        path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
        patch.setenv("PYTHONPATH", path)  # also for a worker restarted after a kill
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                dashboard_address=":0",
                silence_logs=logging.CRITICAL,
            )
            with cluster, Client(cluster) as client:
                yield client
