"""Stimulus features from any vision model, computed once and cached.

::

    from neurotorch.features import FeatureSpec, load_features

    spec = FeatureSpec("microsoft/resnet-18", layer="encoder.stages.1")  # transformers
    matrices = load_features(spec, data_dir)  # {name: (n_images, D) float32}

A `FeatureSpec` names one feature space (model, layer, pooling, preprocessing);
`extract_features` fills the cache chunk by chunk (resumable, on several processes or a Dask
cluster), `load_features` returns the matrices, and the fMRI datasets take specs in
``features=`` next to the shipped embedding names. See ``docs/features.md``.
"""

from __future__ import annotations

from neurotorch._lazy import lazy_exports

_EXPORTS = {
    "FeatureSpec": "neurotorch.features.spec",
    "ImageTransform": "neurotorch.features.spec",
    "ExtractionOptions": "neurotorch.features.extract",
    "extract_features": "neurotorch.features.extract",
    "load_features": "neurotorch.features.extract",
    "prepare_features": "neurotorch.features.extract",
    "FeatureEntry": "neurotorch.features.cache",
    "list_entries": "neurotorch.features.cache",
    "StimulusImageDataset": "neurotorch.features.images",
    "load_model": "neurotorch.features.sources",
    "random_projection_matrix": "neurotorch.features.pooling",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
