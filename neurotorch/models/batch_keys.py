"""What every reference model checks first: the batches hold the keys it reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from neurotorch.errors import ParameterError


def require_keys(batch: Mapping, keys: Iterable[str], *, model: str, source: str) -> None:
    """Raise `ParameterError` naming the missing keys, the model and the data it needs.

    Parameters
    ----------
    batch
        A batch (a dict of the DataModule's collated items).
    keys
        The keys the model reads.
    model
        The model's name, for the message.
    source
        What serves such batches (``"CalibrationDataModule"``, "the embedding key(s) ..."), for
        the message.
    """
    missing = [key for key in keys if key not in batch]
    if missing:
        raise ParameterError(
            f"{model} reads {missing} but the batches hold {sorted(batch)}: give it the data of "
            f"{source}."
        )
