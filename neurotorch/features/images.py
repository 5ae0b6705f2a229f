"""Stimulus images as a torch dataset: read, decoded and preprocessed in ``DataLoader`` workers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from neurotorch.features.transforms import check_output
from neurotorch.fmri.stimuli import Stimuli
from neurotorch.io.storage import DataRoot


class StimulusImageDataset(Dataset):
    """Rows of the stimulus set (``task-images_stimuli.h5``), each decoded as the subject saw it
    (RGB, transparency on the mid-grey screen) and passed through ``transform``.

    The HDF5 file opens on first use in each process, so the dataset can go to ``DataLoader``
    workers under any start method; a damaged image raises `CorruptFileError` naming it.

    Parameters
    ----------
    root
        Dataset root.
    rows
        Rows of the stimulus set (metadata order) the dataset serves, in this order.
    transform
        PIL image → ``(3, H, W)`` float tensor.
    """

    def __init__(
        self,
        root: DataRoot,
        rows: Sequence[int] | np.ndarray,
        transform: Callable[[Any], torch.Tensor],
    ):
        self.stimuli = Stimuli(root)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.transform = transform
        self._names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._names is None:
            self._names = self.stimuli.images.names()
        name = self._names[int(self.rows[index])]
        return check_output(self.transform(self.stimuli.images.get(name)), self.transform)
