"""One model's forward pass over rows of the stimulus set: hooks, pooling, one load per process.

An `ExtractionJob` holds what every chunk of one model (and preprocessing) needs: the specs it
serves, their cache entries, the identity they are keyed by, and how to run. It is pickled to
worker processes without the loaded model; each process loads the model once (`loaded_model`
remembers named models), checks it against that identity, and feeds it batches decoded by
``DataLoader`` workers (`neurotorch.features.images`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader

from neurotorch.errors import CacheError, ParameterError
from neurotorch.features.cache import FeatureEntry
from neurotorch.features.images import StimulusImageDataset
from neurotorch.features.pooling import layer_tensor, pool, random_projection_matrix
from neurotorch.features.sources import LoadedModel, load_model
from neurotorch.features.spec import REDUCING, FeatureSpec
from neurotorch.features.transforms import check_output, transform_identity
from neurotorch.io.storage import DataRoot

log = logging.getLogger(__name__)
#: Models kept loaded per process (named models only), so consecutive units reuse them.
MODEL_MEMO_SIZE = 2
_MODELS: dict[str, LoadedModel] = {}


def _local_files(spec: FeatureSpec) -> list[tuple[str, int, int]]:
    """Path, size and modification time of every local file a named model is built from (a
    folder given as ``model`` or a file given as ``weights``): a model saved again is loaded
    again, never served from the memo."""
    stamps = []
    for text in (spec.model, spec.weights):
        path = os.path.expanduser(text) if isinstance(text, str) else None
        if path is None or not os.path.exists(path):
            continue
        files = [path] if os.path.isfile(path) else [
            os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names
        ]  # fmt: skip
        for file in sorted(files):
            status = os.stat(file)
            stamps.append((file, status.st_size, status.st_mtime_ns))
    return stamps


def loaded_model(spec: FeatureSpec, device: torch.device) -> LoadedModel:
    """`load_model`, remembered per process for named models (the last few)."""
    if spec.source == "module":
        return load_model(spec, device)
    recipe = {**spec.recipe(), "device": str(device), "files": _local_files(spec)}
    key = json.dumps(recipe, sort_keys=True, default=str)
    if key not in _MODELS:
        while len(_MODELS) >= MODEL_MEMO_SIZE:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = load_model(spec, device)
    return _MODELS[key]


def _dataloader_workers(requested: int) -> int:
    """``requested``, or 0 inside a daemonic process (a Dask worker), which cannot start any."""
    if requested and multiprocessing.current_process().daemon:
        log.debug("features: decoding images in the worker itself (a daemonic process)")
        return 0
    return requested


class LayerCapture:
    """Forward hooks on named submodules: `outputs` holds each one's output of the last forward
    pass and `calls` how often it ran (`reset` before each pass; `remove` the hooks at the end)."""

    def __init__(self, module: torch.nn.Module, layers: Sequence[str]):
        self.outputs: dict[str, Any] = {}
        self.calls: dict[str, int] = {}
        self._handles = [
            module.get_submodule(name).register_forward_hook(self._hook(name)) for name in layers
        ]

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            self.calls[name] = self.calls.get(name, 0) + 1
            try:  # copied now: a later step may change it in place (ReLU(inplace), x += res)
                self.outputs[name] = layer_tensor(output, name).clone()
            except ParameterError:  # not a tensor: named where it is used
                self.outputs[name] = output

        return hook

    def reset(self) -> None:
        self.outputs.clear()
        self.calls.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def check_layers(module: torch.nn.Module, specs: Sequence[FeatureSpec]) -> None:
    """`ParameterError` for a layer the model does not have, naming the closest ones."""
    import difflib

    names = [name for name, _ in module.named_modules() if name]
    for spec in specs:
        if spec.layer and spec.layer not in names:
            close = difflib.get_close_matches(spec.layer, names, n=3, cutoff=0.5)
            raise ParameterError(
                f"layer={spec.layer!r} is not a module of {spec.model_label}"
                + (f" (did you mean {close}?)" if close else "")
                + f"; it has {len(names)} modules, e.g. {names[:6]}. `neurotorch features list "
                "--model NAME` prints them with their output shapes."
            )


# -- one model's forward pass over chunks ---------------------------------------------------------


class ExtractionJob:
    """What every chunk of one model (and preprocessing) needs: the specs it serves, their cache
    entries, the expected identities, and the run options. Pickled to worker processes (without
    the loaded model, which each process loads and verifies once)."""

    def __init__(
        self,
        *,
        root: DataRoot,
        specs: Sequence[FeatureSpec],
        entries: Sequence[FeatureEntry],
        identity: dict[str, Any],
        spans: Sequence[tuple[int, int]],
        settings: dict[str, Any],
    ):
        self.root = root
        self.specs = tuple(specs)
        self.entries = tuple(entries)
        self.identity = identity
        self.spans = list(spans)
        self.device = str(settings["device"])
        self.batch_size = settings["batch_size"]
        self.num_workers = settings["num_workers"]
        self.lock_dir = Path(settings["lock_dir"])
        self.group = hashlib.sha256(
            json.dumps([identity, settings["stimuli"], list(spans)], default=str).encode()
        ).hexdigest()[:16]
        self._loaded: tuple[LoadedModel, Any] | None = None
        self._linear: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaded": None, "_linear": {}}

    def adopt(self, loaded: LoadedModel, transform: Any) -> None:
        """Use a model already loaded and verified in this process."""
        self._loaded = (loaded, transform)

    def model(self) -> tuple[LoadedModel, Any]:
        """The model and the preprocessing, loaded once per process and checked against the
        identity the cache entries are keyed by."""
        if self._loaded is None:
            spec = self.specs[0]
            loaded = loaded_model(spec, torch.device(self.device))
            transform = spec.transform or loaded.transform
            found = {"model": loaded.identity, "transform": transform_identity(transform)}
            if found != self.identity:
                raise CacheError(
                    f"the model {spec.model_label!r} loaded in process {os.getpid()} differs from "
                    "the one the cache entries were keyed by (other weights or preprocessing "
                    "files): give every worker the same files (a local folder or file)."
                )
            self._loaded = (loaded, transform)
        return self._loaded

    def layer_outputs(
        self, rows: np.ndarray, layers: Sequence[str]
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Per batch of ``rows``: each layer's output tensor (``""``: the model's output)."""
        loaded, transform = self.model()
        dataset = StimulusImageDataset(self.root, rows, transform)
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=_dataloader_workers(self.num_workers),
            pin_memory=self.device.startswith("cuda"),
        )
        hooked = sorted({layer for layer in layers if layer})
        capture = LayerCapture(loaded.module, hooked)
        try:
            with torch.inference_mode():
                for batch in loader:
                    capture.reset()
                    output = loaded.forward(batch.to(self.device, non_blocking=True))
                    for layer in hooked:
                        if capture.calls.get(layer) != 1:
                            raise ParameterError(
                                f"layer {layer!r} of {self.specs[0].model_label} ran "
                                f"{capture.calls.get(layer, 0)} times in one forward pass; "
                                "choose a module that runs exactly once."
                            )
                    yield {
                        layer: layer_tensor(
                            output if layer == "" else capture.outputs[layer], layer
                        )
                        for layer in set(layers)
                    }
        finally:
            capture.remove()

    def linear_map(self, spec: FeatureSpec, entry: FeatureEntry, dim: int):
        """``(W, mean)`` of a projecting pooling, on the device (built once per process)."""
        name = cast(str, spec.name)  # FeatureSpec names every spec
        if name not in self._linear:
            if spec.pooling == "random_projection":
                weight = torch.from_numpy(
                    random_projection_matrix(dim, cast(int, spec.k), spec.seed)
                )
                mean = None
            else:
                fitted = entry.read_pca()
                weight = torch.from_numpy(fitted["components"]).T.contiguous()
                mean = torch.from_numpy(fitted["mean"]).to(self.device)
            self._linear[name] = (weight.to(self.device), mean)
        weight, mean = self._linear[name]
        if weight.shape[0] != dim:
            raise CacheError(
                f"the {spec.pooling} of {name!r} maps {weight.shape[0]} dimensions but layer "
                f"{spec.layer!r} now outputs {dim}; delete {entry.directory} to refit it."
            )
        return weight, mean

    def compute(self, rows: np.ndarray, pairs: Sequence[tuple[FeatureSpec, FeatureEntry]]):
        """``{name: (len(rows), D) float32}`` of the given specs."""
        names = [cast(str, spec.name) for spec, _ in pairs]  # FeatureSpec names every spec
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        for outputs in self.layer_outputs(rows, [spec.layer for spec, _ in pairs]):
            for name, (spec, entry) in zip(names, pairs, strict=True):
                x = outputs[spec.layer]
                if spec.pooling in REDUCING:
                    flat = pool(x, "flatten", layer=spec.layer)
                    weight, mean = self.linear_map(spec, entry, flat.shape[1])
                    vectors = (flat if mean is None else flat - mean) @ weight
                else:
                    vectors = pool(x, spec.pooling, layer=spec.layer)
                parts[name].append(vectors.float().cpu())
        return {name: torch.cat(chunks).numpy() for name, chunks in parts.items()}


def _one_image(spec: FeatureSpec, layers: Sequence[str], device: torch.device):
    """The model's output and the outputs of ``layers`` for one mid-grey 256 × 256 image after the
    spec's (or the model's) preprocessing, and the loaded model."""
    from PIL import Image

    loaded = loaded_model(spec, device)
    transform = spec.transform or loaded.transform
    assert transform is not None, "a named model brings its preprocessing, a module is given one"
    image = check_output(transform(Image.new("RGB", (256, 256), (128, 128, 128))), transform)
    capture = LayerCapture(loaded.module, [name for name in layers if name])
    try:
        with torch.inference_mode():
            output = loaded.forward(image[None].to(device))
    finally:
        capture.remove()
    return output, capture.outputs, loaded


def layer_shapes(spec: FeatureSpec, device: str = "cpu") -> list[tuple[str, str, tuple | None]]:
    """Every module of the spec's model with its class and the shape of its output for one
    mid-grey image (see `_one_image`); ``None`` for a module that does not run on images (or
    outputs no tensor)."""
    modules = dict(loaded_model(spec, torch.device(device)).module.named_modules())
    output, outputs, _ = _one_image(spec, list(modules), torch.device(device))
    outputs[""] = output
    shapes = []
    for name, module in modules.items():
        try:
            shape = tuple(layer_tensor(outputs[name], name).shape)
        except (KeyError, ParameterError):
            shape = None
        shapes.append((name, type(module).__name__, shape))
    return shapes


def pooled_dims(specs: Sequence[FeatureSpec], device: torch.device) -> dict[str, int]:
    """The length of each spec's vector, by name: ``k`` for the projections, else the pooled
    output of one mid-grey image."""
    dims: dict[str, int] = {}
    for spec in specs:
        name = cast(str, spec.name)  # FeatureSpec names every spec
        if spec.pooling in REDUCING:
            k = spec.k
            assert k is not None, "a reducing pooling has k"
            dims[name] = int(k)
            continue
        check_layers(loaded_model(spec, device).module, [spec])
        output, outputs, _ = _one_image(spec, [spec.layer], device)
        x = layer_tensor(outputs[spec.layer] if spec.layer else output, spec.layer)
        dims[name] = int(pool(x, spec.pooling, layer=spec.layer).shape[1])
    return dims
