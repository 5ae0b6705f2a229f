"""What a feature space is: a model, one of its layers, a pooling, and the images' preprocessing.

`FeatureSpec` names one feature space (one ``(n_images, D)`` matrix over the stimulus set);
`ImageTransform` is the documented preprocessing a spec can carry instead of the model's own.
Both are frozen dataclasses, checked once when they are made, and accepted as nested dicts in
YAML configs (``features: [CLIP, {model: microsoft/resnet-18, layer: encoder.stages.1}]``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, cast, get_args

import numpy as np
import torch

from neurotorch._options import as_settings, check_int, check_number, check_option
from neurotorch.errors import ParameterError

Source = Literal["transformers", "torchvision", "timm", "open_clip", "module"]
SOURCES: tuple[str, ...] = get_args(Source)
Pooling = Literal["avg", "cls", "flatten", "random_projection", "pca"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
#: Poolings that reduce to ``k`` dimensions.
REDUCING = ("random_projection", "pca")
Interpolation = Literal["nearest", "bilinear", "bicubic"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``weights`` value that initialises the architecture with seeded random weights (no download).
RANDOM_WEIGHTS = "random"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class ImageTransform:
    """Resize, centre-crop and normalise a PIL image into a ``(3, crop, crop)`` float32 tensor.

    The steps, exactly:

    1. convert to RGB;
    2. resize with PIL (``interpolation`` filter, PIL's antialiasing) so that the shorter side is
       ``resize`` pixels and the longer one ``round(resize * long / short)``;
    3. keep the centred ``crop`` × ``crop`` square, from column ``(width - crop) // 2`` and row
       ``(height - crop) // 2``;
    4. scale to [0, 1] (``uint8 / 255``) and normalise each channel: ``(x - mean) / std``.

    Parameters
    ----------
    resize
        Length of the shorter side after resizing, in pixels.
    crop
        Side of the centred square that is kept (at most ``resize``).
    mean, std
        Per-channel mean and standard deviation (RGB, on the [0, 1] scale); ImageNet's by
        default.
    interpolation
        PIL resampling filter: ``"nearest"``, ``"bilinear"`` or ``"bicubic"``.
    """

    resize: int = 224
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Interpolation = "bilinear"

    def __post_init__(self) -> None:
        check_int("transform.resize", self.resize, minimum=1)
        check_int("transform.crop", self.crop, minimum=1, maximum=self.resize)
        check_option("transform.interpolation", self.interpolation, get_args(Interpolation))
        for what in ("mean", "std"):
            values = tuple(getattr(self, what))
            if len(values) != 3:
                raise ParameterError(
                    f"transform.{what} must hold 3 numbers (R, G, B), got {values!r}."
                )
            low = 0.0 if what == "std" else None
            numbers = tuple(
                check_number(f"transform.{what}", v, minimum=low, open_minimum=low is not None)
                for v in values
            )
            object.__setattr__(self, what, numbers)

    def __call__(self, image: Any) -> torch.Tensor:
        from PIL import Image

        image = image.convert("RGB")
        width, height = image.size
        scale = self.resize / min(width, height)
        size = (
            (self.resize, round(height * scale))
            if width <= height
            else (round(width * scale), self.resize)
        )
        filters = {
            "nearest": Image.Resampling.NEAREST,
            "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC,
        }
        image = image.resize(size, resample=filters[self.interpolation])
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        normalised = (pixels - mean) / std
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))

    def identity(self) -> dict[str, Any]:
        """What identifies this preprocessing in the feature cache."""
        return {"kind": "ImageTransform", **asdict(self)}


@dataclass(frozen=True)
class FeatureSpec:
    """One feature space: a model, one layer, a pooling and the preprocessing of the images.

    Parameters
    ----------
    model
        A model name of ``source`` (transformers: a hub id such as ``"microsoft/resnet-18"`` or a
        local folder written by ``save_pretrained``; torchvision: a builder name such as
        ``"resnet18"``; timm: a model name; open_clip: an architecture such as ``"ViT-B-32"``), or
        any ``torch.nn.Module`` (Python only; then ``source="module"`` and ``transform`` is
        required).
    layer
        Name of the module whose output is taken, as in ``model.named_modules()``
        (``"encoder.stages.1"``); ``""`` takes the model's own output. ``neurotorch features
        list --model NAME`` prints the names with their output shapes.
    pooling
        How a layer's output becomes one vector per image: ``"avg"`` (mean over the spatial
        positions of a ``(N, C, H, W)`` map, or over the tokens of a ``(N, T, C)`` sequence;
        ``(N, C)`` is kept), ``"cls"`` (token 0 of a ``(N, T, C)`` sequence), ``"flatten"``,
        ``"random_projection"`` (the flattened output times a fixed seeded Gaussian matrix, to
        ``k`` dimensions) or ``"pca"`` (the flattened output projected on its first ``k``
        principal components); see `neurotorch.features.pooling`.
    k
        Output dimensions of ``"random_projection"`` and ``"pca"`` (required by them only).
    source
        Library of a named model: ``"transformers"`` (default for a name), ``"torchvision"``,
        ``"timm"`` or ``"open_clip"``; ``"module"`` for a ``torch.nn.Module``.
    weights
        Which weights: ``None`` loads the source's pretrained weights (transformers: those of the
        hub id or folder; torchvision: ``"DEFAULT"``; timm: its pretrained tag; open_clip needs a
        tag); a torchvision weights name (``"IMAGENET1K_V1"``), an open_clip pretrained tag, or a
        local weights file (torchvision/timm/open_clip) or folder (transformers); or ``"random"``
        for the architecture with seeded random weights (``seed``), which needs no download.
    config
        Architecture options: transformers' config values (``{"model_type": "resnet", ...}``,
        used with ``weights="random"`` where the hub config cannot be read), or keyword
        arguments of the torchvision / timm / open_clip constructor.
    transform
        Preprocessing of each decoded image (an `ImageTransform`, its fields as a dict, or a
        callable PIL image → ``(3, H, W)`` float tensor). Default: the model's own preprocessing
        (the transformers image processor, the torchvision weights' transforms, timm's data
        config, open_clip's validation transform).
    seed
        Seed of the random projection and of the PCA fitting sample, and, with
        ``weights="random"``, of the weights (then two seeds are two models).
    name
        Name of the feature space: the batch key is ``embedding_<name>``; default
        ``<model>_<layer>`` (with ``_<pooling><k>`` unless the pooling is ``"avg"``), every
        character outside ``[A-Za-z0-9_.-]`` replaced by ``_``.
    pca_images
        Images of the stimulus set the PCA is fitted on (drawn without replacement with
        ``seed``; all of them when the set is smaller).
    """

    model: str | torch.nn.Module
    layer: str = ""
    pooling: Pooling = "avg"
    k: int | None = None
    source: Source | None = None
    weights: str | None = None
    config: dict[str, Any] | None = None
    transform: ImageTransform | Callable[[Any], torch.Tensor] | None = None
    seed: int = 0
    name: str | None = None
    pca_images: int = 4096

    def __post_init__(self) -> None:
        is_module = isinstance(self.model, torch.nn.Module)
        if not is_module and not (isinstance(self.model, str) and self.model.strip()):
            raise ParameterError(
                f"model must be a model name (str) or a torch.nn.Module, got {self.model!r}."
            )
        source = self.source or ("module" if is_module else "transformers")
        check_option("source", source, SOURCES)
        if is_module != (source == "module"):
            raise ParameterError(
                f"source={source!r} does not fit model={self._model_label()!r}: a "
                "torch.nn.Module goes with source='module', a name with one of "
                f"{[s for s in SOURCES if s != 'module']}."
            )
        object.__setattr__(self, "source", source)
        if not isinstance(self.layer, str):
            raise ParameterError(f"layer must be a module name (str), got {self.layer!r}.")
        check_option("pooling", self.pooling, POOLINGS)
        if self.pooling in REDUCING:
            if self.k is None:
                raise ParameterError(f"pooling={self.pooling!r} needs k= (output dimensions).")
            object.__setattr__(self, "k", check_int("k", self.k, minimum=1))  # numpy ints too
        elif self.k is not None:
            raise ParameterError(
                f"k={self.k!r} is used by the poolings {list(REDUCING)} only; "
                f"pooling={self.pooling!r} takes no k."
            )
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0))
        object.__setattr__(self, "pca_images", check_int("pca_images", self.pca_images, minimum=2))
        if self.weights is not None and not (isinstance(self.weights, str) and self.weights):
            raise ParameterError(f"weights must be None or a non-empty str, got {self.weights!r}.")
        if is_module and self.weights is not None:
            raise ParameterError(
                "weights= names the weights of a named model; a torch.nn.Module brings its own "
                f"(got weights={self.weights!r})."
            )
        if self.config is not None and not isinstance(self.config, dict):
            raise ParameterError(f"config must be a dict of options, got {self.config!r}.")
        self._check_transform(is_module)
        name = self.name if self.name is not None else self._default_name()
        if not isinstance(name, str) or not _NAME.match(name):
            raise ParameterError(
                f"name={name!r} is not accepted: use letters, digits and '_', '.', '-' (it "
                "becomes the batch key embedding_<name>)."
            )
        object.__setattr__(self, "name", name)

    def _check_transform(self, is_module: bool) -> None:
        transform = self.transform
        if isinstance(transform, dict):
            object.__setattr__(
                self, "transform", as_settings(ImageTransform, transform, "transform")
            )
        elif transform is not None and not callable(transform):
            raise ParameterError(
                f"transform must be an ImageTransform, a dict of its fields or a callable, got "
                f"{transform!r}."
            )
        if is_module and self.transform is None:
            raise ParameterError(
                "a torch.nn.Module has no preprocessing of its own: pass transform= (e.g. "
                "neurotorch.features.ImageTransform(resize=224, crop=224))."
            )

    def _model_label(self) -> str:
        if isinstance(self.model, torch.nn.Module):
            return type(self.model).__name__
        return str(self.model)

    def _default_name(self) -> str:
        base = self._model_label().rstrip("/").split("/")[-1]
        parts = [base, self.layer or "output"]
        if self.pooling != "avg":
            parts.append(f"{self.pooling}{self.k or ''}")
        return re.sub(r"[^A-Za-z0-9_.\-]", "_", "_".join(parts))

    @property
    def model_label(self) -> str:
        """The model's name (a ``torch.nn.Module``: its class name)."""
        return self._model_label()

    def recipe(self) -> dict[str, Any]:
        """How to build the model (everything but layer, pooling and name), for grouping specs
        that share one forward pass. A module is represented by its object id."""
        return {
            "source": self.source,
            "model": (
                f"module@{id(self.model)}"
                if isinstance(self.model, torch.nn.Module)
                else self.model
            ),
            "weights": self.weights,
            "config": self.config,
            "seed": self.seed if self.weights == RANDOM_WEIGHTS else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain values (for hyperparameters and checkpoints). A module model or a
        callable transform is described by text: such a spec cannot be rebuilt from it."""
        out = {item.name: getattr(self, item.name) for item in fields(self)}
        if isinstance(self.model, torch.nn.Module):
            out["model"] = f"<{type(self.model).__qualname__} module>"
        transform = self.transform
        if isinstance(transform, ImageTransform):
            out["transform"] = {
                **asdict(transform),
                "mean": list(transform.mean),
                "std": list(transform.std),
            }
        elif transform is not None:
            out["transform"] = repr(transform)
        return out

    def pooling_identity(self) -> dict[str, Any]:
        """What identifies the pooling in the feature cache."""
        identity: dict[str, Any] = {"kind": self.pooling}
        if self.pooling in REDUCING:
            identity.update(k=self.k, seed=self.seed)
        if self.pooling == "pca":
            identity["pca_images"] = self.pca_images
        return identity


def as_specs(features: FeatureSpec | dict | list | tuple) -> list[FeatureSpec]:
    """One spec or several, as a list; dicts become `FeatureSpec` (their keys are its fields)."""
    items = list(features) if isinstance(features, list | tuple) else [features]
    if not items:
        raise ParameterError("no feature spec given; give at least one FeatureSpec.")
    specs = []
    for item in items:
        if isinstance(item, dict):
            item = as_settings(FeatureSpec, item, "a feature spec")
        if not isinstance(item, FeatureSpec):
            raise ParameterError(f"a feature spec must be a FeatureSpec or a dict, got {item!r}.")
        specs.append(item)
    names = [cast(str, s.name) for s in specs]  # named in __post_init__
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ParameterError(
            f"feature space name(s) {repeated} are given more than once; give each spec its "
            "own name=."
        )
    return specs
