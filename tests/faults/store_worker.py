"""Build the prepared store of sub-01 ses-01 in a child process, dying at a chosen step.

Usage: ``python store_worker.py ROOT CACHE MODE`` with MODE one of

* ``none``: build normally;
* ``read:K``: SIGKILL at the K-th read of decompressed NIfTI bytes (mid-build);
* ``replace:N:before`` / ``replace:N:after``: SIGKILL just before / after the N-th ``os.replace``
  (the steps that move the mask, betas, statistics and manifest into place);
* ``slow``: sleep at every read, so that two builders overlap.

On success prints ``manifests written: M`` (how many manifests this process moved into place).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from neurotorch.data.fmri.store import build_store
from neurotorch.io import inflate


def main() -> None:
    root, cache, mode = sys.argv[1:4]
    kind, *args = mode.split(":")
    calls = {"read": 0, "replace": 0}
    manifests: list[str] = []
    real_read = inflate.SequentialReader.readinto_exact
    real_replace = os.replace

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def read(self, buffer) -> None:
        calls["read"] += 1
        if kind == "read" and calls["read"] == int(args[0]):
            die()
        if kind == "slow":
            time.sleep(0.005)
        real_read(self, buffer)

    def replace(src, dst, *rest, **kwargs) -> None:
        calls["replace"] += 1
        hit = kind == "replace" and calls["replace"] == int(args[0])
        if hit and args[1] == "before":
            die()
        real_replace(src, dst, *rest, **kwargs)
        if str(dst).endswith(".json") and str(dst).startswith(cache):  # a store manifest
            manifests.append(str(dst))
        if hit and args[1] == "after":
            die()

    inflate.SequentialReader.readinto_exact = read
    os.replace = replace
    build_store(root, "sub-01", ["ses-01"], cache_dir=cache, progress=False)
    print(f"manifests written: {len(manifests)}")


if __name__ == "__main__":
    main()
