"""The stimulus side of a trial: embeddings, decoded image, captions, segmentation masks.

`StimulusPairing` turns the image names of a dataset's items into the ``features`` asked for:
embedding models (``"CLIP"``, ``"DINOv2"``, ``"PEcore"``, ``"SigLIP2"``) and stimulus
modalities (``"image"``, ``"captions"``, ``"segmentation"``), read lazily in each process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch

from neurotorch._options import as_names, check_option
from neurotorch.errors import FormatError
from neurotorch.fmri import layout
from neurotorch.fmri.stimuli import Stimuli
from neurotorch.io.storage import DataRoot

Feature = Literal["CLIP", "DINOv2", "PEcore", "SigLIP2", "image", "captions", "segmentation"]
FEATURES = get_args(Feature)
MODALITIES = ("image", "captions", "segmentation")


def split_features(features: str | Sequence[str] | None) -> tuple[list[str], tuple[str, ...]]:
    """``(embedding models, modalities)`` named by ``features`` (each checked, a string is one)."""
    names = [] if features is None else as_names("features", features)
    for name in names:
        check_option("features", name, FEATURES)
    return [n for n in names if n not in MODALITIES], tuple(n for n in names if n in MODALITIES)


def embedding_key(model: str, models: Sequence[str]) -> str:
    """The item key of ``model``'s embedding: ``embedding`` alone, ``embedding_<model>`` among
    several models."""
    return "embedding" if len(models) == 1 else f"embedding_{model}"


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
        Embedding models and modalities (see `split_features`). One model gives the item key
        ``embedding``; several give ``embedding_<model>`` each; ``"image"`` is decoded, then
        passed to ``image_transform``; ``"captions"`` is a list of str in caption order;
        ``"segmentation"`` gives uint8 ``(k, H, W)`` masks and their nouns.
    image_transform
        Callable on a PIL image; default `image_to_tensor`.
    """

    def __init__(
        self,
        root: DataRoot,
        image_names: Sequence[str],
        features: str | Sequence[str] | None = "CLIP",
        image_transform: Callable[[Any], Any] | None = None,
    ):
        self.root = root
        self.features, self.modalities = split_features(features)
        self.image_transform = image_transform or image_to_tensor
        self.names = list(dict.fromkeys(image_names))
        self.index = {name: i for i, name in enumerate(self.names)}
        self._stimuli: Stimuli | None = None
        self._embeddings: dict[str, np.ndarray] | None = None
        self._pid: int | None = None
        self._check_embeddings()

    def _check_embeddings(self) -> None:
        """Every paired image has a finite row in each embedding file (checked on open, not
        mid-epoch)."""
        if not self.features:
            return
        with Stimuli(self.root) as hub:
            for model in self.features:
                missing = hub.embeddings.missing(model, self.names)
                if missing:
                    raise FormatError(
                        f"{self.root.path(layout.embeddings(model))} has no row for {len(missing)} "
                        f"of the {len(self.names)} images of this dataset (e.g. {missing[:3]}); "
                        "re-download the embeddings, or pass features=None."
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
                    f"{self.root.path(layout.embeddings(model))} ({model}) holds NaN or ±inf in "
                    f"the rows of {int(bad.sum())} of the {len(self.names)} images of this "
                    f"dataset (e.g. {names}); re-download the embeddings, leave those images out "
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
                m: hub.embeddings.get(m, self.names, dtype=np.float32) for m in self.features
            }
            hub.close()
        return self._embeddings

    def rows(self, names: Sequence[str]) -> np.ndarray:
        """Positions of ``names`` in `names`."""
        index = self.index
        return np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))

    def batch(self, names: Sequence[str]) -> dict[str, Any]:
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


def feature_dims(root: DataRoot, features: str | Sequence[str] | None) -> dict[str, int]:
    """Length of each embedding an item carries, by item key (``{"embedding": 1024}``), read from
    the embedding files' shapes (no dataset needed)."""
    models, _ = split_features(features)
    with Stimuli(root) as hub:
        embeddings = hub.embeddings
        return {
            embedding_key(model, models): embeddings.get(
                model, embeddings.image_ids(model)[:1]
            ).shape[1]
            for model in models
        }
