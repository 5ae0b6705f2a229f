"""`LaionFMRIDataModule`: LAION-fMRI trials with the bundled splits, for Lightning.

Splits are applied by the trials' stimulus label; a validation set of images is carved
deterministically (by seed) from the training images, so no image is in two parts.
``data_dir="synthetic"`` generates the synthetic dataset on first use.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from neurotorch.data.betas import BetasDataset
from neurotorch.fmri.rois import RoiQuery
from neurotorch.fmri.splits import get_train_test_ids
from neurotorch.fmri.voxel_table import voxel_table
from neurotorch.io.storage import DataRoot
from neurotorch.synthetic.laion_fmri import default_root, make_laion_fmri

SYNTHETIC = "synthetic"


def carve_validation(train_ids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split image ids into (train, validation), deterministically for a seed."""
    ids = sorted(train_ids)
    n_val = int(round(fraction * len(ids)))
    chosen = set(np.random.default_rng(seed).permutation(len(ids))[:n_val].tolist())
    return [x for i, x in enumerate(ids) if i not in chosen], [x for i, x in enumerate(ids) if i in chosen]


class LaionFMRIDataModule(L.LightningDataModule):
    """Train/val/test DataLoaders of one subject's trials, split by stimulus.

    Parameters
    ----------
    data_dir
        Dataset root (local path or URL), or ``"synthetic"`` for the built-in synthetic dataset.
    subject, roi, features
        Whose betas, which voxels (ROI grammar) and which embedding model.
    split, pool, variant_id, ood_types
        The split (e.g. ``"random_0"``, ``"cluster_k5_2"``, ``"tau"``, ``"ood"``) of a pool.
    val_fraction
        Fraction of the training images held out for validation (penalty selection).
    synthetic_size, seed
        Size preset and seed of the synthetic dataset; the seed also carves the validation set.
    storage_options
        fsspec options for a URL ``data_dir``.
    """

    def __init__(
        self,
        data_dir: str = SYNTHETIC,
        subject: str = "sub-01",
        roi: RoiQuery | None = None,
        features: str = "CLIP",
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
    ):
        super().__init__()
        self.save_hyperparameters()
        self.voxel_table = None

    @property
    def root(self) -> DataRoot:
        hp = self.hparams
        if hp.data_dir == SYNTHETIC:
            return DataRoot(default_root(hp.synthetic_size, hp.seed))
        return DataRoot(hp.data_dir, hp.storage_options)

    def prepare_data(self) -> None:
        if self.hparams.data_dir == SYNTHETIC:
            make_laion_fmri(size=self.hparams.synthetic_size, seed=self.hparams.seed)

    def setup(self, stage: str | None = None) -> None:
        hp, root = self.hparams, self.root
        train_ids, test_ids = get_train_test_ids(
            hp.split, hp.pool, variant_id=hp.variant_id, ood_types=hp.ood_types, data_dir=root
        )
        train_ids, val_ids = carve_validation(train_ids, hp.val_fraction, hp.seed)

        def part(ids: Sequence[str]) -> BetasDataset:
            return BetasDataset(root, hp.subject, hp.roi, hp.features, image_names=ids)

        self.train_set, self.val_set, self.test_set = part(train_ids), part(val_ids), part(test_ids)
        self.voxel_table = voxel_table(root, hp.subject, hp.roi)

    def _loader(self, dataset: BetasDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


__all__ = ["LaionFMRIDataModule", "carve_validation"]
