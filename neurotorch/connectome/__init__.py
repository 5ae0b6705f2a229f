"""Lacuna connectome batches: reading, conversion, parcellation and lesion network mapping.

Reading and converting batch files needs numpy, h5py and nibabel only; the lesion network mapping
names (`network_map`, ...) import torch on first use.
"""

from neurotorch._lazy import lazy_exports
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

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    _LAZY_NAMES,
    eager={
        "BatchHeader": BatchHeader,
        "ConnectomeBatches": ConnectomeBatches,
        "LesionSet": LesionSet,
        "Parcellation": Parcellation,
        "connectivity_matrix": connectivity_matrix,
        "convert_timeseries": convert_timeseries,
        "load_lesions": load_lesions,
        "read_batch_header": read_batch_header,
    },
)
