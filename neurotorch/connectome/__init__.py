"""Lacuna connectome batches: reading, conversion, parcellation and lesion network mapping.

Reading and converting batch files needs numpy, h5py and nibabel only; the lesion network mapping
names (`network_map`, ...) import torch on first use.
"""

from importlib import import_module

from neurotorch.connectome.batches import BatchHeader, ConnectomeBatches, read_batch_header
from neurotorch.connectome.convert import convert_timeseries
from neurotorch.connectome.lesions import LesionSet, load_lesions
from neurotorch.connectome.parcellation import Parcellation, connectivity_matrix

# name -> module, imported (with torch) on first use
_LAZY_NAMES = {
    "Atlas": "neurotorch.connectome.atlas",
    "NetworkMapResult": "neurotorch.connectome.result",
    "SeedWeights": "neurotorch.connectome.lnm",
    "benjamini_hochberg": "neurotorch.connectome.stats",
    "network_map": "neurotorch.connectome.lnm",
    "seed_correlations": "neurotorch.connectome.lnm",
}

__all__ = [
    "BatchHeader",
    "ConnectomeBatches",
    "LesionSet",
    "Parcellation",
    "connectivity_matrix",
    "convert_timeseries",
    "load_lesions",
    "read_batch_header",
    *_LAZY_NAMES,
]


def __getattr__(name: str):
    if name in _LAZY_NAMES:
        return getattr(import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'neurotorch.connectome' has no attribute {name!r}")
