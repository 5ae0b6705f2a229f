"""`load_dataset`: build any neurotorch dataset by name, Hugging Face style.

Builders are registered as ``"module:function"`` strings so that asking for one family never
imports the others (the M/EEG stack imports MNE, which takes seconds).
"""

from __future__ import annotations

from typing import Any

from neurotorch._lazy import import_object
from neurotorch.errors import ParameterError

_BUILDERS: dict[str, str] = {
    "laion-fmri": "neurotorch.data.builders:build_laion_fmri",
    "meeg-sim": "neurotorch.data.builders:build_meeg_sim",
    "meeg-calibration": "neurotorch.data.builders:build_meeg_calibration",
    "connectome": "neurotorch.data.connectome.subjects:load_connectome",
}


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`."""
    return sorted(_BUILDERS)


def load_dataset(
    name: str, split: str | None = None, streaming: bool = False, **config: Any
) -> Any:
    """Build a dataset by name.

    Parameters
    ----------
    name
        A registered name, see `list_datasets` (``"laion-fmri"``, ...).
    split
        ``"<split>/<part>"`` such as ``"tau/train"`` or ``"random_0/test"``; ``None`` for all items.
    streaming
        ``True`` returns the iterable-style variant, when the family has one.
    **config
        Passed to the family's builder (data_dir, subject, roi, features, ...).
    """
    if name not in _BUILDERS:
        raise ParameterError(f"Unknown dataset {name!r}; available: {', '.join(list_datasets())}.")
    return import_object(_BUILDERS[name])(split=split, streaming=streaming, **config)
