"""`LaionFMRIDataModule`: LAION-fMRI trials with the bundled splits, for Lightning.

The module serves the parts of one split: its trial selection names the split (``"random_0"``,
without a part), and every part is the same selection with its part set (``train``, ``val``,
``test``): the datasets select their own trials, so no image is in two parts and the DataModule
never handles image names itself. The validation part is the split's ``val_fraction`` of
training images (`neurotorch.data.partition.carve`, seeded by ``val_seed``).

Map-style (default) serves `BetasDataset` from the prepared store: ``prepare_data`` (one process
per node under DDP) builds the store, ``setup`` (every rank) opens it. ``streaming=True`` serves
`BetasStream` straight from the ``.nii.gz`` files. Loaders, epochs, resume and ``predict`` come
from `neurotorch.lightning.base.NeurotorchDataModule`. What a model needs before ``fit`` (voxel
counts per subject, embedding sizes, the voxel table) is read from the voxel selection and the
stimulus files, without building a dataset.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from typing import Any, cast

import pandas as pd
from torch.utils.data import Dataset

from neurotorch._docs import fill_doc
from neurotorch._options import as_settings
from neurotorch.data.fmri.betas import BetasDataset, Settings, as_subject_list
from neurotorch.data.fmri.pairing import Feature, feature_dims, plain_features
from neurotorch.data.fmri.settings import (
    ReadSettings,
    SyntheticOptions,
    laion_root,
    training_shuffle_buffer,
)
from neurotorch.data.fmri.store import build_store
from neurotorch.data.fmri.stream import BetasStream, check_one_subject_per_batch
from neurotorch.data.fmri.trials import Part, TrialSelection
from neurotorch.errors import ParameterError
from neurotorch.features import FeatureSpec
from neurotorch.fmri.voxel_selection import VoxelSelection, voxel_selection
from neurotorch.fmri.voxel_table import voxel_table
from neurotorch.io.storage import DataRoot
from neurotorch.lightning.base import NeurotorchDataModule

DEFAULT_TRIALS = TrialSelection(split="random_0", val_fraction=0.1)


@fill_doc
class LaionFMRIDataModule(NeurotorchDataModule):
    """Train/val/test DataLoaders of one or more subjects' trials, split by stimulus.

    Parameters
    ----------
    %(data_dir)s
    %(fmri_subject)s
    trials
        The split and the trials it serves: a `neurotorch.data.fmri.TrialSelection` or a dict of
        its fields, with a ``split`` and no ``part`` (the module serves every part); default
        ``{"split": "random_0", "val_fraction": 0.1}``. ``val_fraction`` of the split's training
        images form the validation part (0: no validation part).
    %(voxels)s
    %(fmri_features)s
    %(read)s
    %(streaming)s
    %(batch_size)s
    %(num_workers)s
    %(seed)s
    %(storage_options)s
    %(synthetic)s
    %(predict_part)s
    """

    def __init__(
        self,
        data_dir: str = "synthetic",
        subject: str | list[str] = "sub-01",
        *,
        trials: TrialSelection | None = None,
        voxels: VoxelSelection | None = None,
        features: Feature | FeatureSpec | list[Feature | FeatureSpec] | None = "CLIP",
        read: ReadSettings | None = None,
        streaming: bool = False,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        storage_options: dict | None = None,
        synthetic: SyntheticOptions | None = None,
        predict_part: str = "test",
    ):
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            streaming=streaming,
            predict_part=predict_part,
        )
        self.subjects = as_subject_list(subject)
        self.trial_selection = self._checked_trials(trials)
        self.voxel_selection = as_settings(VoxelSelection, voxels, "voxels")
        self.read = as_settings(ReadSettings, read, "read")
        if streaming:
            self.read.check_streamable()
            check_one_subject_per_batch(self.subjects, self.batch_size)
        self.synthetic = as_settings(SyntheticOptions, synthetic, "synthetic")
        self.features = features
        # hparams (and checkpoints) hold plain values, never the settings objects: the arguments
        # are rebound to dicts, which save_hyperparameters reads from this frame
        features = plain_features(features)
        trials = self.trial_selection.to_dict()  # type: ignore[assignment]
        voxels = self.voxel_selection.to_dict()  # type: ignore[assignment]
        read = self.read.to_dict()  # type: ignore[assignment]
        synthetic = self.synthetic.to_dict()  # type: ignore[assignment]
        self.save_hyperparameters()

    @staticmethod
    def _checked_trials(trials: TrialSelection | Settings) -> TrialSelection:
        selection = (
            DEFAULT_TRIALS if trials is None else as_settings(TrialSelection, trials, "trials")
        )
        if selection.split is None:
            raise ParameterError(
                "trials needs a split (e.g. {'split': 'random_0'}): the DataModule serves its "
                "train, val and test parts."
            )
        if selection.part != "all":
            raise ParameterError(
                f"trials has part={selection.part!r}, but the DataModule serves every part of the "
                "split; leave part out (use BetasDataset for one part)."
            )
        return selection

    @cached_property
    def root(self) -> DataRoot:
        """The dataset root (the synthetic dataset is written here on first use)."""
        return laion_root(
            self.hparams.data_dir,
            self.hparams.storage_options,
            synthetic=self.synthetic,
            seed=self.hparams.seed,
        )

    def prepare_data(self) -> None:
        """Write the synthetic dataset if asked for, and build the prepared store (map mode)."""
        root = self.root
        if self.streaming:
            return
        for subject in self.subjects:
            build_store(
                root,
                subject,
                self.trial_selection.sessions_of(subject),
                voxels=self.voxel_selection,
                dtype=self.read.dtype,
                nan_policy=self.read.nan_policy,
                cache_dir=self.read.cache_dir,
            )

    def build_dataset(self, part: str) -> Dataset | None:
        selection = self.trial_selection
        if part == "val" and selection.val_fraction == 0:
            return None
        settings: dict[str, Any] = {
            "trials": selection.with_part(cast("Part", part)),
            "voxels": self.voxel_selection,
            "features": self.features,
        }
        if not self.streaming:
            return BetasDataset(self.root, self.subjects, read=self.read, **settings)
        buffer = self.read.shuffle_buffer
        if part != "train":
            buffer = 0
        elif buffer is None:
            buffer = training_shuffle_buffer(max(self.n_voxels.values()))
        read = replace(self.read, shuffle_buffer=buffer)
        return BetasStream(self.root, self.subjects, read=read, seed=self.seed, **settings)

    # -- what a model needs before fit ------------------------------------------------------
    @cached_property
    def n_voxels(self) -> dict[str, int]:
        """Voxels per item of each subject (the length of ``betas``)."""
        return {
            s: int(voxel_selection(self.root, s, self.voxel_selection).sum()) for s in self.subjects
        }

    @cached_property
    def feature_dims(self) -> dict[str, int]:
        """Length of each embedding an item carries, by item key (``{"embedding": 1024}``)."""
        return feature_dims(self.root, self.features)

    @cached_property
    def voxel_table(self) -> pd.DataFrame | dict[str, pd.DataFrame]:
        """One row per voxel of the items (`neurotorch.fmri.voxel_table.voxel_table`): a table
        for one subject, a dict of tables for several."""
        tables = {s: voxel_table(self.root, s, self.voxel_selection) for s in self.subjects}
        return tables[self.subjects[0]] if len(self.subjects) == 1 else tables

    def describe_source(self) -> str:
        return (
            f"{self.hparams.data_dir} {','.join(self.subjects)}, "
            f"{self.trial_selection.describe()}, {self.voxel_selection.describe()}"
        )


__all__ = ["LaionFMRIDataModule"]
