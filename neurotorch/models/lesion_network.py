"""`LesionNetworkModel`: a low-rank linear map from a lesion mask to its lesion network map.

Each training step draws random seed voxels, computes their network maps (mean Fisher z of the
seed correlations over the subjects of the batch, as `neurotorch.connectome.network_map` does) and
fits ``map = (mask / |mask|) @ U @ V + b``. Once trained, the model predicts the network map of any
lesion mask without a pass over the connectome.

Validation, test and predict use the same seeds on every run (drawn from ``seed`` and the batch
number): the test reports how far the predicted maps of those seeds are from the maps the
held-out subjects give (``metrics.json`` and ``lnm_test.png``); predict returns both maps, with
the seed voxel and the subjects they come from.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurotorch._docs import fill_doc
from neurotorch._options import check_int, check_number
from neurotorch.connectome.lnm import SeedWeights, fisher_z_, seed_correlations
from neurotorch.errors import NotFittedError
from neurotorch.io.atomic import write_json
from neurotorch.log import results
from neurotorch.models.batch_keys import require_keys
from neurotorch.models.module import StepTrainedModule


@fill_doc
class LesionNetworkModel(StepTrainedModule):
    """Predict lesion network maps (mean Fisher z per voxel) from lesion masks.

    Parameters
    ----------
    rank
        Rank of the voxel-to-voxel map (a positive integer).
    n_seeds
        Random single-voxel seeds per training, validation, test and predict step.
    lr
        Adam learning rate.
    n_voxels
        Voxels (or parcels) of the connectome; ``None`` takes it from the DataModule's
        ``n_features`` in ``setup``.
    seed
        Seed of the initial weights and of the validation, test and predict seed voxels.
    %(output_dir)s
    """

    def __init__(
        self,
        rank: int = 16,
        n_seeds: int = 64,
        lr: float = 0.02,
        n_voxels: int | None = None,
        seed: int = 0,
        output_dir: str | None = None,
    ):
        super().__init__()
        check_int("rank", rank, minimum=1)
        check_int("n_seeds", n_seeds, minimum=1)
        check_number("lr", lr, minimum=0, open_minimum=True)
        check_int("seed", seed)
        if n_voxels is not None:
            check_int("n_voxels", n_voxels, minimum=1)
        self.save_hyperparameters()
        self.encoder: torch.nn.Parameter | None = None
        self.decoder: torch.nn.Parameter | None = None
        self.bias: torch.nn.Parameter | None = None
        self._test: dict[str, list] = {}
        self.test_metrics: dict | None = None
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
            # Lightning sets the trainer's datamodule at run time
            self._build(int(self.trainer.datamodule.n_features))  # type: ignore[attr-defined]

    def forward(self, lesion_masks: torch.Tensor) -> torch.Tensor:
        """(n_lesions, n_voxels) masks -> (n_lesions, n_voxels) predicted mean Fisher z."""
        if self.encoder is None or self.decoder is None or self.bias is None:
            raise NotFittedError("LesionNetworkModel", "predict")
        weights = lesion_masks / lesion_masks.sum(dim=1, keepdim=True).clamp(min=1)
        return weights @ self.encoder @ self.decoder + self.bias

    def _seed_maps(self, timeseries: torch.Tensor, voxels: torch.Tensor) -> torch.Tensor:
        """Mean over the batch's subjects of the Fisher z maps of single-voxel seeds."""
        seeds = SeedWeights(voxels, torch.eye(len(voxels), device=timeseries.device))
        z = [fisher_z_(seed_correlations(subject, seeds)) for subject in timeseries]
        return torch.stack(z).mean(dim=0)

    def _maps(self, batch: dict, voxels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Predicted and observed maps of single-voxel seeds, and which entries count (a seed's
        own voxel is trivially correlated with it and is left out)."""
        require_keys(
            batch, ("timeseries",), model="LesionNetworkModel", source="a ConnectomeDataModule"
        )
        observed = self._seed_maps(batch["timeseries"].float(), voxels)
        masks = torch.zeros_like(observed)
        masks[torch.arange(len(voxels)), voxels] = 1.0
        return self(masks), observed, 1.0 - masks

    def _loss(self, batch: dict, voxels: torch.Tensor) -> torch.Tensor:
        predicted, observed, keep = self._maps(batch, voxels)
        return (((predicted - observed) ** 2) * keep).sum() / keep.sum()

    def _voxels(self, generator: torch.Generator | None = None) -> torch.Tensor:
        n_voxels = self.hparams.n_voxels
        return torch.randperm(n_voxels, generator=generator)[: self.hparams.n_seeds].to(self.device)

    def _evaluation_voxels(self, batch: dict) -> torch.Tensor:
        """The seed voxels of an evaluation batch, from its subjects: the same on every run, on
        whichever rank and at whichever position the batch comes."""
        subjects = ",".join(str(subject) for subject in batch.get("subject", ()))
        key = zlib.crc32(subjects.encode())
        return self._voxels(torch.Generator().manual_seed(self.hparams.seed * 2**32 + key))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, self._voxels())
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["timeseries"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self._loss(batch, self._evaluation_voxels(batch))
        self.log(
            "val_loss", loss, prog_bar=True, batch_size=len(batch["timeseries"]), sync_dist=True
        )

    # -- test: loss, map correlations, JSON and plot -------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._test = {"squared_error": [], "count": [], "map_r": [], "pairs": []}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        predicted, observed, keep = self._maps(batch, self._evaluation_voxels(batch))
        error = (((predicted - observed) ** 2) * keep).sum()
        size = len(batch["timeseries"])
        self.log("test_loss", error / keep.sum(), batch_size=size, sync_dist=True)
        kept = keep.bool()
        self._test["squared_error"].append(float(error))
        self._test["count"].append(float(keep.sum()))
        for p, o, k in zip(predicted.detach(), observed, kept, strict=True):
            self._test["map_r"].append(float(np.corrcoef(p[k].cpu(), o[k].cpu())[0, 1]))
        first = kept[0]
        self._test["pairs"].append((predicted[0, first].detach().cpu(), observed[0, first].cpu()))

    def on_test_epoch_end(self) -> None:
        test = self._gathered(self._test)
        map_r = np.asarray(test["map_r"])
        self.test_metrics = {
            "mse": sum(test["squared_error"]) / sum(test["count"]),
            "median_map_r": float(np.nanmedian(map_r)),
            "n_seeds": len(map_r),
            "n_voxels": int(self.hparams.n_voxels),
        }
        if not self.trainer.is_global_zero:
            return
        out = Path(self.hparams.output_dir or self.trainer.log_dir or self.trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        metrics_path = write_json(out / "metrics.json", self.test_metrics)
        plot_path = _plot_test(out / "lnm_test.png", pairs=test["pairs"], map_r=map_r)
        metrics = self.test_metrics
        results.info(
            f"test: network-map mean squared error = {metrics['mse']:.4f}; median map "
            f"correlation r = {metrics['median_map_r']:.3f} over {len(map_r)} seeds"
        )
        results.info("metrics: %s\nplot:    %s", metrics_path, plot_path)

    def _gathered(self, test: dict[str, list]) -> dict[str, list]:
        """Every rank's test results together (under DDP each rank tests its share)."""
        if self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return test
        shares: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(shares, test)
        return {key: [value for share in shares for value in share[key]] for key in test}

    # -- predict: the maps of the evaluation seeds, predicted and observed ----------------------
    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Per seed voxel of the batch: ``predicted`` and ``observed`` (mean Fisher z over the
        batch's subjects) maps ``(n_seeds, n_voxels)``, the ``seed_voxel`` (a column of the
        connectome's voxel axis) and the ``subjects`` the observed map comes from."""
        voxels = self._evaluation_voxels(batch)
        predicted, observed, _ = self._maps(batch, voxels)
        subjects = ",".join(str(subject) for subject in batch["subject"])
        return {
            "predicted": predicted,
            "observed": observed,
            "seed_voxel": voxels,
            "subjects": [subjects] * len(voxels),
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _plot_test(path: Path, *, pairs: list, map_r: np.ndarray) -> Path:
    """Predicted against observed Fisher z (the first seed of every test batch), and the
    distribution of the per-seed map correlations."""
    from neurotorch.plotting.figure import new_figure, save_png

    fig, (left, right) = new_figure(2, panel_size=(4.8, 4.2))
    predicted = torch.cat([p for p, _ in pairs]).numpy()
    observed = torch.cat([o for _, o in pairs]).numpy()
    left.scatter(observed, predicted, s=3, alpha=0.3)
    low, high = (
        float(min(observed.min(), predicted.min())),
        float(max(observed.max(), predicted.max())),
    )
    left.plot([low, high], [low, high], "k--", lw=1)
    left.set(xlabel="observed mean Fisher z (test subjects)", ylabel="predicted", title="seed maps")
    right.hist(map_r[np.isfinite(map_r)], bins=20)
    right.set(
        xlabel="correlation of predicted and observed map",
        ylabel="seeds",
        title=f"median r = {np.nanmedian(map_r):.3f}",
    )
    return save_png(fig, path)
