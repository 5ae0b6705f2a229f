"""Lacuna connectome batches: reading, conversion, parcellation and lesion network mapping.

Reading a batch file needs numpy and h5py only; `network_map` computes in torch.
"""

from neurotorch.connectome.batches import BatchHeader, ConnectomeBatches, read_batch_header
from neurotorch.connectome.convert import convert_timeseries
from neurotorch.connectome.lnm import (
    LesionSet,
    NetworkMapResult,
    SeedWeights,
    benjamini_hochberg,
    load_lesions,
    network_map,
    seed_correlations,
)

__all__ = [
    "BatchHeader",
    "ConnectomeBatches",
    "LesionSet",
    "NetworkMapResult",
    "SeedWeights",
    "benjamini_hochberg",
    "convert_timeseries",
    "load_lesions",
    "network_map",
    "read_batch_header",
    "seed_correlations",
]
