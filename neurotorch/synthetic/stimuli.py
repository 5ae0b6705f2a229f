"""The synthetic stimulus set: names, latent codes, and the files of ``stimuli/``.

Writes, with the real names, columns and dtypes (see ``neurotorch.fmri.layout``): the metadata CSV,
the images HDF5 (variable-length encoded JPEG/PNG bytes), the four embedding HDF5 files (float16 with
the real dimensions), the long-form captions CSV and the segmentations HDF5 + CSV.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from neurotorch.fmri import layout
from neurotorch.io.atomic import atomic_path, write_text
from neurotorch.synthetic.pictures import CATEGORY_NOUNS, draw_picture, encode_picture

CATEGORIES = tuple(CATEGORY_NOUNS)
OOD_NOUNS = ("air_pump", "aloe", "apple", "anchor", "bell", "cactus", "drum", "kettle", "lamp")


@dataclass
class StimulusSet:
    """All images of the dataset, in metadata order, with the latent code each derives from."""

    names: list[str]
    kinds: list[str]  # shared12, shared4, ood, unique
    categories: list[str]
    participants: list[str]  # subject id for unique images, "" for shared ones
    latent: np.ndarray  # (n_images, latent_dim)

    @property
    def n_reps(self) -> np.ndarray:
        reps = {"shared12": 12, "shared4": 4, "ood": 4, "unique": 1}
        return np.array([reps[k] for k in self.kinds])

    def indices(self, *kinds: str, participant: str | None = None) -> np.ndarray:
        return np.array(
            [
                i
                for i, (k, p) in enumerate(zip(self.kinds, self.participants, strict=True))
                if k in kinds and (participant is None or p == participant)
            ],
            dtype=int,
        )


def make_stimulus_set(
    rng: np.random.Generator,
    subjects: list[str],
    n_shared12: int,
    n_shared4: int,
    n_ood_per_type: int,
    n_unique: int,
    latent_dim: int,
) -> StimulusSet:
    """Draw image names following the real patterns and a latent code per image.

    In-distribution images cluster around one centre per category; each OOD type clusters around
    a centre of its own, drawn farther out, so OOD images are far from the training images.
    """
    centres = rng.normal(size=(len(CATEGORIES), latent_dim)) * 1.5
    ood_centres = rng.normal(size=(len(layout.OOD_TYPES), latent_dim)) * 3.0
    names, kinds, cats, parts, latents = [], [], [], [], []

    def add(name: str, kind: str, participant: str = "", centre: np.ndarray | None = None) -> None:
        c = int(rng.integers(len(CATEGORIES)))
        names.append(name)
        kinds.append(kind)
        cats.append(CATEGORIES[c])
        parts.append(participant)
        latents.append((centres[c] if centre is None else centre) + rng.normal(size=latent_dim))

    for i in range(n_shared12):
        add(f"shared_12rep_LAION_cluster_{1000 + i}_i{i % 5}.jpg", "shared12")
    for i in range(n_shared4):
        add(f"shared_4rep_LAION_cluster_{2000 + i}_i{i % 5}.jpg", "shared4")
    for ood_type, ood_centre in zip(layout.OOD_TYPES, ood_centres, strict=True):
        for j in range(n_ood_per_type):
            noun = OOD_NOUNS[j % len(OOD_NOUNS)] + ("" if j < len(OOD_NOUNS) else f"_{j}")
            add(f"shared_4rep_OOD_{ood_type}_{noun}.png", "ood", centre=ood_centre)
    for s, subject in enumerate(subjects):
        tag = subject.split("-", 1)[1]
        for i in range(n_unique):
            add(f"unique_LAION_fillup_cluster_{s}_i{i}_p{tag}.jpg", "unique", participant=subject)
    return StimulusSet(names, kinds, cats, participants=parts, latent=np.asarray(latents))


def make_embeddings(
    stimset: StimulusSet, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per model: unit-norm rows of a random linear map of the latent code, plus a little noise.

    Returns the float16 embeddings and the (latent_dim, D) projection of each model.
    """
    embeddings, projections = {}, {}
    for model, dim in layout.EMBEDDING_MODELS.items():
        projection = rng.normal(size=(stimset.latent.shape[1], dim))
        emb = stimset.latent @ projection + 0.3 * rng.normal(size=(len(stimset.names), dim))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        embeddings[model], projections[model] = emb.astype(np.float16), projection
    return embeddings, projections


def _caption(category: str, rng: np.random.Generator, human: bool) -> str:
    noun = CATEGORY_NOUNS[category]
    adjectives = ("small", "large", "bright", "dark", "colourful", "plain")
    if human:
        return f"a {rng.choice(adjectives)} {noun} in a picture"
    return f"An image showing a {rng.choice(adjectives)} {noun} on a coloured background."


def write_stimuli(
    root: Path,
    stimset: StimulusSet,
    embeddings: dict[str, np.ndarray],
    image_size: int,
    rng: np.random.Generator,
) -> None:
    """Write every file of ``stimuli/`` under ``root``."""
    (root / layout.STIMULI_DIR).mkdir(parents=True, exist_ok=True)
    n = len(stimset.names)
    metadata = pd.DataFrame(
        {
            "image_name": stimset.names,
            "dataset": ["OOD" if k == "ood" else "LAION" for k in stimset.kinds],
            "participant": stimset.participants,
            "unique_or_shared": ["unique" if k == "unique" else "shared" for k in stimset.kinds],
            "n_reps": stimset.n_reps,
        }
    )
    write_text(root / layout.stimuli_metadata(), metadata.to_csv(index=False))

    encoded: list[np.ndarray] = []
    seg_rows: list[tuple] = []
    seg_masks: list[np.ndarray] = []
    captions: list[tuple[str, int, str, str]] = []
    for i, (name, category) in enumerate(zip(stimset.names, stimset.categories, strict=True)):
        image, objects = draw_picture(stimset.latent[i], category, image_size, rng=rng)
        encoded.append(np.frombuffer(encode_picture(image, name), dtype=np.uint8))
        shared = stimset.kinds[i] != "unique"
        if shared:
            scores = [round(float(rng.uniform(0.6, 1.0)), 3) for _ in objects]
            # as in the real table: instance_id counts the masks of one noun, best score first
            instance_of: dict[int, int] = {}
            seen: Counter[str] = Counter()
            for k in sorted(range(len(objects)), key=lambda k: -scores[k]):
                instance_of[k] = seen[objects[k].noun]
                seen[objects[k].noun] += 1
            for k, obj in enumerate(objects):
                seg_rows.append(
                    (len(seg_masks), name, obj.noun, instance_of[k], scores[k], *obj.box, 1)
                )
                seg_masks.append(obj.mask)
            if i % 4 == 0:  # a concept present but not localised: full-image mask, localized 0
                seg_rows.append(
                    (len(seg_masks), name, "scene", 0, 0.5, 0, 0, image_size, image_size, 0)
                )
                seg_masks.append(np.ones((image_size, image_size), dtype=np.uint8))
        captions.append((name, 0, "ai", _caption(category, rng, human=False)))
        for k in range(1, (5 if shared else 3) + 1):
            captions.append((name, k, "human", _caption(category, rng, human=True)))

    with atomic_path(root / layout.stimuli_images()) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_dataset("images", shape=(n,), dtype=h5py.vlen_dtype(np.uint8))
        for i, blob in enumerate(encoded):
            data[i] = blob
    ids = np.array(stimset.names, dtype=object)
    for model, emb in embeddings.items():
        with atomic_path(root / layout.embeddings(model)) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("embedding", data=emb)
            f.create_dataset("image_ids", data=ids, dtype=h5py.string_dtype())
            f.create_dataset("valid", data=np.ones(n, dtype=bool))
    with atomic_path(root / layout.segmentations()) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(
            "masks",
            data=np.stack(seg_masks),
            compression="gzip",
            compression_opts=1,
            chunks=(1, image_size, image_size),
        )
    segments = pd.DataFrame(seg_rows, columns=[*layout.SEGMENTATION_COLUMNS, "localized"])
    write_text(root / layout.segmentations_metadata(), segments.to_csv(index=False))
    captions_table = pd.DataFrame(captions, columns=list(layout.CAPTION_COLUMNS))
    write_text(root / layout.captions(), captions_table.to_csv(index=False))
