"""Dataset builders registered in `neurotorch.data.registry` (``load_dataset(name, ...)``)."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from neurotorch.errors import ParameterError

if TYPE_CHECKING:
    from neurotorch.data.fmri.betas import BetasDataset
    from neurotorch.data.fmri.stream import BetasStream


def build_laion_fmri(split: str | None = None, streaming: bool = False, **config: Any) -> Dataset:
    """LAION-fMRI trials: `BetasDataset` (prepared store) or, with ``streaming=True``, `BetasStream`.

    ``split`` is ``"<split>/<part>"`` (``"tau/train"``, ``"random_0/test"``, ``"ood/test"``; a
    name alone means every part). ``config`` holds the dataset's keyword arguments
    (``data_dir``, ``subject``, ``features``, ``trials``, ``voxels``, ``read``, ...); the fields of
    the settings objects may also be given by name, as Hugging Face routes config keywords
    (``roi="face"`` is ``voxels={"roi": "face"}``, ``zscore=True`` is ``read={"zscore": True}``),
    but not both ways at once. ``data_dir="synthetic"`` uses the built-in synthetic dataset of
    ``synthetic`` (``{"size": "tiny"}``), writing it on first use.
    """
    import inspect

    from neurotorch._options import as_settings, check_option
    from neurotorch.data.fmri.settings import (
        SyntheticOptions,
        laion_root,
        nest_settings,
    )

    cls: type[BetasStream] | type[BetasDataset]
    if streaming:
        from neurotorch.data.fmri.stream import BetasStream

        cls = BetasStream
    else:
        from neurotorch.data.fmri.betas import BetasDataset

        cls = BetasDataset
    config = nest_settings(config)
    if split is not None:
        config["trials"] = _trials_with_split(config.get("trials"), split)
    synthetic = as_settings(SyntheticOptions, config.pop("synthetic", None), "synthetic")
    allowed = [p for p in inspect.signature(cls).parameters if p != "self"] + ["synthetic"]
    for key in config:
        check_option(f"a keyword of load_dataset('laion-fmri') ({cls.__name__})", key, allowed)
    root = laion_root(
        config.pop("data_dir", None), config.pop("storage_options", None), synthetic=synthetic
    )
    return cls(root, **config)


def _trials_with_split(trials: Any, split: str) -> Any:
    """The trial selection ``trials`` (object, mapping or None) with ``load_dataset``'s ``split``
    (``"name"`` or ``"name/part"``) merged in before it is checked, so that ``part=`` given by
    name joins it; a split or a part given twice differently is refused."""
    from neurotorch._options import as_settings
    from neurotorch.data.fmri.trials import TrialSelection, parse_split

    if isinstance(trials, TrialSelection):
        given = {f.name: getattr(trials, f.name) for f in fields(trials)}
    else:
        given = dict(trials or {})
    if given.get("split") is not None:
        raise ParameterError(
            f"split={split!r} and trials={{'split': {given['split']!r}}} both name the split; "
            "give it once."
        )
    name, part = parse_split(split)
    if "/" in split:
        if given.get("part") not in (None, part):
            raise ParameterError(
                f"split={split!r} names the part {part!r} but part={given['part']!r}; give the "
                "part once."
            )
        given["part"] = part
    given["split"] = name
    return as_settings(TrialSelection, given, "trials")


# -- M/EEG (imported on use: the M/EEG stack imports MNE) -------------------------------------
def _meeg_config(split: str | None, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its leadfield settings gathered in ``leadfield`` and a split's seed.

    ``leadfield`` is a `LeadfieldData`, a `LeadfieldSpec` or a mapping of its fields;
    ``data_dir`` and ``storage_options`` (the keys every family takes) go into the spec.
    """
    from neurotorch.data.meeg.simulation import split_seed
    from neurotorch.meeg.leadfield import LeadfieldData, LeadfieldSpec

    leadfield = config.pop("leadfield", None)
    where = {key: config.pop(key) for key in ("data_dir", "storage_options") if key in config}
    if where:
        if isinstance(leadfield, LeadfieldData):
            raise ParameterError(
                f"Give either a built leadfield or {sorted(where)} to load one, not both."
            )
        if isinstance(leadfield, LeadfieldSpec):
            leadfield = leadfield.replace(**where)
        else:
            leadfield = {**(leadfield or {}), **where}
    config["leadfield"] = leadfield
    config["seed"] = split_seed(config.get("seed", 0), split)
    return config


def _fresh_for_training(split: str | None, config: dict[str, Any]) -> dict[str, Any]:
    """A stream draws fresh trials every pass for training (or no split); the same trials every
    pass for ``"val"`` and ``"test"``, as the DataModules do, unless ``fresh_each_epoch`` says."""
    return {"fresh_each_epoch": split in (None, "train"), **config}


def build_meeg_sim(split: str | None = None, streaming: bool = False, **config: Any) -> Dataset:
    """``load_dataset("meeg-sim", ...)``: `SimulatedSensorDataset` (or `SimulatedSensorBatches`
    with ``streaming=True``); ``leadfield`` (data, spec or mapping) or ``data_dir`` (a CaliBrain
    root, or ``"synthetic"``) says which leadfield; ``split`` ("train", "val", "test") picks an
    independent seed stream. A stream of ``"val"`` or ``"test"`` serves the same trials every
    pass (``fresh_each_epoch=False``); of ``"train"`` or no split, fresh ones."""
    from neurotorch.data.meeg.simulation import SimulatedSensorBatches, SimulatedSensorDataset

    if not streaming:
        return SimulatedSensorDataset(**_meeg_config(split, config))
    return SimulatedSensorBatches(**_meeg_config(split, _fresh_for_training(split, config)))


def build_meeg_calibration(
    split: str | None = None, streaming: bool = False, **config: Any
) -> Dataset:
    """``load_dataset("meeg-calibration", ...)``: `CalibrationRunsDataset` when ``files`` is given,
    else a simulated `CalibrationDataset` (`CalibrationBatches` with ``streaming=True``) with the
    ``leadfield`` and ``posterior`` settings of `build_meeg_sim`."""
    from neurotorch.data.meeg.calibration import (
        CalibrationBatches,
        CalibrationDataset,
        CalibrationRunsDataset,
    )

    if "files" in config:
        return CalibrationRunsDataset(config["files"], config.get("storage_options"))
    if not streaming:
        return CalibrationDataset(**_meeg_config(split, config))
    return CalibrationBatches(**_meeg_config(split, _fresh_for_training(split, config)))
