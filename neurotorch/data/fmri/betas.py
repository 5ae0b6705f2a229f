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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from neurotorch._docs import fill_doc
from neurotorch._options import as_names, as_settings
from neurotorch.data.collate import ItemBatch, batch_tensor, collate_items
from neurotorch.data.fmri.pairing import Features, StimulusPairing
from neurotorch.data.fmri.settings import ReadSettings, laion_root
from neurotorch.data.fmri.store import PreparedStore, SessionStore, build_store
from neurotorch.data.fmri.trials import TrialSelection, check_unique, select_trials
from neurotorch.data.loader import StatefulLoader
from neurotorch.data.sampling import GroupedBatchSampler
from neurotorch.errors import MixedBatchError
from neurotorch.fmri import layout
from neurotorch.fmri.subject import Subject
from neurotorch.fmri.voxel_selection import VoxelSelection
from neurotorch.io.storage import DataRoot

Settings = Mapping[str, Any] | None


def as_subject_list(subject: str | Sequence[str]) -> list[str]:
    """One subject id or several, normalised (``"01"`` → ``"sub-01"``); a string is one subject.

    Raises
    ------
    ParameterError
        No subject, or one subject twice (its trials would be served twice per epoch).
    """
    ids = [layout.subject_id(s) for s in as_names("subject", subject)]
    check_unique(ids, "subject")
    return ids


def describe_dataset(dataset: Any, items: str, *, details: str) -> str:
    """The ``repr`` of a `BetasDataset` or `BetasStream`: what, where, subjects, ``items`` (how
    many), voxels, selection, features, then ``details``."""
    counts = {s: int(mask.sum()) for s, mask in dataset.voxel_masks().items()}
    voxels = (
        f"{next(iter(counts.values()))} voxels"
        if len(set(counts.values())) == 1
        else "voxels " + ", ".join(f"{s}: {n}" for s, n in counts.items())
    )
    features = dataset.pairing.features + list(dataset.pairing.modalities)
    return (
        f"{type(dataset).__name__}({', '.join(dataset.subjects)} of {dataset.root.url}; "
        f"{items}; {voxels} ({dataset.voxel_selection.describe()}); "
        f"{dataset.trial_selection.describe()}; features {', '.join(features) or 'none'}; "
        f"{details})"
    )


#: stored rows at least this long are copied one by one (one copy each, no gather buffer)
_ROW_BY_ROW_BYTES = 1 << 16


def _copy_rows(
    out: np.ndarray,
    betas: np.ndarray,
    *,
    targets: np.ndarray,
    rows: np.ndarray,
    moments: tuple[np.ndarray, np.ndarray] | None,
    add: bool,
) -> None:
    """``out[targets[k]] = betas[rows[k]]`` (z-scored with ``moments`` = (mean, std); added
    instead of assigned when ``add``).

    Long rows (a whole brain) are copied one by one in storage order, each straight into its
    batch row; short rows (an ROI) are gathered with one vectorised read and scattered, where
    the per-row overhead would cost more than the extra copy.
    """
    if add or betas.shape[1] * betas.itemsize >= _ROW_BY_ROW_BYTES:
        scratch = np.empty(betas.shape[1], np.float32) if add else None
        for k in np.argsort(rows, kind="stable"):
            target = out[targets[k]]
            value = target if scratch is None else scratch
            np.copyto(value, betas[rows[k]])
            if moments is not None:
                value -= moments[0]
                value /= moments[1]
            if scratch is not None:
                target += value
        return
    block = betas[rows].astype(np.float32, copy=False)
    if moments is not None:
        block -= moments[0]
        block /= moments[1]
    out[targets] = block


@fill_doc
class BetasDataset(Dataset):
    """Trials (or images, with ``average_repeats``) of one or more subjects, as dict items.

    Each item holds ``betas`` (float32 ``(n_voxels,)``), what ``features`` asks for
    (``embedding``, ``image``, ...), and the identifiers ``subject``, ``session``, ``trial``
    (the ``beta_index`` within the session, -1 for averaged items), ``image_name`` and ``index``
    (position in the dataset).

    A batch holds one subject's items (their voxel counts differ): a plain ``DataLoader`` works
    for one subject; for several, load with `loader` (or pass `batch_sampler` to a
    ``DataLoader``). A batch that mixes subjects raises `neurotorch.errors.MixedBatchError`.

    Parameters
    ----------
    %(data_dir)s
    %(fmri_subject)s
    %(trials)s
    %(voxels)s
    %(fmri_features)s
    %(read)s
    %(image_transform)s
    %(fmri_transform)s
    %(storage_options)s
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | DataRoot | None,
        subject: str | Sequence[str] = "sub-01",
        *,
        trials: TrialSelection | Settings = None,
        voxels: VoxelSelection | Settings = None,
        features: Features = "CLIP",
        read: ReadSettings | Settings = None,
        image_transform: Callable[[Any], Any] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        storage_options: dict | None = None,
    ):
        self.root = laion_root(data_dir, storage_options)
        self.subjects = as_subject_list(subject)
        self.trial_selection = as_settings(TrialSelection, trials, "trials")
        self.voxel_selection = as_settings(VoxelSelection, voxels, "voxels")
        self.read = as_settings(ReadSettings, read, "read")
        self.transform = transform
        table = select_trials(self.root, self.subjects, self.trial_selection)
        self.stores: dict[str, PreparedStore] = {}
        for subj in self.subjects:
            self.stores[subj] = build_store(
                self.root,
                subj,
                sorted(set(table.loc[table["subject"] == subj, "session"])),
                voxels=self.voxel_selection,
                dtype=self.read.dtype,
                nan_policy=self.read.nan_policy,
                cache_dir=self.read.cache_dir,
            )
        self._session_stores = [
            (subj, ses) for subj, store in self.stores.items() for ses in store.sessions
        ]
        store_id = {key: i for i, key in enumerate(self._session_stores)}
        table["store"] = [store_id[k] for k in zip(table["subject"], table["session"], strict=True)]
        table["label"] = table["image_name"]  # laion_fmri's name of the join key
        self.trials = table
        self.items, groups = self._group(table)
        self._item_ptr = np.concatenate([[0], np.cumsum([len(g) for g in groups])]).astype(np.int64)
        flat = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
        self._read_store = table["store"].to_numpy(np.int64)[flat]
        self._read_row = table["trial"].to_numpy(np.int64)[flat]
        self._item_subject = (
            self.items["subject"].map({s: i for i, s in enumerate(self.subjects)}).to_numpy()
        )
        self._columns = {key: self.items[key].to_numpy() for key in self.items.columns}
        self.pairing = StimulusPairing(
            self.root, self.items["image_name"].tolist(), features, image_transform=image_transform
        )
        self._arrays: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] | None = None
        self._pid: int | None = None

    def __repr__(self) -> str:
        unit = "images (repeats averaged)" if self.read.average_repeats else "trials"
        store = f"{self.read.dtype} store" + (", z-scored" if self.read.zscore else "")
        return describe_dataset(self, f"{len(self)} {unit}", details=store)

    @classmethod
    def from_subject(cls, subject: Subject, **kwargs: Any) -> BetasDataset:
        """The trials of a `neurotorch.fmri.Subject` (what laion_fmri's ``to_torch_dataset`` is
        for); ``kwargs`` go to the constructor."""
        return cls(subject.root, subject.subject_id, **kwargs)

    def batch_sampler(
        self, batch_size: int, *, shuffle: bool = False, drop_last: bool = False, seed: int = 0
    ) -> GroupedBatchSampler:
        """Batches of one subject each, reshuffled every epoch when ``shuffle`` (by itself, or
        at the epoch given to its ``set_epoch``): ``DataLoader(dataset,
        batch_sampler=dataset.batch_sampler(32, shuffle=True), collate_fn=collate_items)``."""
        return GroupedBatchSampler.for_dataset(
            self, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed
        )

    def loader(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        **loader_options: Any,
    ) -> StatefulLoader:
        """A ``DataLoader`` of one-subject batches (`batch_sampler`), resumable mid-epoch
        (torchdata's ``StatefulDataLoader``); ``loader_options`` (``num_workers``,
        ``persistent_workers``, ...) go to it."""
        sampler = self.batch_sampler(batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
        return StatefulLoader(
            self, batch_sampler=sampler, collate_fn=collate_items, **loader_options
        )

    def _group(self, trials: pd.DataFrame) -> tuple[pd.DataFrame, list[np.ndarray]]:
        """Item table and, per item, the trial-table rows it averages (one row without averaging)."""
        if not self.read.average_repeats:
            items = trials[["subject", "session", "trial", "image_name"]].copy()
            return items.reset_index(drop=True), [np.array([i]) for i in range(len(trials))]
        grouped = trials.groupby(["subject", "image_name"], sort=False)
        groups = [np.asarray(rows, dtype=np.int64) for rows in grouped.indices.values()]
        keys = cast(list[tuple[str, str]], list(grouped.indices.keys()))
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

    def voxel_masks(self) -> dict[str, np.ndarray]:
        """The 3-D selection of every subject (its C-order flattening is the voxel axis)."""
        return {s: store.voxel_mask for s, store in self.stores.items()}

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
                mean, std = files.stats() if self.read.zscore else (None, None)
                if std is not None:
                    std = np.where(std > 0, std, 1).astype(np.float32)
                arrays.append((files.open_betas(), mean, std))
            self._arrays, self._pid = arrays, os.getpid()
        return self._arrays

    def _read_items(self, indices: np.ndarray, subject: int) -> torch.Tensor:
        """The betas of ``indices`` (one subject's items), in that order: each stored row is
        copied once, straight into its place in the batch (see `_copy_rows`)."""
        starts, stops = self._item_ptr[indices], self._item_ptr[indices + 1]
        counts = stops - starts
        reads = np.repeat(stops - counts.cumsum(), counts) + np.arange(counts.sum())
        positions = np.repeat(np.arange(len(indices)), counts)  # batch row of every read
        stores, rows = self._read_store[reads], self._read_row[reads]
        n_voxels = self.stores[self.subjects[subject]].n_voxels
        out = batch_tensor((len(indices), n_voxels))
        values = out.numpy()
        averaged = bool((counts != 1).any())
        if averaged:
            values.fill(0)
        arrays = self._session_arrays()
        for store in np.unique(stores):
            reads_here = np.flatnonzero(stores == store)
            betas, mean, std = arrays[store]
            _copy_rows(
                values,
                np.asarray(betas),
                targets=positions[reads_here],
                rows=rows[reads_here],
                moments=None if mean is None else (mean, std),
                add=averaged,
            )
        if averaged:
            values /= counts[:, None].astype(np.float32)
        return out

    def __getitems__(self, indices: Sequence[int]) -> ItemBatch | list[dict[str, Any]]:
        """A batch of one subject's items in the order asked for: every stored row is copied
        once, straight into its place (in shared memory inside a ``DataLoader`` worker, so the
        batch reaches the main process without another copy); the ``index`` entry gives each
        item's position in the dataset.

        Raises
        ------
        MixedBatchError
            The batch mixes subjects (see `loader`).
        """
        rows = np.asarray(indices, dtype=np.int64)
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"Index out of range for a dataset of {len(self)} items.")
        rows = np.where(rows < 0, rows + len(self), rows)
        subjects = np.unique(self._item_subject[rows])
        if len(subjects) > 1:
            raise self._mixed_batch_error(subjects, len(rows))
        subject = int(subjects[0]) if len(subjects) else 0
        columns = self._columns
        data: dict[str, Any] = {"betas": self._read_items(rows, subject)}
        data.update(self.pairing.batch(columns["image_name"][rows]))
        for key in ("image_name", "subject", "session"):
            data[key] = columns[key][rows].tolist()
        for key in ("trial", "n_repeats"):
            if key in columns:
                data[key] = torch.from_numpy(columns[key][rows])
        data["index"] = torch.from_numpy(rows)
        batch = ItemBatch(data, len(rows))
        if self.transform is not None:
            return [self.transform(batch[k]) for k in range(len(batch))]
        return batch

    def _mixed_batch_error(self, subjects: np.ndarray, size: int) -> MixedBatchError:
        named = ", ".join(
            f"{self.subjects[s]} ({self.stores[self.subjects[s]].n_voxels} voxels)"
            for s in subjects
        )
        return MixedBatchError(
            f"A batch of {size} items mixes subjects {named}: their betas cannot be stacked into "
            "one tensor. Load batches of one subject each: dataset.loader(batch_size=32, "
            "shuffle=True, num_workers=2), or DataLoader(dataset, batch_sampler="
            "dataset.batch_sampler(32, shuffle=True), collate_fn=neurotorch.data.collate_items)."
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.__getitems__([int(index)])
        return item[0]
