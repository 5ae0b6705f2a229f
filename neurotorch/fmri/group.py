"""Several subjects at once, for analyses on the shared stimuli (laion_fmri's ``Group``)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from neurotorch._docs import fill_doc
from neurotorch._options import check_option
from neurotorch.errors import ParameterError
from neurotorch.fmri.datafiles import resolve_root
from neurotorch.fmri.discovery import get_subjects
from neurotorch.fmri.rois import RoiQuery
from neurotorch.fmri.subject import Subject, load_subject
from neurotorch.io.storage import DataRoot


class SubjectGroup:
    """Subjects keyed by id; iterating yields ``(subject_id, Subject)`` in sorted id order.

    ``group["sub-01"]`` or ``group[0]`` gives one `Subject`. Nothing is loaded until asked for.
    """

    def __init__(self, subjects: Sequence[Subject]):
        self._subjects = {s.subject_id: s for s in sorted(subjects, key=lambda s: s.subject_id)}

    def __repr__(self) -> str:
        return f"SubjectGroup({list(self._subjects)})"

    @property
    def subject_ids(self) -> list[str]:
        return list(self._subjects)

    def __len__(self) -> int:
        return len(self._subjects)

    def __iter__(self) -> Iterator[tuple[str, Subject]]:
        return iter(self._subjects.items())

    def __getitem__(self, key: int | str) -> Subject:
        if isinstance(key, int | np.integer) and not isinstance(key, bool):
            return list(self._subjects.values())[key]
        if isinstance(key, str):
            if key not in self._subjects:
                raise KeyError(
                    f"Subject {key!r} is not in this group; it holds {self.subject_ids}."
                )
            return self._subjects[key]
        raise TypeError(
            f"Index a SubjectGroup with an int or a subject id, not {type(key).__name__}."
        )

    def get_shared_betas(
        self,
        session: str | int | list | None = None,
        roi: RoiQuery | None = None,
        mask: np.ndarray | None = None,
        nc_threshold: float | None = None,
        mask_source: str = "anatomical",
        streaming: bool = False,
    ) -> dict[str, np.ndarray | dict[str, np.ndarray]]:
        """``Subject.get_betas(session, stimuli="shared", ...)`` of every subject, keyed by subject id.

        Rows follow each subject's trial order in that session; match trials across subjects
        through ``subject.metadata`` (image_name).
        """
        return {
            subject_id: subject.get_betas(
                session=session,
                roi=roi,
                mask=mask,
                nc_threshold=nc_threshold,
                stimuli="shared",
                streaming=streaming,
                mask_source=mask_source,
            )
            for subject_id, subject in self
        }

    def get_shared_images(self, format: str = "pil") -> list | np.ndarray:
        """The shared images (``unique_or_shared == "shared"``), in stimulus-metadata order.

        ``format="pil"``: a list of PIL images as displayed (RGB); ``"numpy"``: a
        ``(n, H, W, 3)`` uint8 stack.
        """
        check_option("format", format, ("pil", "numpy"))
        names = self.get_shared_stimulus_metadata()["image_name"].tolist()
        images = next(iter(self._subjects.values())).stimuli.images.get(names)
        return images if format == "pil" else np.stack([np.asarray(i) for i in images])

    def get_shared_stimulus_metadata(self) -> pd.DataFrame:
        """Rows of the stimulus metadata whose images every subject saw (``unique_or_shared == "shared"``)."""
        if not self._subjects:
            raise ParameterError("The group is empty.")
        metadata = next(iter(self._subjects.values())).stimuli.metadata
        return metadata[metadata["unique_or_shared"] == "shared"].reset_index(drop=True)


@fill_doc
def load_subjects(
    subjects: Sequence[str] | str = "all",
    data_dir: str | os.PathLike | DataRoot | None = None,
    storage_options: dict | None = None,
) -> SubjectGroup:
    """Load several subjects as a `SubjectGroup` (laion_fmri's ``load_subjects``).

    Parameters
    ----------
    subjects
        ``"all"`` (every subject of the dataset), one subject id or a list of them (strings, as
        `load_subject` takes them).
    %(fmri_data_dir)s
    %(storage_options)s
    """
    root = resolve_root(data_dir, storage_options)
    if isinstance(subjects, str):
        subjects = get_subjects(root) if subjects == "all" else [subjects]
    return SubjectGroup([load_subject(s, root) for s in subjects])
