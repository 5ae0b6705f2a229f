"""`ReferenceModule`: the ``LightningModule`` base of neurotorch's reference models."""

from __future__ import annotations

from typing import cast

import lightning as L
from lightning.pytorch.utilities.parsing import AttributeDict


class ReferenceModule(L.LightningModule):
    """A ``LightningModule`` whose `hparams` are typed as what they are, an ``AttributeDict``."""

    @property
    def hparams(self) -> AttributeDict:
        """The hyperparameters saved by ``save_hyperparameters``, with attribute access."""
        return cast(AttributeDict, super().hparams)
