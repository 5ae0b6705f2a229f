"""Connectome subjects as torch datasets: map-style `ConnectomeSubjects`, chunked `ConnectomeChunks`."""

from __future__ import annotations

from neurotorch._lazy import lazy_exports

_EXPORTS = {
    "ConnectomeSubjects": "neurotorch.data.connectome.subjects",
    "ConnectomeChunks": "neurotorch.data.connectome.subjects",
    "load_connectome": "neurotorch.data.connectome.subjects",
    "open_connectome": "neurotorch.data.connectome.subjects",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
