"""`LaionFMRIDataModule`: LAION-fMRI trials with the bundled splits, for Lightning.

Splits are applied by the trials' stimulus label; a validation set of images is carved
deterministically (by seed) from the training images, so no image is in two parts.
``data_dir="synthetic"`` generates the synthetic dataset on first use.

Map mode (default) serves `BetasDataset` from the prepared store: ``prepare_data`` (one process
per node under DDP) builds the store, ``setup`` (every rank) opens it, and Lightning shards the
batches with its distributed sampler. Stream mode serves `BetasStream` straight from the
``.nii.gz`` files, sharded across ranks and workers by the stream itself, with mid-epoch resume
through the loader's ``state_dict`` (saved in Lightning checkpoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from neurotorch.data.betas import BetasDataset, as_subject_list
from neurotorch.data.collate import collate_items
from neurotorch.data.loader import StatefulLoader, StreamLoader
from neurotorch.data.sampling import GroupedBatchSampler
from neurotorch.data.store import build_store
from neurotorch.data.stream import BetasStream
from neurotorch.errors import ParameterError
from neurotorch.fmri.rois import RoiQuery
from neurotorch.fmri.splits import get_train_test_ids
from neurotorch.fmri.voxel_table import voxel_table
from neurotorch.io.integrity import check_verify_mode
from neurotorch.io.storage import DataRoot
from neurotorch.synthetic.laion_fmri import default_root, make_laion_fmri

SYNTHETIC = "synthetic"
MODES = ("map", "stream")


def carve_validation(
    train_ids: Sequence[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split image ids into (train, validation), deterministically for a seed."""
    ids = sorted(train_ids)
    n_val = int(round(fraction * len(ids)))
    chosen = set(np.random.default_rng(seed).permutation(len(ids))[:n_val].tolist())
    return [x for i, x in enumerate(ids) if i not in chosen], [
        x for i, x in enumerate(ids) if i in chosen
    ]


class LaionFMRIDataModule(L.LightningDataModule):
    """Train/val/test DataLoaders of one or more subjects' trials, split by stimulus.

    Parameters
    ----------
    data_dir
        Dataset root (local path or URL), or ``"synthetic"`` for the built-in synthetic dataset.
    subject
        Subject id or list of ids (several subjects: each batch holds one subject's trials).
    roi, features
        Which voxels (ROI grammar) and which embedding model(s).
    split, pool, variant_id, ood_types
        The split (``"random_0"``, ``"cluster_k5_2"``, ``"tau"``, ``"ood"``) of a pool
        (``"shared"`` or a subject), its variant, and the OOD types kept in an ``ood`` test set.
    val_fraction
        Fraction of the training images held out for validation (penalty selection); 0 means
        no validation set (`val_dataloader` returns no batches).
    batch_size, num_workers
        DataLoader settings.
    synthetic_size, seed
        Size preset and seed of the synthetic dataset; the seed also carves the validation set and
        seeds the stream's shuffling.
    synthetic_snr
        SNR preset of the synthetic dataset (``"default"`` or ``"realistic"``).
    storage_options
        fsspec options for a URL ``data_dir``.
    mode
        ``"map"`` (prepared store, random access) or ``"stream"`` (sequential ``.nii.gz`` reads).
    sessions, stimuli, nc_threshold, zscore, average_repeats, modalities, dtype
        Passed to `BetasDataset` (``zscore``, ``average_repeats`` and ``dtype`` apply to map mode).
    shuffle_buffer
        Shuffle buffer of the training stream (stream mode).
    cache_dir
        Folder of the prepared store (default ``NEUROTORCH_CACHE``).
    nan_policy
        Non-finite betas: ``"raise"``, ``"zero"`` or ``"keep"``.
    verify
        Stream mode: ``"first-use"`` (default) reads each betas file in full once before serving
        from it, ``"off"`` does not (see `BetasStream`).
    """

    def __init__(
        self,
        data_dir: str = SYNTHETIC,
        subject: str | list[str] = "sub-01",
        roi: RoiQuery | None = None,
        features: str | list[str] = "CLIP",
        split: str = "random_0",
        pool: str = "shared",
        variant_id: int = 0,
        ood_types: list[str] | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 256,
        num_workers: int = 0,
        synthetic_size: str = "small",
        seed: int = 0,
        storage_options: dict | None = None,
        mode: str = "map",
        sessions: list[str] | None = None,
        stimuli: str | None = None,
        nc_threshold: float | None = None,
        zscore: bool = False,
        average_repeats: bool = False,
        modalities: list[str] | None = None,
        dtype: str = "float32",
        shuffle_buffer: int = 1024,
        cache_dir: str | None = None,
        nan_policy: str = "raise",
        verify: str = "first-use",
        synthetic_snr: str = "default",
    ):
        super().__init__()
        if mode not in MODES:
            raise ParameterError(f"mode must be one of {MODES}, got {mode!r}.")
        check_verify_mode(verify)
        if not 0 <= val_fraction < 1:
            raise ParameterError(
                f"val_fraction must lie in [0, 1), got {val_fraction}; the validation images "
                "are carved out of the training images (0: no validation set)."
            )
        for name, value, least in (
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("shuffle_buffer", shuffle_buffer, 0),
        ):
            if int(value) != value or value < least:
                raise ParameterError(f"{name} must be an integer >= {least}, got {value!r}.")
        self.save_hyperparameters()
        self.voxel_table = None

    @property
    def root(self) -> DataRoot:
        hp = self.hparams
        if hp.data_dir == SYNTHETIC:
            return DataRoot(default_root(hp.synthetic_size, hp.seed, hp.synthetic_snr))
        return DataRoot(hp.data_dir, hp.storage_options)

    @property
    def subjects(self) -> list[str]:
        return as_subject_list(self.hparams.subject)

    def _selection(self) -> dict[str, Any]:
        hp = self.hparams
        return {"roi": hp.roi, "nc_threshold": hp.nc_threshold, "nan_policy": hp.nan_policy}

    def prepare_data(self) -> None:
        """Write the synthetic dataset if asked for, and build the prepared store (map mode)."""
        hp = self.hparams
        if hp.data_dir == SYNTHETIC:
            make_laion_fmri(size=hp.synthetic_size, seed=hp.seed, snr=hp.synthetic_snr)
        if hp.mode == "map":
            for subject in self.subjects:
                build_store(
                    self.root,
                    subject,
                    hp.sessions,
                    dtype=hp.dtype,
                    cache_dir=hp.cache_dir,
                    **self._selection(),
                )

    def _dataset(self, ids: Sequence[str], train: bool) -> Dataset:
        hp = self.hparams
        common: dict[str, Any] = dict(
            sessions=hp.sessions, image_names=ids, stimuli=hp.stimuli, modalities=hp.modalities or (),
            **self._selection(),
        )  # fmt: skip
        if hp.mode == "stream":
            shuffle = hp.shuffle_buffer if train else 0
            return BetasStream(
                self.root,
                hp.subject,
                features=hp.features,
                shuffle_buffer=shuffle,
                seed=hp.seed,
                verify=hp.verify,
                **common,
            )
        return BetasDataset(
            self.root, hp.subject, features=hp.features, zscore=hp.zscore, average_repeats=hp.average_repeats,
            dtype=hp.dtype, cache_dir=hp.cache_dir, **common,
        )  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        hp, root = self.hparams, self.root
        train_ids, test_ids = get_train_test_ids(
            hp.split, hp.pool, variant_id=hp.variant_id, ood_types=hp.ood_types, data_dir=root
        )
        train_ids, val_ids = carve_validation(train_ids, hp.val_fraction, hp.seed)
        self.train_set = self._dataset(train_ids, train=True)
        self.val_set = self._dataset(val_ids, train=False) if val_ids else None
        self.test_set = self._dataset(test_ids, train=False)
        subjects = self.subjects
        if len(subjects) == 1:
            self.voxel_table = voxel_table(root, subjects[0], hp.roi)
        else:
            self.voxel_table = {s: voxel_table(root, s, hp.roi) for s in subjects}

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        hp = self.hparams
        if isinstance(dataset, BetasStream):
            return StreamLoader(
                dataset, hp.batch_size, num_workers=hp.num_workers, advance_epoch=shuffle
            )
        # One sampler for one subject or several: seeded batches of one subject each, sharded
        # whole over DDP ranks by `neurotorch.data.sharding` (equal counts, documented padding)
        sampler = GroupedBatchSampler.for_dataset(
            dataset, hp.batch_size, shuffle=shuffle, seed=hp.seed
        )
        return StatefulLoader(
            dataset, batch_sampler=sampler, collate_fn=collate_items,
            num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_set is None else self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


__all__ = ["LaionFMRIDataModule", "carve_validation"]
