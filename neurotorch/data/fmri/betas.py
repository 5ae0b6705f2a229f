"""`BetasDataset`: single-trial betas paired with their stimuli, map-style, from the prepared store.

The betas come from the prepared store (`neurotorch.data.fmri.store`): one memory-mapped, already
masked trials × voxels ``.npy`` per (subject, session), built once from the ``.nii.gz`` files.
Nothing but the trial table and the small per-session statistics is held by the dataset object;
memory maps and HDF5 handles open on first use in each process, so the dataset is safe under
every ``DataLoader`` start method and pickles small.

``__getitems__`` serves a whole batch with one sorted fancy-index read per session and returns an
`neurotorch.data.collate.ItemBatch`; use `neurotorch.data.collate.collate_items` as the
``collate_fn`` to get the batch without a second copy (``default_collate`` works too).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from neurotorch.data.collate import ItemBatch
from neurotorch.data.fmri.store import PreparedStore, SessionStore, build_store
from neurotorch.data.fmri.trials import StimulusPairing, check_unique, select_trials
from neurotorch.errors import ParameterError
from neurotorch.fmri import layout
from neurotorch.fmri.datafiles import resolve_root
from neurotorch.fmri.nan_policy import DEFAULT_NAN_POLICY
from neurotorch.fmri.rois import RoiQuery
from neurotorch.fmri.splits import SHARED_POOL
from neurotorch.fmri.subject import Subject
from neurotorch.fmri.voxel_selection import DEFAULT_NC_DESC
from neurotorch.io.storage import DataRoot


def as_subject_list(subject: str | Sequence[str]) -> list[str]:
    """One subject id or several, normalised (``"01"`` → ``"sub-01"``).

    Raises
    ------
    ParameterError
        No subject, or one subject twice (its trials would be served twice per epoch).
    """
    subjects = [subject] if isinstance(subject, (str, int)) else list(subject)
    ids = [layout.subject_id(s) for s in subjects]
    if not ids:
        raise ParameterError("subject is an empty list; give at least one subject id.")
    check_unique(ids, "subject")
    return ids


class BetasDataset(Dataset):
    """Trials (or images, with ``average_repeats``) of one or more subjects, as dict items.

    Each item holds ``betas`` (float32 ``(n_voxels,)``), ``embedding`` (float32 ``(D,)``, or
    ``embedding_<model>`` per model when several are asked for), the requested ``modalities``,
    and the identifiers ``subject``, ``session``, ``trial`` (the ``beta_index`` within the session,
    -1 for averaged items), ``image_name`` and ``index`` (position in the dataset).

    Parameters
    ----------
    data_dir
        Dataset root (local path, URL or `DataRoot`).
    subject
        One subject id or a list (items of different subjects have different voxel counts; batch
        them with `neurotorch.data.sampling.GroupedBatchSampler`).
    roi, mask, nc_threshold, nc_desc, mask_source
        Voxel selection: ROI grammar (name, category, ``"all"``, list), custom boolean mask,
        threshold on the subject-level noise ceiling ``nc_desc`` (percent), brain mask source.
    features
        Embedding model(s) paired with each trial, or None.
    sessions
        Sessions (for every subject, or a dict per subject); default all.
    image_names
        Keep only trials of these images (e.g. a validation subset of a split's training ids).
    split, pool, variant_id, ood_types, stimuli
        Trial selection: ``"tau/train"``-style split of a pool, OOD types, ``"shared"``/``"unique"``.
    zscore
        Z-score every voxel within its session (statistics of all the session's trials).
    average_repeats
        One item per (subject, image): the mean over its selected presentations.
    modalities
        Any of ``"image"``, ``"captions"``, ``"segmentation"``.
    image_transform
        Callable applied to each decoded PIL image (default: ``(C, H, W)`` uint8 tensor).
    transform
        Callable applied to each item dict (after everything else).
    dtype
        Storage dtype of the prepared store (``"float32"`` or ``"float16"``); items are float32.
    cache_dir
        Folder of the prepared store (default ``NEUROTORCH_CACHE``).
    storage_options
        fsspec options for a URL ``data_dir``.
    nan_policy
        Non-finite betas: ``"raise"`` (default), ``"zero"`` or ``"keep"`` (see `build_store`).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | DataRoot | None,
        subject: str | Sequence[str] = "sub-01",
        roi: RoiQuery | None = None,
        features: str | Sequence[str] | None = "CLIP",
        sessions: Sequence[str] | dict[str, Sequence[str]] | None = None,
        image_names: Iterable[str] | None = None,
        *,
        split: str | None = None,
        pool: str = SHARED_POOL,
        variant_id: int = 0,
        ood_types: str | Sequence[str] | None = None,
        stimuli: str | None = None,
        mask: np.ndarray | None = None,
        nc_threshold: float | None = None,
        nc_desc: str = DEFAULT_NC_DESC,
        mask_source: str = "anatomical",
        zscore: bool = False,
        average_repeats: bool = False,
        modalities: Sequence[str] = (),
        image_transform: Callable[[Any], Any] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        dtype: str = "float32",
        cache_dir: str | os.PathLike | None = None,
        storage_options: dict | None = None,
        nan_policy: str = DEFAULT_NAN_POLICY,
    ):
        self.root = resolve_root(data_dir, storage_options)
        self.subjects = as_subject_list(subject)
        self.subject = self.subjects[0] if len(self.subjects) == 1 else self.subjects
        self.roi, self.features = roi, features
        self.zscore, self.average_repeats, self.transform = zscore, average_repeats, transform
        trials = select_trials(
            self.root, self.subjects, sessions, split=split, pool=pool, variant_id=variant_id,
            ood_types=ood_types, stimuli=stimuli, image_names=image_names,
        )  # fmt: skip
        self.stores: dict[str, PreparedStore] = {}
        for subj in self.subjects:
            subj_sessions = sorted(set(trials.loc[trials["subject"] == subj, "session"]))
            self.stores[subj] = build_store(
                self.root, subj, subj_sessions, roi=roi, mask=mask, nc_threshold=nc_threshold,
                nc_desc=nc_desc, mask_source=mask_source, dtype=dtype, cache_dir=cache_dir,
                nan_policy=nan_policy,
            )  # fmt: skip
        self._session_stores = [
            (subj, ses) for subj, store in self.stores.items() for ses in store.sessions
        ]
        store_id = {key: i for i, key in enumerate(self._session_stores)}
        trials["store"] = [
            store_id[k] for k in zip(trials["subject"], trials["session"], strict=True)
        ]
        trials["label"] = trials["image_name"]  # laion_fmri's name of the join key
        self.trials = trials
        self.items, groups = self._group(trials)
        self._item_ptr = np.concatenate([[0], np.cumsum([len(g) for g in groups])]).astype(np.int64)
        flat = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
        self._read_store = trials["store"].to_numpy(np.int64)[flat]
        self._read_row = trials["trial"].to_numpy(np.int64)[flat]
        self._item_subject = (
            self.items["subject"].map({s: i for i, s in enumerate(self.subjects)}).to_numpy()
        )
        self._columns = {key: self.items[key].to_numpy() for key in self.items.columns}
        self.pairing = StimulusPairing(
            self.root, self.items["image_name"].tolist(), features, modalities, image_transform
        )
        self._arrays: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] | None = None
        self._pid: int | None = None

    @classmethod
    def from_subject(cls, subject: Subject, **kwargs: Any) -> BetasDataset:
        """The trials of a `neurotorch.fmri.Subject` (what laion_fmri's ``to_torch_dataset`` is
        for); ``kwargs`` go to the constructor."""
        return cls(subject.root, subject.subject_id, **kwargs)

    def _group(self, trials: pd.DataFrame) -> tuple[pd.DataFrame, list[np.ndarray]]:
        """Item table and, per item, the trial-table rows it averages (one row without averaging)."""
        if not self.average_repeats:
            items = trials[["subject", "session", "trial", "image_name"]].copy()
            return items.reset_index(drop=True), [np.array([i]) for i in range(len(trials))]
        grouped = trials.groupby(["subject", "image_name"], sort=False)
        groups = [np.asarray(rows, dtype=np.int64) for rows in grouped.indices.values()]
        keys = list(grouped.indices.keys())
        items = pd.DataFrame(
            {
                "subject": [k[0] for k in keys],
                "session": [
                    ",".join(dict.fromkeys(trials["session"].to_numpy()[g])) for g in groups
                ],
                "trial": -1,
                "image_name": [k[1] for k in keys],
                "n_repeats": [len(g) for g in groups],
            }
        )
        return items, groups

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None, "_pid": None}

    @property
    def n_voxels(self) -> int | dict[str, int]:
        """Voxels per item (a dict per subject when they differ)."""
        counts = {s: store.n_voxels for s, store in self.stores.items()}
        return next(iter(counts.values())) if len(set(counts.values())) == 1 else counts

    @property
    def batch_groups(self) -> np.ndarray:
        """The subject of every item: a batch holds one subject's items (their voxel counts differ)."""
        return self._columns["subject"]

    def voxel_mask(self, subject: str | None = None) -> np.ndarray:
        """The 3-D selection that defines the voxel axis of ``subject`` (default: the only one)."""
        return self.stores[subject or self.subjects[0]].voxel_mask

    def _session_arrays(self) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """(memmap, mean, std) per prepared session, opened once per process."""
        if self._arrays is None or self._pid != os.getpid():
            arrays = []
            for subj, ses in self._session_stores:
                files: SessionStore = self.stores[subj].session(ses)
                mean, std = files.stats() if self.zscore else (None, None)
                if std is not None:
                    std = np.where(std > 0, std, 1).astype(np.float32)
                arrays.append((files.open_betas(), mean, std))
            self._arrays, self._pid = arrays, os.getpid()
        return self._arrays

    def read_betas(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """Betas of items, float32: one array per subject in the batch (in subject order), rows in
        the order of ``indices`` restricted to that subject.

        Rows are read with one fancy-index read per session, copied straight into the output;
        when ``indices`` are sorted by (session, trial), as `__getitems__` sorts them, no
        reordering copy is needed.
        """
        indices = np.asarray(indices, dtype=np.int64)
        subject_of_item = self._item_subject[indices]
        return [
            self._read_items(indices[subject_of_item == s], s) for s in np.unique(subject_of_item)
        ]

    def _read_items(self, indices: np.ndarray, subject: int) -> np.ndarray:
        starts, stops = self._item_ptr[indices], self._item_ptr[indices + 1]
        counts = stops - starts
        reads = np.repeat(stops - counts.cumsum(), counts) + np.arange(counts.sum())
        stores, rows = self._read_store[reads], self._read_row[reads]
        order = np.lexsort((rows, stores))
        in_order = bool(np.all(order[1:] > order[:-1]))
        if not in_order:
            stores, rows = stores[order], rows[order]
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(stores)) + 1, [len(stores)]])
        arrays = self._session_arrays()
        blocks = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            betas, mean, std = arrays[stores[a]]
            block = np.asarray(betas)[rows[a:b]].astype(np.float32, copy=False)
            if mean is not None:
                block -= mean
                block /= std
            blocks.append(block)
        n_voxels = self.stores[self.subjects[subject]].n_voxels
        values = (
            blocks[0]
            if len(blocks) == 1
            else np.concatenate(blocks)
            if blocks
            else np.empty((0, n_voxels), np.float32)
        )
        if not in_order:
            values[order] = values.copy()
        if (counts != 1).any():
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
            values = np.add.reduceat(values, offsets, axis=0) / counts[:, None].astype(np.float32)
        return values

    def __getitems__(self, indices: Sequence[int]) -> ItemBatch | list[dict[str, Any]]:
        """A batch of items in the order asked for, read with one vectorised read per session.

        The store is read in (subject, session, trial) order; the ``index`` entry gives each
        item's position in the dataset.
        """
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"Index out of range for a dataset of {len(self)} items.")
        indices = np.where(indices < 0, indices + len(self), indices)
        first = self._item_ptr[indices]
        read_order = np.lexsort(
            (self._read_row[first], self._read_store[first], self._item_subject[indices])
        )
        per_subject = self.read_betas(indices[read_order])
        asked_order = np.argsort(read_order)
        if len(per_subject) == 1:
            in_order = bool((np.diff(read_order) > 0).all())  # no copy when asked in read order
            rows = per_subject[0] if in_order else per_subject[0][asked_order]
            betas: Any = torch.from_numpy(rows)
        else:
            rows = [row for array in per_subject for row in array]
            betas = [torch.from_numpy(rows[k]) for k in asked_order]
        columns = self._columns
        data: dict[str, Any] = {"betas": betas}
        data.update(self.pairing.batch(columns["image_name"][indices]))
        for key in ("image_name", "subject", "session"):
            data[key] = columns[key][indices].tolist()
        for key in ("trial", "n_repeats"):
            if key in columns:
                data[key] = torch.from_numpy(columns[key][indices])
        data["index"] = torch.from_numpy(indices)
        batch = ItemBatch(data, len(indices))
        if self.transform is not None:
            return [self.transform(batch[k]) for k in range(len(batch))]
        return batch

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.__getitems__([int(index)])
        return item[0]
