"""Procedurally drawn stimulus pictures with per-object segmentation masks.

Each picture is a coloured background with one to three objects whose shape is set by the image's
category and whose colours and positions come from its latent vector, so pictures, embeddings and
brain responses of the synthetic dataset all derive from one latent code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# category -> the noun its main object is labelled with in the segmentations
CATEGORY_NOUNS = {
    "face": "face",
    "body": "person",
    "place": "house",
    "object": "ball",
    "character": "sign",
}
EXTRA_NOUNS = ("tree", "cloud", "box")


@dataclass
class DrawnObject:
    noun: str
    mask: np.ndarray  # (H, W) uint8, 1 inside the object
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels


def _colour(values: np.ndarray) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in (255 / (1 + np.exp(-2 * values[:3]))).astype(int))
    return red, green, blue


def _shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if kind in ("face", "ball", "cloud"):
        draw.ellipse(box, fill=fill)
    elif kind == "house":
        mid = (y0 + y1) // 2
        draw.rectangle((x0, mid, x1, y1), fill=fill)
        draw.polygon([(x0, mid), ((x0 + x1) // 2, y0), (x1, mid)], fill=fill)
    elif kind == "tree":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:  # person, sign, box
        draw.rectangle(box, fill=fill)


def draw_picture(
    latent: np.ndarray, category: str, size: int, rng: np.random.Generator
) -> tuple[Image.Image, list[DrawnObject]]:
    """Draw one picture of ``size`` × ``size`` pixels and return it with its objects' masks."""
    image = Image.new("RGB", (size, size), _colour(latent[3:6] if len(latent) >= 6 else latent))
    objects: list[DrawnObject] = []
    nouns = [CATEGORY_NOUNS.get(category, "box")]
    nouns += list(rng.choice(EXTRA_NOUNS, size=rng.integers(0, 3), replace=False))
    for k, noun in enumerate(nouns):
        extent = int(size * (0.45 if k == 0 else 0.25))
        x0 = int(rng.integers(0, size - extent))
        y0 = int(rng.integers(0, size - extent))
        box = (x0, y0, x0 + extent - 1, y0 + extent - 1)
        fill = _colour(np.roll(latent, k + 1))
        _shape(ImageDraw.Draw(image), noun, box, fill=fill)
        layer = Image.new("L", (size, size), 0)
        _shape(ImageDraw.Draw(layer), noun, box, fill=1)
        mask = np.asarray(layer, dtype=np.uint8)
        for earlier in objects:  # later objects occlude earlier ones
            earlier.mask[mask > 0] = 0
        objects.append(DrawnObject(noun, mask.copy(), box))
    return image, objects


def encode_picture(image: Image.Image, name: str) -> bytes:
    """Encode as PNG for ``.png`` names and JPEG otherwise, like the real stimulus file."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if name.endswith(".png") else "JPEG", quality=90)
    return buffer.getvalue()
