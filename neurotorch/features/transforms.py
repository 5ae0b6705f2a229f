"""The preprocessing of stimulus images, and what identifies it in the feature cache.

A transform maps a decoded PIL image (RGB, as the subject saw it) to a ``(3, H, W)`` float
tensor. It is one of

* `neurotorch.features.spec.ImageTransform`: the documented resize / crop / normalise pipeline,
  identified by its fields;
* `ProcessorTransform`: a transformers image processor, identified by its class and its
  configuration (``to_json_string()``);
* `LibraryTransform`: the transform that torchvision weights, timm or open_clip give a model,
  identified by its ``repr`` (which lists every step and its parameters);
* any other callable, identified by its qualified name, the source code of the function (or of
  the class of a callable object), the pickled state of an object, a function's defaults and
  the values its closure captured, and the plain values (numbers, strings, tuples) of the
  module-level names its code reads (``SIZE`` in ``resize(image, SIZE)``). What such a callable
  calls is not part of its identity: after changing a helper it uses, rename the transform (or
  clear its cache entries) so the features are recomputed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle
from typing import Any

import torch

from neurotorch.errors import ParameterError


class ProcessorTransform:
    """A transformers image processor applied to one image: ``pixel_values[0]``."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, image: Any) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"ProcessorTransform({type(self.processor).__name__})"

    def identity(self) -> dict[str, Any]:
        return {
            "kind": "transformers",
            "class": type(self.processor).__name__,
            "config": json.loads(self.processor.to_json_string()),
        }


class LibraryTransform:
    """The preprocessing a vision library gives a model (torchvision, timm, open_clip)."""

    def __init__(self, transform: Any, library: str):
        self.transform = transform
        self.library = library

    def __call__(self, image: Any) -> torch.Tensor:
        return self.transform(image)

    def __repr__(self) -> str:
        return f"LibraryTransform({self.library}: {self.transform!r})"

    def identity(self) -> dict[str, Any]:
        return {"kind": self.library, "repr": repr(self.transform)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


#: Value types whose values identify a callable or a model (its globals, its attributes).
PLAIN_TYPES = (bool, int, float, str, tuple, type(None))


def _plain_globals(function: Any) -> dict[str, Any]:
    """The module-level names ``function``'s code reads that hold plain values, with them."""
    names = getattr(getattr(function, "__code__", None), "co_names", ())
    scope = getattr(function, "__globals__", {})
    return {name: scope[name] for name in names if isinstance(scope.get(name), PLAIN_TYPES)}


def callable_identity(transform: Any) -> dict[str, Any]:
    """Name, source code and pickled state of a user's callable (see the module docstring)."""
    target = transform if inspect.isroutine(transform) else type(transform)
    identity: dict[str, Any] = {
        "kind": "callable",
        "name": f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}",
    }
    try:
        identity["source_sha"] = _sha(inspect.getsource(target).encode())
    except (OSError, TypeError):  # defined interactively, or built in
        identity["source_sha"] = None
    if inspect.isroutine(transform):  # what its code sees besides its arguments
        function = getattr(transform, "__func__", transform)
        cells = [cell.cell_contents for cell in getattr(function, "__closure__", None) or ()]
        bound = (
            getattr(function, "__defaults__", None),
            getattr(function, "__kwdefaults__", None),
            cells,
            getattr(transform, "__self__", None),
        )
        identity["state_sha"] = _state_sha(bound)
        globals_read = _plain_globals(function)
    else:
        identity["state_sha"] = _state_sha(transform)
        globals_read = _plain_globals(vars(type(transform)).get("__call__"))
    if globals_read:  # only then: keys of transforms that read none stay as they were
        identity["globals_sha"] = _state_sha(sorted(globals_read.items()))
    return identity


def _state_sha(value: Any) -> str:
    try:
        return _sha(pickle.dumps(value, protocol=4))
    except Exception:  # noqa: BLE001 - an unpicklable object: its repr stands in
        return _sha(repr(value).encode())


def transform_identity(transform: Any) -> dict[str, Any]:
    """What identifies ``transform`` in the feature cache."""
    own = getattr(transform, "identity", None)
    return own() if callable(own) else callable_identity(transform)


def check_output(tensor: Any, transform: Any) -> torch.Tensor:
    """``tensor`` if it is a ``(C, H, W)`` floating tensor, else `ParameterError` naming the
    transform (a user transform that returns something else)."""
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or not tensor.is_floating_point():
        got = (
            f"a {tuple(tensor.shape)} {tensor.dtype} tensor"
            if isinstance(tensor, torch.Tensor)
            else type(tensor).__name__
        )
        raise ParameterError(
            f"the image transform {transform!r} returned {got}; it must return a (3, H, W) "
            "floating-point tensor (e.g. neurotorch.features.ImageTransform())."
        )
    return tensor
