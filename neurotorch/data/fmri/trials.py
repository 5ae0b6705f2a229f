"""Which trials a dataset serves, and the stimulus modalities paired with them.

Shared by the map-style `BetasDataset` and the iterable `BetasStream`: `select_trials` builds the
trial table (one row per trial: ``subject, session, trial, image_name``) from subjects, sessions,
a split part, OOD types and shared/unique; `StimulusPairing` turns image names into the requested
modalities (embeddings of several models, decoded images, captions, segmentation masks).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from neurotorch.errors import FormatError, ParameterError, SplitError, SubjectNotFoundError
from neurotorch.fmri import layout
from neurotorch.fmri.discovery import get_sessions, get_subjects
from neurotorch.fmri.session_checks import check_beta_index, read_session_trials
from neurotorch.fmri.splits import SHARED_POOL, get_train_test_ids
from neurotorch.fmri.stimuli import Stimuli
from neurotorch.io.storage import DataRoot

PARTS = ("train", "test", "all")
MODALITIES = ("image", "captions", "segmentation")
SELECTION_COLUMNS = ["subject", "session", "trial", "image_name"]


def parse_split(split: str | None) -> tuple[str | None, str]:
    """``"tau/train"`` → ``("tau", "train")``; ``"random_0"`` → ``("random_0", "all")``; None → (None, "all")."""
    if split is None:
        return None, "all"
    name, _, part = split.partition("/")
    part = part or "all"
    if part not in PARTS:
        raise SplitError(
            f"Unknown split part {part!r} in {split!r}: a split is '<name>' or '<name>/<part>' "
            "with part train, test or all (e.g. 'tau/train'); pick the pool with pool=."
        )
    return name, part


def check_unique(ids: Sequence[str], what: str) -> None:
    """`ParameterError` if an id occurs twice in ``ids`` (its trials would be served twice)."""
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ParameterError(
            f"{what} {', '.join(repeated)} is given more than once, so its trials would be "
            f"served twice per epoch; pass each {what} once."
        )


def read_trials(root: DataRoot, subject: str, session: str) -> pd.DataFrame:
    """The session's trial table as ``subject, session, trial, image_name``.

    ``trial`` is the row's ``beta_index``: the volume of the session's betas file (and the row of
    its prepared store) that holds the trial. The datasets check the table against the volume
    count with `neurotorch.fmri.session_checks.trial_volumes` when they open a session.
    """
    table = read_session_trials(root, subject, session)
    check_beta_index(table, root.path(layout.session_trials(subject, session)))
    return pd.DataFrame(
        {
            "subject": subject,
            "session": session,
            "trial": table["beta_index"].to_numpy(np.int64),
            "image_name": table["label"].to_numpy(object),
        }
    )


def select_trials(
    root: DataRoot,
    subjects: Sequence[str],
    sessions: Sequence[str] | dict[str, Sequence[str]] | None = None,
    *,
    split: str | None = None,
    pool: str = SHARED_POOL,
    variant_id: int = 0,
    ood_types: str | Iterable[str] | None = None,
    stimuli: str | None = None,
    image_names: Iterable[str] | None = None,
) -> pd.DataFrame:
    """The selected trials, in (subject, session, trial) order.

    Parameters
    ----------
    root
        Dataset root.
    subjects
        Subject ids.
    sessions
        Sessions for every subject, a dict per subject, or None for all sessions.
    split
        ``"<name>/<part>"`` (``"tau/train"``, ``"random_0/test"``, ``"ood/all"``); None keeps all.
    pool, variant_id, ood_types
        As in `neurotorch.fmri.splits.get_train_test_ids`.
    stimuli
        ``"shared"`` or ``"unique"`` keeps the trials whose image name has that prefix.
    image_names
        Keep only trials of these images (applied after the split).
    """
    if stimuli is not None and stimuli not in layout.STIMULUS_SUBSETS:
        raise ParameterError(f"stimuli must be 'shared', 'unique' or None, got {stimuli!r}.")
    available = get_subjects(root)
    unknown = [s for s in subjects if s not in available]
    if unknown:
        raise SubjectNotFoundError(
            f"Subject(s) {', '.join(unknown)} not in {root.url}; available: {', '.join(available)}."
        )
    stray = sorted(set(sessions) - set(subjects)) if isinstance(sessions, dict) else []
    if stray:
        raise ParameterError(
            f"sessions names subject(s) {stray} that are not selected (subject={list(subjects)}); "
            "key the sessions dict by the selected subjects."
        )
    tables = []
    for subject in subjects:
        chosen = sessions.get(subject) if isinstance(sessions, dict) else sessions
        chosen = get_sessions(subject, root) if chosen is None else list(chosen)
        ids = [layout.session_id(session) for session in chosen]
        check_unique(ids, "session")
        tables.extend(read_trials(root, subject, session) for session in ids)
    trials = (
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=SELECTION_COLUMNS)
    )
    keep = np.ones(len(trials), dtype=bool)
    name, part = parse_split(split)
    if name is not None:
        train_ids, test_ids = get_train_test_ids(name, pool, variant_id, ood_types, data_dir=root)
        ids = {"train": train_ids, "test": test_ids, "all": [*train_ids, *test_ids]}[part]
        keep &= trials["image_name"].isin(set(ids)).to_numpy()
    elif ood_types is not None:
        kinds = {ood_types} if isinstance(ood_types, str) else set(ood_types)
        unknown = sorted(kinds - set(layout.OOD_TYPES))
        if unknown:
            raise ParameterError(
                f"Unknown ood_types {unknown}; choose from {list(layout.OOD_TYPES)}."
            )
        keep &= trials["image_name"].map(layout.ood_type).isin(kinds).to_numpy()
    if stimuli is not None:
        keep &= trials["image_name"].str.startswith(f"{stimuli}_").to_numpy()
    if image_names is not None:
        keep &= trials["image_name"].isin(set(image_names)).to_numpy()
    if not keep.any():
        raise ParameterError(
            f"No trial of {', '.join(subjects)} (sessions {sessions or 'all'}) passes the "
            f"selection split={split!r}, ood_types={ood_types!r}, stimuli={stimuli!r}, "
            f"image_names={'given' if image_names is not None else None}; "
            f"{len(trials)} trials before it. Widen the selection."
        )
    return trials[keep].reset_index(drop=True)


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
        Embedding model(s) (``"CLIP"``, ``["CLIP", "DINOv2"]``) or None. One model gives the item
        key ``embedding``; several give ``embedding_<model>`` each.
    modalities
        Any of ``"image"`` (decoded, then ``image_transform``), ``"captions"`` (list of str in
        caption order) and ``"segmentation"`` (uint8 ``(k, H, W)`` masks and their nouns).
    image_transform
        Callable on a PIL image; default `image_to_tensor`.
    """

    def __init__(
        self,
        root: DataRoot,
        image_names: Sequence[str],
        features: str | Sequence[str] | None = "CLIP",
        modalities: Sequence[str] = (),
        image_transform: Callable[[Any], Any] | None = None,
    ):
        unknown = sorted(set(modalities) - set(MODALITIES))
        if unknown:
            raise ParameterError(f"Unknown modalities {unknown}; choose from {MODALITIES}.")
        self.root = root
        self.features = (
            [] if features is None else [features] if isinstance(features, str) else list(features)
        )
        for model in self.features:
            layout.embeddings(model)  # validates the name
        self.modalities = tuple(modalities)
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
        return "embedding" if len(self.features) == 1 else f"embedding_{model}"

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
