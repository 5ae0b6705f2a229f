"""Per-trial stimulus namespaces of a subject: ``sub.images``, ``sub.embeddings``,
``sub.segmentations``, ``sub.captions``.

Every method takes a **global trial index**: a row of ``sub.metadata``, i.e. the position of the
trial's beta when the sessions' betas are concatenated in ``sub.get_sessions()`` order. Bulk methods
(``images.array``, ``embeddings.all``) keep that order, so their rows line up with the betas.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Protocol, cast

import numpy as np
import pandas as pd

from neurotorch.errors import ParameterError
from neurotorch.fmri import layout
from neurotorch.fmri.stimuli import Stimuli, decode_image

READ_CHUNK = 64


class TrialSource(Protocol):
    """What the namespaces need of a subject (`neurotorch.fmri.subject.Subject` has it)."""

    subject_id: str

    @property
    def stimuli(self) -> Stimuli: ...

    def trials_metadata(self) -> pd.DataFrame: ...


class _TrialNamespace:
    """Maps global trial indices of a subject to image names of the stimulus hub."""

    def __init__(self, subject: TrialSource):
        self._subject = subject

    @property
    def _hub(self) -> Stimuli:
        return self._subject.stimuli

    def _table(self) -> pd.DataFrame:
        return self._subject.trials_metadata()

    def __len__(self) -> int:
        return len(self._table())

    def _name(self, trial: int) -> str:
        if not isinstance(trial, int | np.integer) or isinstance(trial, bool):
            raise TypeError(f"A trial index is an integer (a row of sub.metadata), got {trial!r}.")
        n_trials = len(self._table())
        index = int(trial) + n_trials if trial < 0 else int(trial)
        if not 0 <= index < n_trials:
            raise IndexError(
                f"Trial {trial} is out of range; {self._subject.subject_id} has {n_trials} trials."
            )
        return str(self._table()["image_name"].iat[index])

    def _names(self, session: str | int | None = None) -> list[str]:
        table = self._table()
        if session is None:
            return table["image_name"].tolist()
        session_id = layout.session_id(session)
        selected = table.loc[table["session"] == session_id, "image_name"]
        if selected.empty:
            sessions = sorted(set(table["session"]))
            raise ParameterError(
                f"No trials in session {session_id!r}; sessions: {', '.join(sessions)}."
            )
        return selected.tolist()


class TrialImages(_TrialNamespace):
    """The image shown on each trial."""

    def __getitem__(self, trial: int) -> bytes:
        """Encoded (JPEG/PNG) bytes of the trial's image."""
        return cast(bytes, self._hub.images[self._name(trial)])  # one name: one image

    def get(self, trial: int, as_displayed: bool = True):
        """PIL image of the trial (``as_displayed``: RGB as shown, transparency on mid-grey)."""
        return decode_image(self[trial], as_displayed)

    def all(self, session: str | int | None = None, as_displayed: bool = True) -> Iterator:
        """Iterator of PIL images in trial order (of one session if given)."""
        names = self._names(session)
        for start in range(0, len(names), READ_CHUNK):
            for raw in self._hub.images.read(names[start : start + READ_CHUNK]):
                yield decode_image(raw, as_displayed)

    def array(self, session: str | int | None = None) -> np.ndarray:
        """``(n_trials, H, W, 3)`` uint8 stack of the displayed images in trial order.

        Each distinct image is decoded once; all images must share one size.
        """
        names = self._names(session)
        distinct, inverse = np.unique(np.asarray(names, dtype=object), return_inverse=True)
        decoded = [
            np.asarray(decode_image(raw)) for raw in self._hub.images.read(distinct.tolist())
        ]
        return np.stack(decoded)[inverse]


class TrialEmbeddings(_TrialNamespace):
    """Pretrained embeddings of each trial's image."""

    @property
    def models(self) -> list[str]:
        """Models whose embedding file is present."""
        return self._hub.embeddings.models

    def get(self, model: str, trial: int, dtype: np.dtype | type | None = None) -> np.ndarray:
        """``(D,)`` embedding of the trial's image."""
        return self._hub.embeddings.get(model, self._name(trial), dtype=dtype)

    def all(
        self, model: str, session: str | int | None = None, dtype: np.dtype | type | None = None
    ) -> np.ndarray:
        """``(n_trials, D)`` embeddings in trial order, aligned row by row with the betas."""
        return self._hub.embeddings.get(model, self._names(session), dtype=dtype)


class TrialSegmentations(_TrialNamespace):
    """Object masks of each trial's image (shared images only; see `StimulusSegmentations`)."""

    def has_image(self, trial: int) -> bool:
        """Whether the trial's image has any mask."""
        return self._hub.segmentations.has_image(self._name(trial))

    def nouns(self, trial: int, localized_only: bool = True) -> list[str]:
        """Nouns segmented in the trial's image (``[]`` for images without masks)."""
        return self._hub.segmentations.nouns(self._name(trial), localized_only=localized_only)

    def for_image(self, trial: int) -> pd.DataFrame:
        """Segmentation metadata rows of the trial's image (empty without masks)."""
        return self._hub.segmentations.for_image(self._name(trial))

    def get(self, trial: int, noun: str, instance: int | None = 0) -> np.ndarray:
        """Mask ``(noun, instance_id)`` of the trial's image; `NameNotFoundError` if absent."""
        return self._hub.segmentations.get(self._name(trial), noun, instance)


class TrialCaptions(_TrialNamespace):
    """Captions of each trial's image (see `StimulusCaptions`)."""

    def list(self, trial: int, source: str | None = None) -> builtins.list[str]:
        """Captions of the trial's image in ``caption_idx`` order (AI first where present);
        ``source`` ``"human"``/``"ai"`` keeps one source."""
        return self._hub.captions.list(self._name(trial), source=source)

    def human(self, trial: int, limit: int | None = None) -> builtins.list[str]:
        """Human captions of the trial's image in rank order (the first ``limit`` if given)."""
        return self._hub.captions.human(self._name(trial), limit=limit)

    def ai(self, trial: int) -> str | None:
        """AI caption of the trial's image, or None."""
        return self._hub.captions.ai(self._name(trial))

    def for_image(self, trial: int) -> pd.DataFrame:
        """Caption rows of the trial's image, indexed 0…k-1."""
        return self._hub.captions.get(self._name(trial))
