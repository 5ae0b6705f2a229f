"""Settings that travel together, validated once: how betas are read, and the synthetic dataset.

The LAION-fMRI datasets and DataModule take three settings objects besides their root and
subjects: a `neurotorch.data.fmri.trials.TrialSelection` (which trials), a
`neurotorch.fmri.voxel_selection.VoxelSelection` (which voxels) and a `ReadSettings` (how values
are read and stored). Each is a frozen dataclass checked when it is made; every constructor also
accepts a plain dict of its fields (`as_settings`), which is what a YAML config holds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from neurotorch._docs import fill_doc
from neurotorch._options import check_bool, check_int, check_option
from neurotorch.data.fmri.store import DTYPES
from neurotorch.data.fmri.trials import TrialSelection
from neurotorch.errors import ParameterError
from neurotorch.fmri.datafiles import resolve_root
from neurotorch.fmri.nan_policy import NAN_POLICIES
from neurotorch.fmri.voxel_selection import VoxelSelection
from neurotorch.io.integrity import VERIFY_MODES
from neurotorch.io.storage import DataRoot
from neurotorch.synthetic.laion_fmri import SIZES, SNR_PRESETS
from neurotorch.synthetic.resolve import resolve_data_dir

#: the shuffle buffer of a DataModule's training stream when ``shuffle_buffer`` is None: this
#: many trials, or as many as fit in ``TRAINING_SHUFFLE_BYTES`` (`training_shuffle_buffer`)
TRAINING_SHUFFLE_BUFFER = 1024
TRAINING_SHUFFLE_BYTES = 256 * 2**20


def training_shuffle_buffer(n_voxels: int) -> int:
    """The default shuffle buffer of a training stream whose items hold ``n_voxels`` float32
    values: `TRAINING_SHUFFLE_BUFFER` trials, or as many as fit in `TRAINING_SHUFFLE_BYTES`
    (at least 2, which still shuffles). A whole-brain LAION-fMRI item (572,557 voxels, 2.3 MB)
    gets 117: a reader then holds 256 MB, not 2.3 GB, and serves its first batch after about
    117 volumes, not 1024 (a whole session's inflate)."""
    return max(2, min(TRAINING_SHUFFLE_BUFFER, TRAINING_SHUFFLE_BYTES // (4 * max(1, n_voxels))))


@fill_doc
@dataclass(frozen=True)
class ReadSettings:
    """How betas are read: storage dtype, normalisation, non-finite values, checks, shuffling.

    Parameters
    ----------
    %(dtype)s
    %(zscore)s
    %(average_repeats)s
    %(nan_policy)s
    %(cache_dir)s
    %(verify)s
    %(shuffle_buffer)s
    """

    dtype: Literal["float32", "float16"] = "float32"
    zscore: bool = False
    average_repeats: bool = False
    nan_policy: Literal["raise", "zero", "keep"] = "raise"
    cache_dir: str | None = None
    verify: Literal["first-use", "off"] = "first-use"
    shuffle_buffer: int | None = None

    def __post_init__(self) -> None:
        check_option("dtype", self.dtype, DTYPES)
        check_bool("zscore", self.zscore)
        check_bool("average_repeats", self.average_repeats)
        check_option("nan_policy", self.nan_policy, NAN_POLICIES)
        check_option("verify", self.verify, VERIFY_MODES)
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
        if self.shuffle_buffer is not None:
            check_int("shuffle_buffer", self.shuffle_buffer, minimum=0)

    def check_streamable(self) -> None:
        """`ParameterError` for a setting the stream cannot honour (it reads each trial once,
        in file order, with no per-session statistics and no store)."""
        refused = {
            "zscore": self.zscore,
            "average_repeats": self.average_repeats,
            "dtype": self.dtype != "float32",
        }
        for name, asked in refused.items():
            if asked:
                raise ParameterError(
                    f"{name}={getattr(self, name)!r} applies to the map-style BetasDataset (the "
                    "prepared store); the stream reads raw float32 betas trial by trial. Use "
                    f"streaming=False, or leave {name} at its default."
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (YAML, checkpoints)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@fill_doc
@dataclass(frozen=True)
class SyntheticOptions:
    """The built-in synthetic LAION-fMRI dataset that ``data_dir="synthetic"`` stands for.

    Parameters
    ----------
    size
        Size preset: ``"tiny"`` (tests), ``"small"`` (examples, the default) or ``"bench"``.
    snr
        Signal-to-noise preset of the signal voxels: ``"default"`` or ``"realistic"``.
    """

    size: Literal["tiny", "small", "bench"] = "small"
    snr: Literal["default", "realistic"] = "default"

    def __post_init__(self) -> None:
        check_option("size", self.size, SIZES)
        check_option("snr", self.snr, SNR_PRESETS)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "snr": self.snr}


def nest_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the fields of the settings objects given by name moved into them:
    ``{"roi": "face", "zscore": True}`` becomes ``{"voxels": {"roi": "face"}, "read":
    {"zscore": True}}`` (the way Hugging Face routes config keywords). Other keys pass through.

    Raises
    ------
    ParameterError
        A settings object given both ways (``roi=`` and ``voxels=``).
    """
    nested = dict(config)
    groups = {"trials": TrialSelection, "voxels": VoxelSelection, "read": ReadSettings}
    for name, settings_class in groups.items():
        flat = {f.name: nested.pop(f.name) for f in fields(settings_class) if f.name in nested}
        if flat and nested.get(name) is not None:
            raise ParameterError(
                f"{sorted(flat)} and {name}= both set {name} settings; give them one way."
            )
        if flat:
            nested[name] = flat
    return nested


def laion_root(
    data_dir: str | os.PathLike | DataRoot | None,
    storage_options: dict | None = None,
    *,
    synthetic: SyntheticOptions | None = None,
    seed: int = 0,
) -> DataRoot:
    """The dataset root of ``data_dir``; ``"synthetic"`` is the built-in synthetic dataset of
    ``synthetic`` and ``seed``, written on first use."""
    options = synthetic or SyntheticOptions()
    extra = {} if options.snr == "default" else {"snr": options.snr}
    resolved = resolve_data_dir("laion-fmri", data_dir, size=options.size, seed=seed, **extra)
    return resolve_root(resolved, storage_options)
