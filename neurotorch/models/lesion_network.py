"""`LesionNetworkModel`: a low-rank linear map from a lesion mask to its lesion network map.

Each training step draws random seed voxels, computes their network maps (mean Fisher z of the
seed correlations over the subjects of the batch, as `neurotorch.connectome.network_map` does) and
fits ``map = (mask / |mask|) @ U @ V + b``. Once trained, the model predicts the network map of any
lesion mask without a pass over the connectome.
"""

from __future__ import annotations

import lightning as L
import torch

from neurotorch.connectome.lnm import SeedWeights, fisher_z_, seed_correlations


class LesionNetworkModel(L.LightningModule):
    """Predict lesion network maps (mean Fisher z per voxel) from lesion masks.

    Parameters
    ----------
    rank
        Rank of the voxel-to-voxel map.
    n_seeds
        Random single-voxel seeds per training step.
    lr
        Adam learning rate.
    n_voxels
        Voxels (or parcels) of the connectome; ``None`` takes it from the DataModule's
        ``n_features`` in ``setup``.
    seed
        Seed of the validation/test seed voxels.
    """

    def __init__(
        self,
        rank: int = 16,
        n_seeds: int = 64,
        lr: float = 0.02,
        n_voxels: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.encoder: torch.nn.Parameter | None = None
        self.decoder: torch.nn.Parameter | None = None
        self.bias: torch.nn.Parameter | None = None
        if n_voxels is not None:
            self._build(n_voxels)

    def _build(self, n_voxels: int) -> None:
        generator = torch.Generator().manual_seed(self.hparams.seed)
        rank = self.hparams.rank
        self.hparams.n_voxels = n_voxels
        self.encoder = torch.nn.Parameter(torch.randn(n_voxels, rank, generator=generator) * 0.1)
        self.decoder = torch.nn.Parameter(torch.randn(rank, n_voxels, generator=generator) * 0.1)
        self.bias = torch.nn.Parameter(torch.zeros(n_voxels))

    def setup(self, stage: str) -> None:
        if self.encoder is None:
            self._build(int(self.trainer.datamodule.n_features))

    def forward(self, lesion_masks: torch.Tensor) -> torch.Tensor:
        """(n_lesions, n_voxels) masks -> (n_lesions, n_voxels) predicted mean Fisher z."""
        weights = lesion_masks / lesion_masks.sum(dim=1, keepdim=True).clamp(min=1)
        return weights @ self.encoder @ self.decoder + self.bias

    def _seed_maps(self, timeseries: torch.Tensor, voxels: torch.Tensor) -> torch.Tensor:
        """Mean over the batch's subjects of the Fisher z maps of single-voxel seeds."""
        seeds = SeedWeights(voxels, torch.eye(len(voxels), device=timeseries.device))
        z = [fisher_z_(seed_correlations(subject, seeds)) for subject in timeseries]
        return torch.stack(z).mean(dim=0)

    def _loss(self, batch: dict, voxels: torch.Tensor) -> torch.Tensor:
        target = self._seed_maps(batch["timeseries"].float(), voxels)
        masks = torch.zeros_like(target)
        masks[torch.arange(len(voxels)), voxels] = 1.0
        keep = 1.0 - masks  # a seed's own voxel is trivially correlated; leave it out
        return (((self(masks) - target) ** 2) * keep).sum() / keep.sum()

    def _voxels(self, generator: torch.Generator | None = None) -> torch.Tensor:
        n_voxels = self.hparams.n_voxels
        return torch.randperm(n_voxels, generator=generator)[: self.hparams.n_seeds].to(self.device)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, self._voxels())
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["timeseries"]))
        return loss

    def _evaluate(self, batch: dict, batch_idx: int, prefix: str) -> None:
        generator = torch.Generator().manual_seed(self.hparams.seed + batch_idx)
        loss = self._loss(batch, self._voxels(generator))
        self.log(f"{prefix}_loss", loss, prog_bar=True, batch_size=len(batch["timeseries"]))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
