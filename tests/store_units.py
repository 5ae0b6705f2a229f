"""A prepare unit that kills its own worker process half-way through writing, the first time it
runs (for the fault tests of `neurotorch prepare --workers`); importable by spawned workers."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurotorch.data.fmri import store as store_module
from neurotorch.data.fmri.store import SessionUnit


@dataclass(frozen=True)
class DiesMidWrite:
    """``unit``, except that its first run SIGKILLs the process after writing ``after`` rows."""

    unit: SessionUnit
    marker: str
    after: int = 3

    @property
    def key(self) -> str:
        return self.unit.key

    @property
    def lock_path(self) -> Path:
        return self.unit.lock_path

    def done(self) -> bool:
        return self.unit.done()

    def run(self) -> Any:
        if Path(self.marker).exists():
            return self.unit.run()
        Path(self.marker).touch()
        real = store_module.iter_volumes

        def dies(source, mask, **options):
            for row, values in enumerate(real(source, mask, **options)):
                if row == self.after:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield values

        store_module.iter_volumes = dies  # in this worker process only
        return self.unit.run()
