"""Dataset builders registered in `neurotorch.data.registry` (``load_dataset(name, ...)``)."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset


def build_laion_fmri(split: str | None = None, streaming: bool = False, **config: Any) -> Dataset:
    """LAION-fMRI trials: `BetasDataset` (prepared store) or, with ``streaming=True``, `BetasStream`.

    ``split`` is ``"<split>/<part>"`` (``"tau/train"``, ``"random_0/test"``, ``"ood/test"``);
    ``config`` holds the dataset's keyword arguments (``data_dir``, ``subject``, ``roi``,
    ``features``, ``pool``, ``ood_types``, ``zscore``, ...). ``data_dir="synthetic"`` (with an
    optional ``synthetic_size``) uses the built-in synthetic dataset, writing it on first use.
    """
    config.setdefault("data_dir", None)  # None: $LAION_FMRI_DATA_DIR, else DataDirNotSetError
    if config["data_dir"] == "synthetic":
        from neurotorch.synthetic.laion_fmri import make_laion_fmri

        config["data_dir"] = make_laion_fmri(size=config.pop("synthetic_size", "small"))
    if streaming:
        from neurotorch.data.stream import BetasStream

        return BetasStream(split=split, **config)
    from neurotorch.data.betas import BetasDataset

    return BetasDataset(split=split, **config)
