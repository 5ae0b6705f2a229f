"""The stimulus side of a trial: embeddings, decoded image, captions, segmentation masks.

`StimulusPairing` turns the image names of a dataset's items into the ``features`` asked for:
embedding models (``"CLIP"``, ``"DINOv2"``, ``"PEcore"``, ``"SigLIP2"``), features of any vision
model (a `neurotorch.features.FeatureSpec`, computed once into the feature cache) and stimulus
modalities (``"image"``, ``"captions"``, ``"segmentation"``), read lazily in each process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias, get_args

import numpy as np
import torch

from neurotorch._options import as_settings, check_option
from neurotorch.errors import FormatError, ParameterError
from neurotorch.features import FeatureEntry, FeatureSpec
from neurotorch.features.extract import prepare_features, resolve_device
from neurotorch.features.forward import pooled_dims
from neurotorch.fmri import layout
from neurotorch.fmri.stimuli import Stimuli
from neurotorch.io.storage import DataRoot

Feature = Literal["CLIP", "DINOv2", "PEcore", "SigLIP2", "image", "captions", "segmentation"]
FEATURES = get_args(Feature)
MODALITIES = ("image", "captions", "segmentation")


Features: TypeAlias = Feature | FeatureSpec | Sequence[Feature | FeatureSpec] | None
#: What ``features=`` says next to the names when one is not accepted.
SPEC_HINT = (
    "Features of another vision model are a FeatureSpec (in YAML a dict such as {model: "
    "microsoft/resnet-18, layer: encoder.stages.1}); see docs/features.md."
)


def split_features(
    features: Features | dict,
) -> tuple[list[str], dict[str, FeatureSpec], tuple[str, ...]]:
    """``(feature space names, {name: spec} of the extracted ones, modalities)`` of ``features``.

    A string or a spec is one feature; a dict is the fields of a `FeatureSpec`. Names are
    checked, and two feature spaces of one name (a spec named ``"CLIP"`` beside ``"CLIP"``) are
    refused: their item keys would collide.
    """
    if features is None:
        items: list = []
    elif isinstance(features, str | FeatureSpec | dict):
        items = [features]
    else:
        items = list(features)
    spaces: list[str] = []
    specs: dict[str, FeatureSpec] = {}
    modalities: list[str] = []
    for item in items:
        if isinstance(item, FeatureSpec | dict):
            item = as_spec(item)
            spaces.append(item.name)
            specs[item.name] = item
            continue
        check_option("features", item, FEATURES, hint=SPEC_HINT)
        (modalities if item in MODALITIES else spaces).append(item)
    repeated = sorted({name for name in spaces if spaces.count(name) > 1})
    if repeated:
        raise ParameterError(
            f"features names the feature space(s) {repeated} twice, so their item keys "
            "embedding_<name> would collide; give each FeatureSpec its own name=."
        )
    return spaces, specs, tuple(dict.fromkeys(modalities))


def plain_features(features: Features | dict) -> Any:
    """``features`` with every `FeatureSpec` (or dict of its fields) as its plain values, every
    field given (for hyperparameters and checkpoints)."""
    if features is None or isinstance(features, str):
        return features
    if isinstance(features, FeatureSpec | dict):
        return plain_features([features])[0]
    return [item if isinstance(item, str) else as_spec(item).to_dict() for item in features]


def as_spec(item: FeatureSpec | dict) -> FeatureSpec:
    return (
        item if isinstance(item, FeatureSpec) else as_settings(FeatureSpec, item, "a feature spec")
    )


def embedding_key(name: str, names: Sequence[str]) -> str:
    """The item key of a feature space: ``embedding`` alone, ``embedding_<name>`` among several
    (``<name>`` is the embedding model, or the spec's name)."""
    return "embedding" if len(names) == 1 else f"embedding_{name}"


def image_to_tensor(image: Any) -> torch.Tensor:
    """A PIL image as a ``(C, H, W)`` uint8 tensor (the default image transform)."""
    array = np.asarray(image, dtype=np.uint8)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class StimulusPairing:
    """Per-image modalities for a fixed list of image names, read lazily in each process.

    Parameters
    ----------
    root
        Dataset root.
    image_names
        The images the dataset can ask for; embeddings of these rows are read once per process.
    features
        Embedding models, feature specs and modalities (see `split_features`). One feature space
        gives the item key ``embedding``; several give ``embedding_<name>`` each; ``"image"`` is
        decoded, then passed to ``image_transform``; ``"captions"`` is a list of str in caption
        order; ``"segmentation"`` gives uint8 ``(k, H, W)`` masks and their nouns. A spec's
        features are computed into the feature cache when the pairing is made (missing chunks
        only), then read from it in each process, without the model.
    image_transform
        Callable on a PIL image; default `image_to_tensor`.
    """

    def __init__(
        self,
        root: DataRoot,
        image_names: Sequence[str],
        features: Features = "CLIP",
        image_transform: Callable[[Any], Any] | None = None,
    ):
        self.root = root
        self.features, specs, self.modalities = split_features(features)
        self.image_transform = image_transform or image_to_tensor
        self.names = list(dict.fromkeys(image_names))
        self.index = {name: i for i, name in enumerate(self.names)}
        self._stimuli: Stimuli | None = None
        self._embeddings: dict[str, np.ndarray] | None = None
        self._pid: int | None = None
        self.extracted: dict[str, FeatureEntry] = (
            prepare_features(list(specs.values()), root, images=self.names) if specs else {}
        )
        self._rows = Stimuli(root).rows(self.names) if specs else None
        self._check_embeddings()

    def _source(self, name: str) -> str:
        """Where a feature space's rows come from, for messages."""
        if name in self.extracted:
            return f"the features {name!r} in the cache ({self.extracted[name].directory})"
        return f"{self.root.path(layout.embeddings(name))} ({name})"

    def _check_embeddings(self) -> None:
        """Every paired image has a finite row, marked valid, in each embedding file (checked on
        open, not mid-epoch)."""
        if not self.features:
            return
        with Stimuli(self.root) as hub:
            for model in self.features:
                if model in self.extracted:
                    continue
                missing = hub.embeddings.missing(model, self.names)
                if missing:
                    raise FormatError(
                        f"{self.root.path(layout.embeddings(model))} has no row for {len(missing)} "
                        f"of the {len(self.names)} images of this dataset (e.g. {missing[:3]}); "
                        "re-download the embeddings, or pass features=None."
                    )
                flags = np.atleast_1d(hub.embeddings.valid(model, list(self.names)))
                invalid = [name for name, ok in zip(self.names, flags, strict=True) if not ok]
                if invalid:
                    raise FormatError(
                        f"{self.root.path(layout.embeddings(model))} marks the rows of "
                        f"{len(invalid)} of the {len(self.names)} images of this dataset as not "
                        f"valid (its 'valid' column; e.g. {invalid[:3]}): they hold no embedding. "
                        "Leave those images out (image_names= with the others), or pass another "
                        "features= model."
                    )
        for model, matrix in self.embeddings().items():
            if matrix.ndim != 2:
                raise FormatError(
                    f"{self.root.path(layout.embeddings(model))} holds embeddings of shape "
                    f"{matrix.shape[1:]} per image; expected one vector per image, "
                    "(n_images, D). Re-download the file."
                )
            bad = ~np.isfinite(matrix).all(axis=1)
            if bad.any():
                names = [self.names[i] for i in np.flatnonzero(bad)[:3]]
                raise FormatError(
                    f"{self._source(model)} holds NaN or ±inf in the rows of {int(bad.sum())} of "
                    f"the {len(self.names)} images of this dataset (e.g. {names}); re-download "
                    "the embeddings (or choose another layer or pooling), leave those images out "
                    "(image_names=) or pass another features= model."
                )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stimuli": None, "_embeddings": None, "_pid": None}

    def _fresh(self) -> None:
        if self._pid != os.getpid():
            self._stimuli, self._embeddings, self._pid = None, None, os.getpid()

    @property
    def stimuli(self) -> Stimuli:
        self._fresh()
        if self._stimuli is None:
            self._stimuli = Stimuli(self.root)
        return self._stimuli

    def embedding_key(self, model: str) -> str:
        return embedding_key(model, self.features)

    def embeddings(self) -> dict[str, np.ndarray]:
        """``{model: (n_images, D) float32}`` rows in `names` order (read once per process)."""
        self._fresh()
        if self._embeddings is None:
            hub = self.stimuli
            self._embeddings = {
                name: (
                    self.extracted[name].read_rows(self._rows)
                    if name in self.extracted
                    else hub.embeddings.get(name, self.names, dtype=np.float32)
                )
                for name in self.features
            }
            hub.close()
        return self._embeddings

    def rows(self, names: Sequence[str] | np.ndarray) -> np.ndarray:
        """Positions of ``names`` in `names`."""
        index = self.index
        return np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))

    def batch(self, names: Sequence[str] | np.ndarray) -> dict[str, Any]:
        """Every requested modality for ``names``: embeddings stacked, the rest as lists."""
        out: dict[str, Any] = {}
        if self.features:
            rows = self.rows(names)
            for model, matrix in self.embeddings().items():
                out[self.embedding_key(model)] = torch.from_numpy(matrix[rows])
        if "image" in self.modalities:
            out["image"] = [self.image_transform(self.stimuli.images.get(n)) for n in names]
        if "captions" in self.modalities:
            out["captions"] = [self.stimuli.captions.list(n) for n in names]
        if "segmentation" in self.modalities:
            masks = [self.segmentation(n) for n in names]
            out["segmentation"] = [m for m, _ in masks]
            out["segmentation_nouns"] = [nouns for _, nouns in masks]
        return out

    def segmentation(self, name: str) -> tuple[torch.Tensor, list[str]]:
        """All masks of an image, ``(k, H, W)`` uint8 (k = 0 for images without masks), and nouns."""
        seg = self.stimuli.segmentations
        stacks, nouns = [], []
        for noun in seg.nouns(name, localized_only=False):
            masks = np.asarray(seg.get(name, noun, instance=None))
            masks = masks[None] if masks.ndim == 2 else masks
            stacks.append(masks)
            nouns += [noun] * len(masks)
        if not stacks:
            return torch.zeros((0, 0, 0), dtype=torch.uint8), []
        return torch.from_numpy(np.concatenate(stacks).astype(np.uint8)), nouns


def feature_dims(root: DataRoot, features: Features) -> dict[str, int]:
    """Length of each embedding an item carries, by item key (``{"embedding": 1024}``), read from
    the embedding files' shapes, and for a `FeatureSpec` from one image through its model (no
    dataset needed, nothing extracted)."""
    spaces, specs, _ = split_features(features)
    dims = pooled_dims(list(specs.values()), resolve_device(None)) if specs else {}
    with Stimuli(root) as hub:
        embeddings = hub.embeddings
        for name in spaces:
            if name not in dims:
                dims[name] = embeddings.get(name, embeddings.image_ids(name)[:1]).shape[1]
    return {embedding_key(name, spaces): dims[name] for name in spaces}
