"""Lacuna connectome batches: reading, conversion, parcellation and lesion network mapping.

Reading and converting batch files needs numpy, h5py and nibabel only; the lesion network mapping
names (`network_map`, ...) import torch on first use.
"""

from importlib import import_module

from neurotorch.connectome.batches import BatchHeader, ConnectomeBatches, read_batch_header
from neurotorch.connectome.convert import convert_timeseries
from neurotorch.connectome.parcellation import Parcellation, connectivity_matrix

_LNM_NAMES = (
    "LesionSet",
    "NetworkMapResult",
    "SeedWeights",
    "benjamini_hochberg",
    "load_lesions",
    "network_map",
    "seed_correlations",
)

__all__ = [
    "BatchHeader",
    "ConnectomeBatches",
    "Parcellation",
    "connectivity_matrix",
    "convert_timeseries",
    "read_batch_header",
    *_LNM_NAMES,
]


def __getattr__(name: str):
    if name in _LNM_NAMES:
        return getattr(import_module("neurotorch.connectome.lnm"), name)
    raise AttributeError(f"module 'neurotorch.connectome' has no attribute {name!r}")
