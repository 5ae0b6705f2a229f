"""Which trials a dataset serves: `TrialSelection` and the trial table it selects.

A `TrialSelection` names a part of a split of a stimulus pool, OOD types, sessions, shared or
unique stimuli and image names, checked once when it is made. `select_trials` applies it to the
subjects' trial tables (one row per trial: ``subject, session, trial, image_name``). The
map-style `BetasDataset`, the `BetasStream` and the DataModule all select trials through it, so
one selection means the same trials everywhere.

The split string has one meaning per place: here ``split`` is the split's name (``"random_0"``,
``"tau"``) and ``part`` is ``"train"``, ``"val"``, ``"test"`` or ``"all"``;
``neurotorch.load_dataset("laion-fmri", split="random_0/train")`` writes both in one string (the
Hugging Face habit), and a DataModule takes the name alone (it serves every part).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast, get_args

import numpy as np
import pandas as pd

from neurotorch._docs import fill_doc
from neurotorch._options import as_names, check_int, check_number, check_option
from neurotorch.data.partition import carve
from neurotorch.errors import (
    DataNotDownloadedError,
    ParameterError,
    SplitError,
    SubjectNotFoundError,
)
from neurotorch.fmri import layout
from neurotorch.fmri.discovery import get_sessions, get_subjects
from neurotorch.fmri.session_checks import check_beta_index, read_session_trials
from neurotorch.fmri.splits import SHARED_POOL, get_train_test_ids
from neurotorch.io.storage import DataRoot

Part = Literal["train", "val", "test", "all"]
PARTS = get_args(Part)
OodType = Literal[
    "cropped",
    "gabor",
    "gaudy",
    "illusion-classic",
    "illusion-natural",
    "relations",
    "selfmade",
    "shape",
    "unusual",
]
SELECTION_COLUMNS = ["subject", "session", "trial", "image_name"]


def check_unique(ids: Sequence[str], what: str) -> None:
    """`ParameterError` if an id occurs twice in ``ids`` (its trials would be served twice)."""
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ParameterError(
            f"{what} {', '.join(repeated)} is given more than once, so its trials would be "
            f"served twice per epoch; pass each {what} once."
        )


def _session_ids(sessions: Any) -> tuple[str, ...]:
    ids = [layout.session_id(s) for s in as_names("sessions", sessions)]
    check_unique(ids, "session")
    return tuple(ids)


@fill_doc
@dataclass(frozen=True)
class TrialSelection:
    """Which trials of the selected subjects a dataset serves.

    Parameters
    ----------
    %(split)s
    %(part)s
    %(pool)s
    %(variant_id)s
    %(ood_types)s
    %(val_fraction)s
    %(val_seed)s
    %(fmri_sessions)s
    %(stimuli)s
    %(image_names)s
    """

    split: str | None = None
    part: Part = "all"
    pool: str = SHARED_POOL
    variant_id: int = 0
    ood_types: OodType | list[OodType] | None = None
    val_fraction: float = 0.0
    val_seed: int = 0
    sessions: str | list[str] | dict[str, str | list[str]] | None = None
    stimuli: Literal["shared", "unique"] | None = None
    image_names: str | list[str] | None = None

    def __post_init__(self) -> None:
        set_field = object.__setattr__
        if self.split is not None:
            if not isinstance(self.split, str) or "/" in self.split or not self.split:
                raise SplitError(
                    f"split={self.split!r} is not a split name; a trial selection names the "
                    "split and its part separately, e.g. split='random_0', part='train' "
                    "(load_dataset writes both as split='random_0/train')."
                )
        check_option("part", self.part, PARTS)
        if self.part != "all" and self.split is None:
            raise ParameterError(f"part={self.part!r} needs a split (e.g. split='random_0').")
        if not isinstance(self.pool, str):
            raise ParameterError(f"pool must be 'shared' or a subject id, got {self.pool!r}.")
        check_int("variant_id", self.variant_id, minimum=0)
        val = check_number(
            "val_fraction", self.val_fraction, minimum=0, maximum=1, open_maximum=True
        )
        set_field(self, "val_fraction", val)
        check_int("val_seed", self.val_seed)
        if self.part == "val" and val == 0:
            raise ParameterError(
                "part='val' needs val_fraction > 0 (the share of the split's training images "
                "held out for validation)."
            )
        if self.ood_types is not None:
            kinds = as_names("ood_types", self.ood_types)
            for kind in kinds:
                check_option("ood_types", kind, layout.OOD_TYPES)
            if self.split not in (None, "ood"):
                raise ParameterError(
                    f"ood_types applies to the 'ood' split (its test images) or to no split (the "
                    f"OOD images of the sessions), not to split={self.split!r}."
                )
            set_field(self, "ood_types", tuple(kinds))
        if isinstance(self.sessions, dict):
            sessions = {layout.subject_id(s): _session_ids(v) for s, v in self.sessions.items()}
            set_field(self, "sessions", sessions)
        elif self.sessions is not None:
            set_field(self, "sessions", _session_ids(self.sessions))
        if self.stimuli is not None:
            check_option("stimuli", self.stimuli, layout.STIMULUS_SUBSETS)
        if self.image_names is not None:
            set_field(self, "image_names", tuple(as_names("image_names", self.image_names)))

    def with_part(self, part: Part) -> TrialSelection:
        """The same selection restricted to another part of its split."""
        return replace(self, part=part)

    def sessions_of(self, subject: str) -> tuple[str, ...] | None:
        """The sessions asked for ``subject`` (None: all of them)."""
        # __post_init__ made the sessions session ids: a tuple, or a dict of tuples
        if isinstance(self.sessions, dict):
            return cast("tuple[str, ...] | None", self.sessions.get(subject))
        return cast("tuple[str, ...] | None", self.sessions)

    def image_ids(self, root: DataRoot) -> set[str] | None:
        """The images of ``part`` of the split (None without a split): the test images, or the
        training images less (``"train"``) or only (``"val"``) the carved validation share."""
        if self.split is None:
            return None
        train, test = get_train_test_ids(
            self.split,
            self.pool,
            variant_id=self.variant_id,
            ood_types=self.ood_types,
            data_dir=root,
        )
        if self.part == "test":
            return set(test)
        if self.part == "all":
            return {*train, *test}
        kept, held_out = carve(train, self.val_fraction, self.val_seed)
        return set(kept if self.part == "train" else held_out)

    def describe(self) -> str:
        """One line: what this selection keeps."""
        parts = [
            f"split {self.split}/{self.part} of pool {self.pool}" if self.split else "all trials"
        ]
        if self.ood_types:
            parts.append(f"OOD types {', '.join(self.ood_types)}")
        if self.stimuli:
            parts.append(f"{self.stimuli} stimuli")
        if isinstance(self.sessions, dict):
            named = "; ".join(f"{s}: {', '.join(v)}" for s, v in self.sessions.items())
            parts.append(f"sessions {named}")
        elif self.sessions is not None:
            parts.append(f"sessions {', '.join(self.sessions)}")
        if self.image_names is not None:
            parts.append(f"image_names ({len(self.image_names)} given)")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (YAML, checkpoints)."""
        sessions = self.sessions
        if isinstance(sessions, dict):
            sessions = {s: list(v) for s, v in sessions.items()}
        elif sessions is not None:
            sessions = list(sessions)
        return {
            "split": self.split,
            "part": self.part,
            "pool": self.pool,
            "variant_id": self.variant_id,
            "ood_types": None if self.ood_types is None else list(self.ood_types),
            "val_fraction": self.val_fraction,
            "val_seed": self.val_seed,
            "sessions": sessions,
            "stimuli": self.stimuli,
            "image_names": None if self.image_names is None else list(self.image_names),
        }


def parse_split(split: str) -> tuple[str, Part]:
    """``load_dataset``'s split string as ``(name, part)``: ``"tau/train"`` → ``("tau", "train")``,
    ``"random_0"`` → ``("random_0", "all")``.

    Raises
    ------
    SplitError
        A part other than train, val, test or all (``"tau/train/extra"``, ``"../shared/tau"``).
    """
    name, _, part = split.partition("/")
    part = part or "all"
    if part not in PARTS:
        raise SplitError(
            f"Unknown split part {part!r} in {split!r}: load_dataset's split is '<name>' or "
            "'<name>/<part>' with part train, val, test or all (e.g. 'tau/train'); pick the "
            "pool with pool=."
        )
    return name, part  # type: ignore[return-value]


def read_trials(root: DataRoot, subject: str, session: str) -> pd.DataFrame:
    """The session's trial table as ``subject, session, trial, image_name``, in volume order.

    ``trial`` is the row's ``beta_index``: the volume of the session's betas file (and the row of
    its prepared store) that holds the trial. Rows are sorted by it (a table may list trials in
    presentation order), so that item i of a session is volume i, as in ``get_betas``. The
    datasets check the table against the volume count with
    `neurotorch.fmri.session_checks.trial_volumes` when they open a session.
    """
    table = read_session_trials(root, subject, session)
    check_beta_index(table, root.path(layout.session_trials(subject, session)))
    trials = pd.DataFrame(
        {
            "subject": subject,
            "session": session,
            "trial": table["beta_index"].to_numpy(np.int64),
            "image_name": table["label"].to_numpy(object),
        }
    )
    return trials.sort_values("trial", kind="stable", ignore_index=True)


def select_trials(
    root: DataRoot, subjects: Sequence[str], selection: TrialSelection
) -> pd.DataFrame:
    """The trials of ``subjects`` that ``selection`` keeps, in (subject, session, trial) order.

    Raises
    ------
    SubjectNotFoundError
        A subject that has no betas in ``root``.
    ParameterError
        ``sessions`` keyed by a subject that is not selected, or a selection that keeps no trial.
    """
    available = get_subjects(root)
    unknown = [s for s in subjects if s not in available]
    if unknown:
        raise SubjectNotFoundError(
            f"Subject(s) {', '.join(unknown)} not in {root.url}; available: {', '.join(available)}."
        )
    sessions = selection.sessions
    stray = sorted(set(sessions) - set(subjects)) if isinstance(sessions, dict) else []
    if stray:
        raise ParameterError(
            f"sessions names subject(s) {stray} that are not selected (subject={list(subjects)}); "
            "key the sessions dict by the selected subjects."
        )
    tables: list[pd.DataFrame] = []
    for subject in subjects:
        present = get_sessions(subject, root)
        chosen = selection.sessions_of(subject) or present
        absent = [session for session in chosen if session not in present]
        if absent:
            raise DataNotDownloadedError(
                f"{subject} has no session {', '.join(absent)} in {root.url} (sessions here: "
                f"{', '.join(sorted(present)) or 'none'}); choose among those, or download the "
                f"others: neurotorch download laion-fmri --out DIR --subject {subject}."
            )
        tables.extend(read_trials(root, subject, session) for session in chosen)
    trials = (
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=SELECTION_COLUMNS)
    )
    names = trials["image_name"]
    keep = np.ones(len(trials), dtype=bool)
    ids = selection.image_ids(root)
    if ids is not None:
        keep &= names.isin(ids).to_numpy()
    elif selection.ood_types is not None:
        keep &= names.map(layout.ood_type).isin(set(selection.ood_types)).to_numpy()
    if selection.stimuli is not None:
        keep &= names.str.startswith(f"{selection.stimuli}_").to_numpy()
    if selection.image_names is not None:
        unseen = sorted(set(selection.image_names) - set(names))
        if unseen:
            raise ParameterError(
                f"image_names holds {len(unseen)} name(s) that no selected trial of "
                f"{', '.join(subjects)} shows: {', '.join(unseen[:5])}"
                f"{' ...' if len(unseen) > 5 else ''} (e.g. {names.iloc[0]!r} is one that is); "
                "check the spelling and the sessions selected."
            )
        keep &= names.isin(set(selection.image_names)).to_numpy()
    if not keep.any():
        raise ParameterError(
            f"No trial of {', '.join(subjects)} passes the trial selection "
            f"({selection.describe()}); {len(trials)} trials before it. Widen the selection."
        )
    return trials[keep].reset_index(drop=True)
