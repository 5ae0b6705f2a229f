"""The ``LightningModule`` bases of neurotorch's reference models: `ReferenceModule` (typed
hyperparameters) and `StepTrainedModule` (a model fitted by gradient steps, which refuses to be
evaluated before its first)."""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.parsing import AttributeDict

from neurotorch.errors import NotFittedError


class ReferenceModule(L.LightningModule):
    """A ``LightningModule`` whose `hparams` are typed as what they are, an ``AttributeDict``."""

    @property
    def hparams(self) -> AttributeDict:
        """The hyperparameters saved by ``save_hyperparameters``, with attribute access."""
        return cast(AttributeDict, super().hparams)


class StepTrainedModule(ReferenceModule):
    """A model fitted by gradient steps: it counts the training batches it has stepped on (the
    ``trained_batches`` buffer, saved with its weights) and refuses, with `NotFittedError`, to
    validate (outside a fit), test or predict before the first: its weights are still the random
    initial ones. A checkpoint written before the count existed counts its ``global_step``."""

    trained_batches: torch.Tensor  # a buffer

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.register_buffer("trained_batches", torch.zeros((), dtype=torch.long))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.trained_batches += 1

    def _check_trained(self, what: str) -> None:
        if int(self.trained_batches) == 0:
            raise NotFittedError(type(self).__name__, what)

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == TrainerFn.VALIDATING:  # not the validation of a fit
            self._check_trained("validate")

    def on_test_start(self) -> None:
        self._check_trained("test")

    def on_predict_start(self) -> None:
        self._check_trained("predict")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        state.setdefault("trained_batches", torch.tensor(int(checkpoint.get("global_step", 0))))
