"""From a layer's output to one vector per image.

A hooked layer's output is first reduced to one tensor (`layer_tensor`: a tuple or list gives
its first element, a mapping such as transformers' ``ModelOutput`` its first value), then pooled:

=====================  ==========================================================================
``avg``                ``(N, C, H, W)``: mean over ``H, W``; ``(N, T, C)``: mean over the ``T``
                       tokens; ``(N, C)``: kept. (A map stored channels-last, ``(N, H, W, C)``,
                       is not recognised: take ``flatten`` or a layer that outputs ``(N, C, H, W)``.)
``cls``                ``(N, T, C)``: token 0 (the class token of a ViT)
``flatten``            ``x.reshape(N, -1)``, in C order
``random_projection``  ``flatten(x) @ P`` with ``P = rng.standard_normal((D, k), dtype=float32) /
                       sqrt(k)`` and ``rng = numpy.random.default_rng(seed)``, ``D`` the flattened
                       size: a Johnson–Lindenstrauss projection that keeps distances in
                       expectation (`random_projection_matrix`)
``pca``                ``(flatten(x) - mean) @ components.T``, the first ``k`` principal axes of the
                       flattened outputs of a sample of the stimulus set (`fit_pca`)
=====================  ==========================================================================

**How the PCA is fitted.** On the flattened layer outputs of ``pca_images`` images of the whole
stimulus set (not of the subset a dataset asks for), drawn without replacement by
``numpy.random.default_rng(seed).choice(n_images, size=min(pca_images, n_images),
replace=False)`` and taken in increasing row order: ``mean`` is their mean; the components are
the first ``k`` right singular vectors of the centred ``(m, D)`` matrix (float32), each with the
sign that makes its entry of largest magnitude positive. ``k`` must be below ``m`` and at most
``D``. The fit holds the ``(m, D)`` matrix in memory (``m × D × 4`` bytes); it is computed once
and stored with the cache entry (``pca.npz``: ``mean``, ``components``, ``rows``,
``explained_variance``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from neurotorch.errors import ParameterError


def layer_tensor(output: Any, layer: str) -> torch.Tensor:
    """The tensor of a layer's output (see the module docstring)."""
    while not isinstance(output, torch.Tensor):
        if isinstance(output, list | tuple) and output:
            output = output[0]
        elif isinstance(output, Mapping) and output:
            output = next(iter(output.values()))
        else:
            raise ParameterError(
                f"layer {layer or '(the model output)'!r} returns {type(output).__name__}, "
                "not a tensor; choose a module that outputs a tensor."
            )
    return output


def pool(x: torch.Tensor, pooling: str, *, layer: str) -> torch.Tensor:
    """``avg``, ``cls`` or ``flatten`` of a batch of layer outputs, as float32 ``(N, D)``.

    The projections (``random_projection``, ``pca``) start from ``flatten``.
    """
    x = x.float()
    if pooling == "avg":
        if x.ndim == 4:
            return x.mean(dim=(2, 3))
        if x.ndim == 3:
            return x.mean(dim=1)
        if x.ndim == 2:
            return x
    elif pooling == "cls":
        if x.ndim == 3:
            return x[:, 0]
    else:
        return x.reshape(x.shape[0], -1)
    raise ParameterError(
        f"pooling={pooling!r} does not apply to the output of layer {layer!r}, of shape "
        f"{tuple(x.shape)}: 'avg' takes (N, C, H, W), (N, T, C) or (N, C); 'cls' takes "
        "(N, T, C). Choose 'flatten', 'random_projection' or 'pca', or another layer."
    )


def random_projection_matrix(dim: int, k: int, seed: int) -> np.ndarray:
    """The ``(dim, k)`` float32 matrix of ``pooling="random_projection"`` (see the module
    docstring)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((dim, k), dtype=np.float32) / np.float32(np.sqrt(k))


def pca_sample_rows(n_images: int, pca_images: int, seed: int) -> np.ndarray:
    """Rows of the stimulus set the PCA is fitted on, increasing."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_images, size=min(pca_images, n_images), replace=False))


def check_pca_size(k: int, m: int, dim: int, *, layer: str) -> None:
    """`ParameterError` unless ``k`` components can be fitted on ``m`` images of ``dim``
    dimensions (``k < m`` and ``k <= dim``)."""
    if k >= m or k > dim:
        raise ParameterError(
            f"pca with k={k} on layer {layer!r} needs k below the {m} fitting images and at "
            f"most the {dim} dimensions of the layer; lower k or raise pca_images."
        )


def fit_pca(x: torch.Tensor, k: int, *, layer: str) -> dict[str, np.ndarray]:
    """``mean`` (D,), ``components`` (k, D) float32 and ``explained_variance`` (k,) of ``x``."""
    m, dim = x.shape
    check_pca_size(k, m, dim, layer=layer)
    x = x.float()
    mean = x.mean(dim=0)
    _, singular, vh = torch.linalg.svd(x - mean, full_matrices=False)
    components = vh[:k]
    largest = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(k), largest])
    components = components * signs[:, None]
    return {
        "mean": mean.cpu().numpy().astype(np.float32),
        "components": components.cpu().numpy().astype(np.float32),
        "explained_variance": (singular[:k].double() ** 2 / (m - 1)).cpu().numpy(),
    }
