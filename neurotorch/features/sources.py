"""Vision models from their libraries, imported only when asked for, and what identifies them.

`load_model` turns a `FeatureSpec` into a `LoadedModel`: the module in eval mode, how to call it
on a batch of preprocessed images, its preprocessing, and its identity (source, name, class, a
hash of its architecture and a hash of its weights). The libraries are optional: each is imported
when a spec names it, and its absence raises `MissingDependencyError` naming the extra to
install. Weights that a library would download are named as usual (a hub id, ``"DEFAULT"``, a
pretrained tag); where they cannot be fetched, `WeightsNotAvailableError` says which and how to
point at a local copy.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch

from neurotorch.errors import MissingDependencyError, ParameterError, WeightsNotAvailableError
from neurotorch.features.spec import RANDOM_WEIGHTS, FeatureSpec
from neurotorch.features.transforms import PLAIN_TYPES, LibraryTransform, ProcessorTransform

#: The extra that installs each library (torchvision, timm and open_clip pin torch builds of their
#: own: install the build that matches your torch).
EXTRAS = {
    "transformers": "features",
    "torchvision": "features-torchvision",
    "timm": "features-timm",
    "open_clip": "features-open-clip",
}


@dataclass
class LoadedModel:
    """A model ready for extraction.

    Attributes
    ----------
    module
        The ``torch.nn.Module`` in eval mode.
    call
        How a batch ``x`` is fed to it: ``"call"`` (``module(x)``), ``"pixel_values"``
        (``module(pixel_values=x)``), ``"image_features"`` (``module.get_image_features(
        pixel_values=x)``) or ``"encode_image"`` (``module.encode_image(x)``).
    transform
        The model's own preprocessing of one decoded image (``None`` for a ``torch.nn.Module``
        and where the spec brings its own).
    identity
        What identifies the model in the feature cache (see `model_identity`).
    """

    module: torch.nn.Module
    call: str
    transform: Callable[[Any], torch.Tensor] | None
    identity: dict[str, Any]

    def forward(self, batch: torch.Tensor) -> Any:
        """The model's output for a batch of images, given in the dtype of its weights (a
        bfloat16 or float64 model takes float32 images as its own)."""
        weights = next((p for p in self.module.parameters() if p.is_floating_point()), None)
        if weights is not None:
            batch = batch.to(weights.dtype)
        if self.call == "pixel_values":
            return self.module(pixel_values=batch)
        # methods of the model's own class (torch's stubs type a module attribute as
        # Tensor | Module)
        if self.call == "image_features":
            features = self.module.get_image_features(pixel_values=batch)  # type: ignore[operator]
            # transformers 5 returns the vision output, the projected embedding its pooler output
            return getattr(features, "pooler_output", features)
        if self.call == "encode_image":
            return self.module.encode_image(batch)  # type: ignore[operator]
        return self.module(batch)


def weights_digest(module: torch.nn.Module) -> str:
    """BLAKE2b of every entry of the state dict: its name, dtype, shape and raw bytes, by name."""
    digest = hashlib.blake2b(digest_size=20)
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_identity(spec: FeatureSpec, module: torch.nn.Module) -> dict[str, Any]:
    """Source, name, weights as named, class, architecture hash (its ``repr``: every module with
    its settings; the source code of its classes; their plain attributes, such as a scale a
    ``forward`` multiplies by) and weights hash."""
    cls = type(module)
    code: dict[str, str | None] = {}
    for part in module.modules():
        kind = type(part)
        if kind.__qualname__ not in code:
            try:
                code[kind.__qualname__] = inspect.getsource(kind)
            except (OSError, TypeError):  # built in, or defined where no source is kept
                code[kind.__qualname__] = None
    plain = [
        (name, key, repr(value))
        for name, part in module.named_modules()
        for key, value in vars(part).items()
        if not key.startswith("_") and key != "training" and isinstance(value, PLAIN_TYPES)
    ]
    described = repr((repr(module), sorted(code.items(), key=lambda item: item[0]), plain))
    return {
        "source": spec.source,
        "model": spec.model_label,
        "weights": spec.weights,
        "config": spec.config,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "architecture_sha": hashlib.sha256(described.encode()).hexdigest()[:16],
        "weights_sha": weights_digest(module),
    }


def require(library: str) -> Any:
    """Import ``library`` or raise `MissingDependencyError` naming the extra that installs it."""
    try:
        return importlib.import_module(library)
    except ImportError as exc:
        raise MissingDependencyError(
            f"source={library!r} needs the {library} package, which cannot be imported ({exc}): "
            f"pip install 'neurotorch[{EXTRAS[library]}]' (with the build of {library} that "
            "matches your torch), or pass any torch.nn.Module as model=."
        ) from exc


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global generator seeded with ``seed`` inside the block, restored after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _unavailable(what: str, exc: BaseException, how: str) -> WeightsNotAvailableError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return WeightsNotAvailableError(
        f"{what} is not on this machine and could not be downloaded ({first}). {how} "
        "weights='random' builds the architecture with seeded random weights and needs no "
        "download."
    )


def _is_path(text: str | None) -> bool:
    return text is not None and os.path.exists(os.path.expanduser(text))


# -- transformers ---------------------------------------------------------------------------------


def _hf_how(model: str | torch.nn.Module) -> str:
    return (
        f"Where there is a connection, save the model and its image processor to a folder "
        f"(transformers.AutoModel.from_pretrained({model!r}).save_pretrained(DIR) and the same "
        f"with AutoImageProcessor, or huggingface-cli download {model} --local-dir DIR), copy "
        "it here and pass model='DIR' (or set HF_HOME to a cache that holds it)."
    )


def _load_transformers(spec: FeatureSpec) -> tuple[torch.nn.Module, str, Callable | None]:
    transformers = require("transformers")
    model = os.path.expanduser(str(spec.model))
    if spec.weights not in (None, RANDOM_WEIGHTS):
        raise ParameterError(
            f"weights={spec.weights!r} is not accepted for source='transformers': None loads "
            f"the weights of model={spec.model!r} (a hub id or a local folder), 'random' "
            "initialises its architecture with seeded random weights."
        )
    if spec.weights == RANDOM_WEIGHTS:
        config = _hf_config(transformers, spec, model)
        with seeded(spec.seed):
            module = transformers.AutoModel.from_config(config)
    else:
        try:
            module = transformers.AutoModel.from_pretrained(model, **(spec.config or {}))
        except OSError as exc:
            raise _unavailable(f"The model {spec.model!r}", exc, _hf_how(spec.model)) from exc
    transform = None
    if spec.transform is None:
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(model)
        except OSError as exc:
            raise _unavailable(
                f"The image processor of {spec.model!r}",
                exc,
                _hf_how(spec.model) + " Or pass transform= (an ImageTransform).",
            ) from exc
        transform = ProcessorTransform(processor)
    call = "image_features" if hasattr(module, "get_image_features") else "pixel_values"
    return module, call, transform


def _hf_config(transformers: Any, spec: FeatureSpec, model: str) -> Any:
    """The architecture of a randomly initialised transformers model: ``config`` (with its
    ``model_type``) or the configuration saved with ``model``."""
    if spec.config is not None:
        options = dict(spec.config)
        model_type = options.pop("model_type", None)
        if model_type is None:
            raise ParameterError(
                "config= of a transformers model with weights='random' needs 'model_type' "
                f"(e.g. 'resnet'), got keys {sorted(spec.config)}."
            )
        try:
            return transformers.AutoConfig.for_model(model_type, **options)
        except (ValueError, KeyError) as exc:
            raise ParameterError(
                f"config={spec.config!r} is not a transformers config: {exc}"
            ) from None
    try:
        return transformers.AutoConfig.from_pretrained(model)
    except OSError as exc:
        raise _unavailable(
            f"The configuration of {spec.model!r}",
            exc,
            _hf_how(spec.model) + " Or give the architecture as config= (with model_type).",
        ) from exc


# -- torchvision, timm, open_clip ---------------------------------------------------------------


def _load_torchvision(spec: FeatureSpec) -> tuple[torch.nn.Module, str, Callable | None]:
    require("torchvision")
    from torchvision.models import get_model, get_model_weights

    options = spec.config or {}
    try:
        weight_names = get_model_weights(spec.model)
    except (ValueError, KeyError) as exc:
        raise ParameterError(f"torchvision has no model {spec.model!r} ({exc}).") from exc
    chosen = spec.weights or "DEFAULT"
    if chosen == RANDOM_WEIGHTS or _is_path(chosen):
        with seeded(spec.seed):
            module = get_model(spec.model, weights=None, **options)
        if chosen != RANDOM_WEIGHTS:
            state = torch.load(os.path.expanduser(chosen), map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        enum = weight_names.DEFAULT  # its transforms need no download
    else:
        try:
            enum = weight_names[chosen]
        except KeyError:
            raise ParameterError(
                f"weights={chosen!r} is not a weights name of torchvision's {spec.model}; choose "
                f"one of {['DEFAULT', *(w.name for w in weight_names)]}, 'random' or a file."
            ) from None
        try:
            module = get_model(spec.model, weights=enum, **options)
        except (OSError, RuntimeError) as exc:
            file = enum.url.rsplit("/", 1)[-1]
            how = (
                f"Download {enum.url} where there is a connection and put it in "
                f"{torch.hub.get_dir()}/checkpoints/{file}, or pass weights='/path/to/{file}'."
            )
            raise _unavailable(f"The weights {chosen} of {spec.model!r}", exc, how) from exc
    transform = None if spec.transform else LibraryTransform(enum.transforms(), "torchvision")
    return module, "call", transform


def _load_timm(spec: FeatureSpec) -> tuple[torch.nn.Module, str, Callable | None]:
    timm = require("timm")
    options = dict(spec.config or {})
    name = spec.model
    if spec.weights == RANDOM_WEIGHTS:
        options["pretrained"] = False
    elif _is_path(spec.weights):
        options.update(pretrained=True, pretrained_cfg_overlay={"file": spec.weights})
    else:
        options["pretrained"] = True
        name = name if spec.weights is None else f"{name}.{spec.weights}"
    try:
        with seeded(spec.seed):
            module = timm.create_model(name, **options)
    except (OSError, RuntimeError) as exc:
        how = (
            f"Download the weights of {name} where there is a connection and pass "
            "weights='/path/to/model.safetensors' (or set HF_HOME to a cache that holds them)."
        )
        raise _unavailable(f"The weights of timm's {name!r}", exc, how) from exc
    transform = None
    if spec.transform is None:
        config = timm.data.resolve_data_config({}, model=module)
        transform = LibraryTransform(timm.data.create_transform(**config), "timm")
    return module, "call", transform


def _load_open_clip(spec: FeatureSpec) -> tuple[torch.nn.Module, str, Callable | None]:
    open_clip = require("open_clip")
    if spec.weights is None:
        raise ParameterError(
            f"source='open_clip' needs weights= (a pretrained tag such as 'openai' or "
            f"'laion2b_s34b_b79k', a weights file, or 'random'); "
            f"open_clip.list_pretrained_tags_by_model({spec.model!r}) lists the tags."
        )
    pretrained = None if spec.weights == RANDOM_WEIGHTS else spec.weights
    try:
        with seeded(spec.seed):
            module, _, preprocess = open_clip.create_model_and_transforms(
                spec.model, pretrained=pretrained, **(spec.config or {})
            )
    except (OSError, RuntimeError) as exc:
        how = (
            "Download the checkpoint where there is a connection and pass "
            "weights='/path/to/open_clip_model.safetensors'."
        )
        raise _unavailable(f"The weights {spec.weights} of {spec.model!r}", exc, how) from exc
    transform = None if spec.transform else LibraryTransform(preprocess, "open_clip")
    return module, "encode_image", transform


LOADERS = {
    "transformers": _load_transformers,
    "torchvision": _load_torchvision,
    "timm": _load_timm,
    "open_clip": _load_open_clip,
}


def load_model(spec: FeatureSpec, device: str | torch.device = "cpu") -> LoadedModel:
    """The spec's model on ``device``, in eval mode, with its own preprocessing and identity.

    A ``torch.nn.Module`` given as the model is moved to ``device`` and put in eval mode in place.
    """
    if isinstance(spec.model, torch.nn.Module):  # the source "module"
        module, call, transform = spec.model, "call", None
    else:
        # __post_init__ chose the source of a model name
        module, call, transform = LOADERS[cast(str, spec.source)](spec)
    module = module.to(device).eval()
    return LoadedModel(
        module=module,
        call=call,
        transform=transform,
        identity=model_identity(spec, module),
    )
