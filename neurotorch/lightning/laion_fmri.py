"""`LaionFMRIDataModule`: LAION-fMRI trials with the bundled splits, for Lightning.

Splits are applied by the trials' stimulus label; a validation set of images is carved
deterministically (by seed) from the training images (`neurotorch.data.partition.carve`), so no
image is in two parts. ``data_dir="synthetic"`` generates the synthetic dataset on first use.

Map-style (default) serves `BetasDataset` from the prepared store: ``prepare_data`` (one process
per node under DDP) builds the store, ``setup`` (every rank) opens it. ``streaming=True`` serves
`BetasStream` straight from the ``.nii.gz`` files. Loaders, epochs, resume and ``predict`` come
from `neurotorch.lightning.base.NeurotorchDataModule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from neurotorch.data.fmri.betas import BetasDataset, as_subject_list
from neurotorch.data.fmri.store import build_store
from neurotorch.data.fmri.stream import BetasStream
from neurotorch.data.partition import carve, check_fractions
from neurotorch.errors import ParameterError
from neurotorch.fmri.rois import RoiQuery
from neurotorch.fmri.splits import get_train_test_ids
from neurotorch.fmri.voxel_table import voxel_table
from neurotorch.io.integrity import check_verify_mode
from neurotorch.io.storage import DataRoot
from neurotorch.lightning.base import NeurotorchDataModule
from neurotorch.synthetic.laion_fmri import default_root, make_laion_fmri

SYNTHETIC = "synthetic"


class LaionFMRIDataModule(NeurotorchDataModule):
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
    streaming
        ``False``: the prepared store (random access); ``True``: sequential ``.nii.gz`` reads.
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
        streaming: bool = False,
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
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, seed=seed, streaming=streaming
        )
        check_verify_mode(verify)
        check_fractions(val_fraction)
        if int(shuffle_buffer) != shuffle_buffer or shuffle_buffer < 0:
            raise ParameterError(f"shuffle_buffer must be an integer >= 0, got {shuffle_buffer!r}.")
        self.save_hyperparameters()
        self.voxel_table = None
        self._ids: dict[str, list[str]] | None = None

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
        if not hp.streaming:
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
        if hp.streaming:
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

    def image_ids(self) -> dict[str, list[str]]:
        """The image names of each part: the split's test images, and its training images
        carved into train and val."""
        if self._ids is None:
            hp = self.hparams
            train_ids, test_ids = get_train_test_ids(
                hp.split, hp.pool, variant_id=hp.variant_id, ood_types=hp.ood_types,
                data_dir=self.root,
            )  # fmt: skip
            train_ids, val_ids = carve(train_ids, hp.val_fraction, hp.seed)
            self._ids = {"train": train_ids, "val": val_ids, "test": list(test_ids)}
        return self._ids

    def build_dataset(self, part: str) -> Dataset | None:
        ids = self.image_ids()[part]
        return self._dataset(ids, train=part == "train") if ids else None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        hp, root = self.hparams, self.root
        subjects = self.subjects
        if len(subjects) == 1:
            self.voxel_table = voxel_table(root, subjects[0], hp.roi)
        else:
            self.voxel_table = {s: voxel_table(root, s, hp.roi) for s in subjects}

    def describe_source(self) -> str:
        hp = self.hparams
        subjects = ",".join(self.subjects)
        return f"{hp.data_dir} {subjects}, split {hp.split} of pool {hp.pool}"


__all__ = ["LaionFMRIDataModule"]
