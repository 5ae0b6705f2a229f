"""Fault injection of the fMRI readers and the caches (the framework: `tests/faults/framework.py`).

Every damaged or inconsistent input gives a named error, never a wrong array: each case in
`FAULTS` damages one file of a fresh copy of the tiny synthetic tree (or writes one bad M/EEG or
connectome file), calls the public reader that a user would call, and records how it failed.

The durability tests below check the caches: a build killed with SIGKILL at any step, two
processes building at once, a disk-full error and a corrupt source leave either the complete
previous state or nothing a later run would use, and the next run rebuilds the correct array
(compared with nibabel's full read).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from faults.framework import (
    BETAS,
    BRAIN,
    CLIP,
    FFA1,
    IMAGES,
    METADATA,
    SES,
    SESSION_NC,
    SPLIT,
    SUB,
    TRIALS,
    Fault,
    _damage,
    brain_voxel,
    flip_at,
    flip_byte,
    rewrite_h5,
    rewrite_nifti,
    run_fault,
    set_volume_count,
    stream_items,
    temporary_files,
    tmp_case,
    tree_case,
    truncate,
)

from neurotorch.errors import (
    CacheError,
    CorruptFileError,
    DataNotDownloadedError,
    FormatError,
    ParameterError,
    RoiNotFoundError,
    ShapeMismatchError,
    ShardingError,
    SplitError,
    StimuliNotDownloadedError,
    SubjectNotFoundError,
    UnsafePathError,
    UnsafePickleError,
)

# -- damaging files -----------------------------------------------------------------------------


def put_nonfinite(root: Path) -> None:
    """Two non-finite betas inside the brain: NaN in volume 3, +inf in volume 4."""
    x, y, z = brain_voxel(root)

    def change(data: np.ndarray) -> np.ndarray:
        data[x, y, z, 3] = np.nan
        data[x, y, z, 4] = np.inf
        return data

    rewrite_nifti(root / BETAS, change)


def drop_trial_rows(root: Path, n: int = 5) -> None:
    path = root / TRIALS
    table = pd.read_csv(path, sep="\t")
    table.iloc[:-n].to_csv(path, sep="\t", index=False)


def write_split(root: Path, text: str) -> None:
    (root / SPLIT).write_text(text)


def edit_split(root: Path, change: Callable[[dict], None]) -> None:
    raw = json.loads((root / SPLIT).read_text())
    change(raw)
    write_split(root, json.dumps(raw))


# -- the readers under test -----------------------------------------------------------------------


def subject(root: Path, subject_id: str = SUB):
    from neurotorch.fmri import load_subject

    return load_subject(subject_id, root)


def betas(root: Path, **kwargs):
    return subject(root).get_betas(SES, **kwargs)


def dataset(root: Path, **kwargs):
    from neurotorch.data.fmri.betas import BetasDataset
    from neurotorch.data.fmri.settings import nest_settings

    kwargs.setdefault("sessions", [SES])
    kwargs = nest_settings({"cache_dir": root.parent / "cache", **kwargs})
    ds = BetasDataset(root, kwargs.pop("subject", SUB), **kwargs)
    return ds[0]


def stream_file(root: Path, relpath: str):
    from neurotorch.io.nifti import read_masked_betas

    mask = np.asarray(nib.load(root / BRAIN).dataobj) != 0
    return read_masked_betas(root / relpath, mask)


def split(root: Path, name: str = "random_0", pool: str = "shared"):
    from neurotorch.fmri.splits import load_split

    return load_split(name, pool, data_dir=root)


# -- M/EEG and connectome files -------------------------------------------------------------------


def leadfield_with_object_array(tmp: Path) -> Path:
    """A leadfield NPZ whose ``leadfield`` entry is a pickled object array."""
    path = tmp / "fsaverage_fixed_leadfield.npz"
    leadfield = np.empty((4, 6), dtype=object)
    leadfield[...] = 1.0
    np.savez(path, leadfield=leadfield)
    return path


def load_leadfield(path: Path):
    from neurotorch.meeg.leadfield import load_leadfield_npz

    return load_leadfield_npz(path)


def leadfield_subject(tmp: Path, subject_id: str):
    from neurotorch.meeg.leadfield import LeadfieldBuilder

    return LeadfieldBuilder(tmp).get_leadfield(subject_id)


def connectome_batch(path: Path, n_voxels: int = 8, n_timepoints: int = 5, seed: int = 0) -> Path:
    from neurotorch.connectome.writer import write_batch

    rng = np.random.default_rng(seed)
    indices = np.argwhere(np.ones((2, 2, 2), dtype=bool))[:n_voxels]
    series = [rng.standard_normal((n_timepoints, n_voxels)).astype(np.float32) for _ in range(2)]
    return write_batch(
        path, series, [f"s{seed}a", f"s{seed}b"], indices, np.eye(4), (2, 2, 2), n_timepoints
    )


def connectome(paths):
    from neurotorch.connectome.batches import ConnectomeBatches

    batches = ConnectomeBatches(paths)
    return [batches.read_subject(i) for i in range(batches.n_subjects)]


# -- the cases ------------------------------------------------------------------------------------


def _nothing(root: Path) -> None:
    return None


def _remove(relpath: str) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        (root / relpath).unlink()
        return Path(relpath).name

    return apply


def _grid_changed(relpath: str) -> Callable[[Path], str]:
    """Re-save a 3-D volume one voxel shorter along x (another grid)."""
    return _damage(lambda p: rewrite_nifti(p, lambda d: d[:-1]), relpath)


def _affine_shifted(relpath: str) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        image = nib.load(root / relpath)
        affine = image.affine.copy()
        affine[:3, 3] += 9.0
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), root / relpath)
        return Path(relpath).name

    return apply


def _dup_metadata_row(root: Path) -> str:
    table = pd.read_csv(root / METADATA, keep_default_na=False)
    pd.concat([table, table.iloc[[3]]]).to_csv(root / METADATA, index=False)
    return str(table["image_name"].iloc[3])


def _dup_beta_index(root: Path) -> str:
    table = pd.read_csv(root / TRIALS, sep="\t")
    table.loc[1, "beta_index"] = table.loc[0, "beta_index"]
    table.to_csv(root / TRIALS, sep="\t", index=False)
    return Path(TRIALS).name


def _drop_embedding_ids(root: Path) -> str:
    def change(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {key: value[10:] for key, value in arrays.items()}

    rewrite_h5(root / CLIP, change)
    return Path(CLIP).name


def _dup_embedding_id(root: Path) -> str:
    def change(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays["image_ids"][1] = arrays["image_ids"][0]
        return arrays

    rewrite_h5(root / CLIP, change)
    return Path(CLIP).name


def _escaping_label(root: Path) -> str:
    table = pd.read_csv(root / TRIALS, sep="\t")
    table.loc[0, "label"] = "../../../etc/passwd"
    table.to_csv(root / TRIALS, sep="\t", index=False)
    return Path(TRIALS).name


def _split_overlap(raw: dict) -> None:
    variant = raw["variants"][0]
    variant["test_ids"].append(variant["train_ids"][0])
    raw["n_test"] += 1


def _npz_object(tmp: Path) -> tuple[Callable[[], object], str]:
    path = leadfield_with_object_array(tmp)
    return (lambda: load_leadfield(path)), path.name


def _npz_truncated(tmp: Path) -> tuple[Callable[[], object], str]:
    from neurotorch.meeg.leadfield import random_leadfield, save_leadfield_npz

    path = save_leadfield_npz(
        tmp / "fsaverage_fixed_leadfield.npz", random_leadfield("fixed", 8, 20)
    )
    truncate(path, 0.6)
    return (lambda: load_leadfield(path)), path.name


def _leadfield_escape(tmp: Path) -> tuple[Callable[[], object], str]:
    return (lambda: leadfield_subject(tmp / "leadfields", "../../etc/passwd")), "../../etc/passwd"


def _h5_truncated(tmp: Path) -> tuple[Callable[[], object], str]:
    path = connectome_batch(tmp / "gsp1000_chunk_000.h5")
    truncate(path, 0.5)
    return (lambda: connectome([path])), path.name


def _batches_disagree(tmp: Path) -> tuple[Callable[[], object], str]:
    first = connectome_batch(tmp / "gsp1000_chunk_000.h5", n_voxels=8, seed=0)
    second = connectome_batch(tmp / "gsp1000_chunk_001.h5", n_voxels=6, seed=1)
    return (lambda: connectome([first, second])), second.name


def _batches_timepoints(tmp: Path) -> tuple[Callable[[], object], str]:
    first = connectome_batch(tmp / "gsp1000_chunk_000.h5", n_timepoints=5, seed=0)
    second = connectome_batch(tmp / "gsp1000_chunk_001.h5", n_timepoints=7, seed=1)
    return (lambda: connectome([first, second])), second.name


def posterior_summary(path: Path, n_sources: int = 5, n_times: int = 4, var_size: int = 5) -> Path:
    """A fixed-orientation CaliBrain posterior summary (HDF5) with ``var_size`` variances."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["x_true"] = rng.standard_normal((n_sources, n_times))
        f["x_hat"] = rng.standard_normal((n_sources, n_times))
        f["posterior_var"] = np.ones(var_size)
        f.attrs["metadata_json"] = json.dumps({"orientation_type": "fixed"})
    return path


def read_run(path: Path):
    from neurotorch.meeg.summaries import read_run

    return read_run(path)


def _summary_truncated(tmp: Path) -> tuple[Callable[[], object], str]:
    path = posterior_summary(tmp / "posterior_summary_run00000001_seed0.h5")
    truncate(path, 0.5)
    return (lambda: read_run(path)), path.name


def _summary_variances(tmp: Path) -> tuple[Callable[[], object], str]:
    path = posterior_summary(tmp / "posterior_summary_run00000001_seed0.h5", var_size=7)
    return (lambda: read_run(path)), path.name


def _run_sidecar(tmp: Path) -> tuple[Callable[[], object], str]:
    path = tmp / "run.npz"
    np.savez(path, x_true=np.zeros((3, 2)), x_hat=np.zeros((3, 2)), posterior_var=np.ones(3))
    path.with_suffix(".json").write_text("{truncated")
    return (lambda: read_run(path)), "run.json"


def datamodule(root: Path, **kwargs):
    """The LAION-fMRI DataModule as a YAML config would build it, set up for fitting."""
    from neurotorch.data.fmri.settings import nest_settings
    from neurotorch.lightning.laion_fmri import LaionFMRIDataModule

    kwargs = nest_settings({"cache_dir": str(root.parent / "cache"), **kwargs})
    kwargs["trials"] = {"split": "random_0", "val_fraction": 0.1, **kwargs.get("trials", {})}
    module = LaionFMRIDataModule(data_dir=str(root), **kwargs)
    module.setup("fit")
    return module


def stream(root: Path, **kwargs):
    from neurotorch.data.fmri.settings import nest_settings
    from neurotorch.data.fmri.stream import BetasStream

    kwargs = nest_settings({"sessions": [SES], **kwargs})
    return list(BetasStream(root, kwargs.pop("subject", SUB), **kwargs))


def _root_escape(relpath: str) -> Callable[[Path], tuple[Callable[[], object], str]]:
    def make(tmp: Path):
        from neurotorch.io.storage import DataRoot

        root = DataRoot(tmp)
        return (lambda: root.open(relpath).read()), relpath

    return make


def _edit_trials(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        table = pd.read_csv(root / TRIALS, sep="\t", dtype=str, keep_default_na=False)
        change(table).to_csv(root / TRIALS, sep="\t", index=False)
        return Path(TRIALS).name

    return apply


def _beta_index(value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table.loc[3, "beta_index"] = value
        return table

    return change


def _embedding_value(value: float) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        def change(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            arrays["embedding"][2, 0] = value
            return arrays

        rewrite_h5(root / CLIP, change)
        return Path(CLIP).name

    return apply


def _embedding_vectorless(root: Path) -> str:
    rewrite_h5(root / CLIP, lambda arrays: {**arrays, "embedding": arrays["embedding"][:, 0]})
    return Path(CLIP).name


def _image_cut(root: Path) -> str:
    """The first stimulus image loses all but its first 10 bytes (a damaged JPEG)."""

    def change(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays["images"][0] = arrays["images"][0][:10]
        return arrays

    rewrite_h5(root / IMAGES, change)
    return Path(IMAGES).name


def _store_truncated_after_open(root: Path) -> Callable[[], object]:
    """A dataset whose prepared ``.npy`` is cut after the dataset was created; its modification
    time is put back (as a copy that preserves times would), so only the size can tell."""
    from neurotorch.data.fmri.betas import BetasDataset

    ds = BetasDataset(
        root, SUB, trials={"sessions": SES}, read={"cache_dir": root.parent / "cache"}
    )
    npy = ds.stores[SUB].session(SES).betas_path
    written = npy.stat()
    truncate(npy, 0.6)
    os.utime(npy, ns=(written.st_atime_ns, written.st_mtime_ns))
    return lambda: ds[0]


def _datamodule_call(**kwargs) -> Callable[[Path], object]:
    return lambda r: datamodule(r, **kwargs)


def _value_case(call: Callable[[], object], culprit: str):
    """A case where only a value is wrong: nothing is damaged."""
    return lambda tmp: (call, culprit)


def _shard_batch_zero() -> object:
    from neurotorch.data.sharding import shard_positions

    return shard_positions(10, batch_size=0)


def _grouped_batch_zero() -> object:
    from neurotorch.data.sampling import GroupedBatchSampler

    return GroupedBatchSampler(range(3), 0, groups=[0, 0, 0])


def _meeg_module(**kwargs) -> Callable[[], object]:
    def call() -> object:
        from neurotorch.lightning import SensorSimDataModule

        module = SensorSimDataModule(**{"leadfield": {"n_sources": 20}, "nnz": (1,), **kwargs})
        module.setup()
        return module

    return call


def _calibration_module(**kwargs) -> Callable[[], object]:
    def call() -> object:
        from neurotorch.lightning import CalibrationDataModule

        return CalibrationDataModule(**{"leadfield": {"n_sources": 20}, "nnz": (1,), **kwargs})

    return call


def _sflex_without_positions() -> object:
    from neurotorch.data.meeg.calibration import CalibrationDataset
    from neurotorch.meeg.leadfield import random_leadfield

    return CalibrationDataset(
        random_leadfield("fixed", 8, 12), nnz=(2,), posterior={"solver": "gamma_map_sflex"}
    )


def _grid_solver(tmp: Path) -> tuple[Callable[[], object], str]:
    from neurotorch.meeg.grid import run_grid
    from neurotorch.meeg.leadfield import LeadfieldBuilder

    grid = {"subject": ["s"], "orientation_type": ["fixed"], "nnz": [1], "alpha_SNR": [0.5]}
    return (lambda: run_grid(LeadfieldBuilder(tmp), tmp / "runs", grid, solver="champagne")), (
        "champagne"
    )


def _runs_missing(tmp: Path) -> tuple[Callable[[], object], str]:
    from neurotorch.data.meeg.calibration import CalibrationRunsDataset

    missing = tmp / "no-such-run.npz"
    return (lambda: CalibrationRunsDataset(str(missing))), missing.name


def _chunks_999() -> object:
    from neurotorch.data.connectome.subjects import load_connectome

    return load_connectome(streaming=True, subjects=[999])


FAULTS: list[Fault] = [
    # Damaged .nii.gz, streaming reader and nibabel path.
    tree_case(
        "nifti-truncated-streaming",
        CorruptFileError,
        _damage(truncate, BETAS),
        lambda r: betas(r, streaming=True),
    ),
    tree_case("nifti-truncated-nibabel", CorruptFileError, _damage(truncate, BETAS), betas),
    tree_case(
        "nifti-truncated-reader",
        CorruptFileError,
        _damage(truncate, BETAS),
        lambda r: stream_file(r, BETAS),
    ),
    tree_case(
        "nifti-crc-streaming",
        CorruptFileError,
        _damage(lambda p: flip_byte(p, -8), BETAS),
        lambda r: betas(r, streaming=True),
    ),
    tree_case(
        "nifti-crc-nibabel", CorruptFileError, _damage(lambda p: flip_byte(p, -8), BETAS), betas
    ),
    tree_case(
        "nifti-length-trailer-nibabel",
        CorruptFileError,
        _damage(lambda p: flip_byte(p, -2), BETAS),
        betas,
    ),
    tree_case(
        "nifti-deflate-nibabel",
        CorruptFileError,
        _damage(lambda p: flip_byte(p, p.stat().st_size // 2), BETAS),
        betas,
    ),
    tree_case("nifti-truncated-store", CorruptFileError, _damage(truncate, BETAS), dataset),
    tree_case("mask-truncated", CorruptFileError, _damage(truncate, BRAIN), betas),
    tree_case("mask-crc", CorruptFileError, _damage(lambda p: flip_byte(p, -8), BRAIN), betas),
    tree_case(
        "roi-truncated", CorruptFileError, _damage(truncate, FFA1), lambda r: betas(r, roi="FFA1")
    ),
    tree_case(
        "nifti-not-gzip-nor-nifti",
        FormatError,
        _damage(lambda p: p.write_bytes(b"not a nifti file" * 40), BETAS),
        lambda r: betas(r, streaming=True),
    ),
    # 4th dimension against the trial table.
    tree_case(
        "trials-vs-volumes-nibabel", ShapeMismatchError, drop_trial_rows, betas, Path(BETAS).name
    ),
    tree_case(
        "trials-vs-volumes-streaming",
        ShapeMismatchError,
        drop_trial_rows,
        lambda r: betas(r, streaming=True),
        Path(BETAS).name,
    ),
    tree_case(
        "trials-vs-volumes-store", ShapeMismatchError, drop_trial_rows, dataset, Path(BETAS).name
    ),
    tree_case(
        "trials-vs-volumes-metadata",
        ShapeMismatchError,
        drop_trial_rows,
        lambda r: subject(r).metadata,
        Path(BETAS).name,
    ),
    tree_case(
        "header-more-volumes-than-trials-streaming",
        ShapeMismatchError,
        _damage(lambda p: set_volume_count(p, 200), BETAS),
        lambda r: betas(r, streaming=True),
    ),
    tree_case(
        "header-fewer-volumes-than-trials-store",
        ShapeMismatchError,
        _damage(lambda p: set_volume_count(p, 100), BETAS),
        dataset,
    ),
    # Grids that differ from the betas grid.
    tree_case("mask-grid-nibabel", ShapeMismatchError, _grid_changed(BRAIN), betas),
    tree_case(
        "mask-grid-streaming",
        ShapeMismatchError,
        _grid_changed(BRAIN),
        lambda r: betas(r, streaming=True),
    ),
    tree_case("mask-grid-store", ShapeMismatchError, _grid_changed(BRAIN), dataset),
    tree_case("mask-affine-nibabel", ShapeMismatchError, _affine_shifted(BRAIN), betas),
    tree_case(
        "mask-affine-streaming",
        ShapeMismatchError,
        _affine_shifted(BRAIN),
        lambda r: betas(r, streaming=True),
    ),
    tree_case("mask-affine-store", ShapeMismatchError, _affine_shifted(BRAIN), dataset),
    tree_case("roi-grid", ShapeMismatchError, _grid_changed(FFA1), lambda r: betas(r, roi="FFA1")),
    tree_case(
        "noise-ceiling-grid",
        ShapeMismatchError,
        _grid_changed(SESSION_NC),
        lambda r: betas(r, nc_threshold=10.0),
    ),
    # Non-finite betas (default nan_policy="raise").
    tree_case("betas-nonfinite-nibabel", FormatError, put_nonfinite, betas, "2 non-finite"),
    tree_case(
        "betas-nonfinite-streaming",
        FormatError,
        put_nonfinite,
        lambda r: betas(r, streaming=True),
        "2 non-finite",
    ),
    tree_case("betas-nonfinite-store", FormatError, put_nonfinite, dataset, "2 non-finite"),
    # Missing files.
    tree_case(
        "missing-session",
        DataNotDownloadedError,
        _nothing,
        lambda r: subject(r).get_betas("ses-07"),
        "ses-07",
    ),
    tree_case("missing-betas-file", DataNotDownloadedError, _remove(BETAS), betas),
    tree_case("missing-trials-file", DataNotDownloadedError, _remove(TRIALS), dataset),
    tree_case("missing-brain-mask", DataNotDownloadedError, _remove(BRAIN), betas),
    tree_case(
        "missing-roi-volume", DataNotDownloadedError, _remove(FFA1), lambda r: betas(r, roi="FFA1")
    ),
    tree_case("unknown-roi", RoiNotFoundError, _nothing, lambda r: betas(r, roi="FFA9"), "FFA9"),
    tree_case(
        "missing-stimulus-metadata",
        StimuliNotDownloadedError,
        _remove(METADATA),
        lambda r: subject(r).metadata,
    ),
    tree_case("missing-embedding-file", StimuliNotDownloadedError, _remove(CLIP), dataset),
    tree_case("missing-split-file", SplitError, _remove(SPLIT), split, "random_0"),
    # Inconsistent stimulus files.
    tree_case("embedding-missing-ids", FormatError, _drop_embedding_ids, dataset),
    tree_case(
        "duplicate-stimulus-names", FormatError, _dup_metadata_row, lambda r: subject(r).metadata
    ),
    tree_case("duplicate-embedding-ids", FormatError, _dup_embedding_id, dataset),
    tree_case("duplicate-beta-index", FormatError, _dup_beta_index, dataset),
    tree_case("embedding-truncated-hdf5", CorruptFileError, _damage(truncate, CLIP), dataset),
    # Malformed splits.
    tree_case(
        "split-not-json", SplitError, lambda r: write_split(r, "{not json"), split, "random_0.json"
    ),
    tree_case(
        "split-missing-keys",
        SplitError,
        lambda r: write_split(r, json.dumps({"name": "random_0"})),
        split,
        "random_0.json",
    ),
    tree_case(
        "split-train-test-overlap",
        SplitError,
        lambda r: edit_split(r, _split_overlap),
        split,
        "random_0.json",
    ),
    # Unknown subjects and escaping ids/paths.
    tree_case(
        "unknown-subject", SubjectNotFoundError, _nothing, lambda r: subject(r, "sub-99"), "sub-99"
    ),
    tree_case(
        "unknown-subject-dataset",
        SubjectNotFoundError,
        _nothing,
        lambda r: dataset(r, subject="sub-99", sessions=None),
        "sub-99",
    ),
    tree_case(
        "subject-id-escape",
        UnsafePathError,
        _nothing,
        lambda r: subject(r, "sub-01/../../etc"),
        "sub-01/../../etc",
    ),
    tree_case(
        "session-id-escape",
        UnsafePathError,
        _nothing,
        lambda r: subject(r).get_betas("ses-01/../../../x"),
        "ses-01/../../../x",
    ),
    tree_case(
        "dataset-session-escape",
        UnsafePathError,
        _nothing,
        lambda r: dataset(r, sessions=["../../x"]),
        "../../x",
    ),
    tree_case("split-pool-escape", SplitError, _nothing, lambda r: split(r, pool="../.."), "../.."),
    tree_case(
        "split-name-escape",
        SplitError,
        _nothing,
        lambda r: split(r, name="../../../etc/passwd"),
        "../../../etc/passwd",
    ),
    tree_case("trial-label-escape", FormatError, _escaping_label, lambda r: subject(r).metadata),
    tree_case(
        "config-session-escape",
        UnsafePathError,
        _nothing,
        lambda r: datamodule(r, sessions=["ses-01/../../../x"]),
        "ses-01/../../../x",
    ),
    tree_case(
        "config-split-escape",
        SplitError,
        _nothing,
        lambda r: datamodule(r, split="../../../etc/passwd"),
        "../../../etc/passwd",
    ),
    tmp_case("root-escape-dotdot", UnsafePathError, _root_escape("../../etc/passwd")),
    tmp_case("root-escape-absolute", UnsafePathError, _root_escape("/etc/passwd")),
    tmp_case("leadfield-subject-escape", UnsafePathError, _leadfield_escape),
    # The iterable stream reads the .nii.gz itself.
    tree_case(
        "trials-vs-volumes-stream", ShapeMismatchError, drop_trial_rows, stream, Path(BETAS).name
    ),
    tree_case("mask-grid-stream", ShapeMismatchError, _grid_changed(BRAIN), stream),
    tree_case("betas-nonfinite-stream", FormatError, put_nonfinite, stream, Path(BETAS).name),
    tree_case(
        "nifti-crc-stream", CorruptFileError, _damage(lambda p: flip_byte(p, -8), BETAS), stream
    ),
    # Integrity before data: the stream verifies a file in full before serving from it.
    tree_case(
        "nifti-corrupt-75pc-stream",
        CorruptFileError,
        _damage(lambda p: flip_at(p, 0.75, 2), BETAS),
        stream,
    ),
    tree_case(
        "nifti-corrupt-30pc-tau-train-zero-stream",
        CorruptFileError,
        _damage(lambda p: flip_at(p, 0.30), BETAS),
        lambda r: stream(r, split="tau", part="train", nan_policy="zero"),
    ),
    tree_case(
        "nifti-corrupt-30pc-raise-stream",  # corruption, not "NaN: pass nan_policy='zero'"
        CorruptFileError,
        _damage(lambda p: flip_at(p, 0.30), BETAS),
        stream,
    ),
    tree_case(
        "store-npy-truncated-after-open",
        CacheError,
        lambda r: f"{SES}.npy",
        lambda r: _store_truncated_after_open(r)(),
    ),
    # Tables and values that used to pass unchecked.
    tree_case(
        "trials-empty-file", FormatError, _damage(lambda p: p.write_text(""), TRIALS), dataset
    ),
    tree_case(
        "trials-header-only",
        FormatError,
        _edit_trials(lambda t: t.iloc[:0]),
        stream,
    ),
    tree_case(
        "metadata-empty-file",
        FormatError,
        _damage(lambda p: p.write_text(""), METADATA),
        lambda r: subject(r).metadata,
    ),
    tree_case(
        "beta-index-fraction", FormatError, _edit_trials(_beta_index("3.5")), dataset, "'3.5'"
    ),
    tree_case("beta-index-text", FormatError, _edit_trials(_beta_index("abc")), stream, "'abc'"),
    tree_case("embedding-nan", FormatError, _embedding_value(np.nan), dataset),
    tree_case("embedding-inf-stream", FormatError, _embedding_value(np.inf), stream),
    tree_case("embedding-not-vectors", FormatError, _embedding_vectorless, dataset),
    tree_case(
        "nc-threshold-leaves-no-voxel",
        ParameterError,
        _nothing,
        lambda r: dataset(r, nc_threshold=150),
        "nc_threshold=150",
    ),
    tree_case(
        "nc-threshold-leaves-no-voxel-betas",
        ParameterError,
        _nothing,
        lambda r: betas(r, nc_threshold=150),
        "nc_threshold=150",
    ),
    tree_case(
        "empty-voxel-mask",
        ParameterError,
        _nothing,
        lambda r: betas(r, mask=np.zeros(subject(r).get_n_voxels(), dtype=bool)),
        "empty",
    ),
    tree_case(
        "duplicate-subject",
        ParameterError,
        _nothing,
        lambda r: dataset(r, subject=[SUB, SUB]),
        SUB,
    ),
    tree_case(
        "duplicate-subject-stream",
        ParameterError,
        _nothing,
        lambda r: stream(r, subject=[SUB, SUB]),
        SUB,
    ),
    tree_case(
        "duplicate-session",
        ParameterError,
        _nothing,
        lambda r: dataset(r, sessions=[SES, SES]),
        SES,
    ),
    tree_case(
        "no-trial-selected",
        ParameterError,
        _nothing,
        lambda r: dataset(r, image_names=["no-such-image.png"]),
        "image_names",
    ),
    tree_case(
        "unknown-ood-type",
        ParameterError,
        _nothing,
        lambda r: stream(r, ood_types="ghost"),
        "ghost",
    ),
    tree_case(
        "unknown-verify-mode",
        ParameterError,
        _nothing,
        lambda r: stream(r, verify="sometimes"),
        "sometimes",
    ),
    tree_case(
        "unknown-nan-policy",
        ParameterError,
        _nothing,
        lambda r: dataset(r, nan_policy="ignore"),
        "ignore",
    ),
    tree_case(
        "float-voxel-mask",
        ParameterError,
        _nothing,
        lambda r: betas(r, mask=np.ones(subject(r).get_n_voxels())),
        "float64",
    ),
    tree_case(
        "config-val-fraction",
        ParameterError,
        _nothing,
        _datamodule_call(val_fraction=1.0),
        "val_fraction",
    ),
    tree_case(
        "config-batch-size", ParameterError, _nothing, _datamodule_call(batch_size=0), "batch_size"
    ),
    tree_case(
        "config-verify-mode",
        ParameterError,
        _nothing,
        _datamodule_call(streaming=True, verify="never"),
        "never",
    ),
    tree_case(
        "config-duplicate-subject",
        ParameterError,
        _nothing,
        _datamodule_call(subject=[SUB, SUB]),
        SUB,
    ),
    tree_case(
        "brain-mask-empty",
        FormatError,
        _damage(lambda p: rewrite_nifti(p, np.zeros_like), BRAIN),
        betas,
    ),
    tree_case(
        "nc-threshold-not-a-number",
        ParameterError,
        _nothing,
        lambda r: dataset(r, nc_threshold="high"),
        "high",
    ),
    tree_case(
        "sessions-of-unselected-subject",
        ParameterError,
        _nothing,
        lambda r: dataset(r, sessions={"sub-02": [SES]}),
        "sub-02",
    ),
    tree_case(
        "stimulus-image-damaged",
        CorruptFileError,
        _image_cut,
        lambda r: [item["image"] for item in stream(r, features=["CLIP", "image"])],
    ),
    # Values that describe no shard, no leadfield or no selection.
    tmp_case("shard-batch-size-zero", ShardingError, _value_case(_shard_batch_zero, "0")),
    tmp_case("grouped-batch-size-zero", ShardingError, _value_case(_grouped_batch_zero, "0")),
    tmp_case("meeg-batch-size-zero", ParameterError, _value_case(_meeg_module(batch_size=0), "0")),
    tmp_case(
        "meeg-length-negative", ParameterError, _value_case(_meeg_module(train_length=-5), "-5")
    ),
    tmp_case(
        "meeg-no-sources",
        ParameterError,
        _value_case(_meeg_module(leadfield={"n_sources": 0}), "n_sources"),
    ),
    tmp_case(
        "meeg-unknown-montage",
        ParameterError,
        _value_case(_meeg_module(leadfield={"montage": "nope"}), "nope"),
    ),
    tmp_case(
        "calibration-unknown-solver",
        ParameterError,
        _value_case(_calibration_module(posterior={"solver": "sLORETA"}), "sLORETA"),
    ),
    tmp_case(
        "calibration-eloreta-learned-noise",
        ParameterError,
        _value_case(
            _calibration_module(
                posterior={"solver": "eloreta", "noise_type": "adaptive_joint_learning"}
            ),
            "adaptive_joint_learning",
        ),
    ),
    tmp_case(
        "calibration-eloreta-normalised",
        ParameterError,
        _value_case(
            _calibration_module(
                posterior={"solver": "eloreta", "options": {"normalization": True}}
            ),
            "normalization",
        ),
    ),
    tmp_case("grid-unknown-solver", ParameterError, _grid_solver),
    tmp_case(
        "calibration-solver-option-unknown",
        ParameterError,
        _value_case(
            _calibration_module(posterior={"solver": "eloreta", "options": {"sigma": 1}}), "sigma"
        ),
    ),
    tmp_case(
        "calibration-sflex-width-negative",
        ParameterError,
        _value_case(
            _calibration_module(
                posterior={"solver": "gamma_map_sflex", "options": {"sigma": -0.01}}
            ),
            "sigma",
        ),
    ),
    tmp_case(
        "calibration-sflex-without-positions",
        ParameterError,
        _value_case(_sflex_without_positions, "src_coords"),
    ),
    tmp_case("calibration-runs-missing", DataNotDownloadedError, _runs_missing),
    tmp_case("connectome-subject-out-of-range", ParameterError, _value_case(_chunks_999, "999")),
    # M/EEG and connectome files.
    tmp_case("npz-object-array", UnsafePickleError, _npz_object),
    tmp_case("npz-truncated", CorruptFileError, _npz_truncated),
    tmp_case("hdf5-truncated-posterior-summary", CorruptFileError, _summary_truncated),
    tmp_case("posterior-variances-shape", FormatError, _summary_variances),
    tmp_case("calibration-sidecar-json", FormatError, _run_sidecar),
    tmp_case("hdf5-truncated-connectome", CorruptFileError, _h5_truncated),
    tmp_case("connectome-batches-voxels", ShapeMismatchError, _batches_disagree),
    tmp_case("connectome-batches-timepoints", ShapeMismatchError, _batches_timepoints),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_gives_named_error(
    fault: Fault, tiny_laion_root: Path, tmp_path: Path, record_property
):
    run_fault(fault, tiny_laion_root, tmp_path, record_property)


# -- integrity before data ----------------------------------------------------------------------------


STREAM_DAMAGE = {
    "2-bytes-at-75pc": ((0.75, 2), {}, 0),
    "1-byte-at-30pc-tau-train-zero-2-workers": (
        (0.30, 1),
        {"split": "tau", "part": "train", "nan_policy": "zero"},
        2,
    ),
}


@pytest.mark.parametrize("case", list(STREAM_DAMAGE))
def test_stream_serves_nothing_from_a_corrupt_file(
    case: str, tiny_laion_root: Path, tmp_path: Path, record_property
):
    (fraction, n_bytes), kwargs, workers = STREAM_DAMAGE[case]
    root = Path(shutil.copytree(tiny_laion_root, tmp_path / "tree"))
    flip_at(root / BETAS, fraction, n_bytes)
    clean, _ = stream_items(tiny_laion_root, 0, verify="off", **kwargs)
    unchecked, _ = stream_items(root, 0, verify="off", **kwargs)
    truth = {int(item["trial"]): item["betas"] for item in clean}
    wrong = sum(not np.array_equal(item["betas"], truth[int(item["trial"])]) for item in unchecked)
    assert wrong > 0, "without verification the damage must reach the items (else no test)"
    items, error = stream_items(root, workers, **kwargs)
    named = isinstance(error, CorruptFileError) and Path(BETAS).name in str(error)
    record_property("fault", "named" if named and not items else "silent")
    assert items == [] and named, (len(items), error)


def test_nan_of_a_corrupt_file_is_reported_as_corruption(tiny_laion_root: Path, tmp_path: Path):
    root = Path(shutil.copytree(tiny_laion_root, tmp_path / "tree"))
    flip_at(root / BETAS, 0.30)
    # unchecked, the damage shows as non-finite values or as the gzip trailer's CRC, whichever the
    # reader meets first; never as items
    with pytest.raises((FormatError, CorruptFileError)) as unchecked:
        stream(root, verify="off")
    assert re.search("non-finite|corrupt", str(unchecked.value)), unchecked.value
    with pytest.raises(CorruptFileError, match=Path(BETAS).name):
        stream(root)


def test_prepare_rebuilds_a_truncated_store_file(tiny_laion_root: Path, tmp_path: Path, caplog):
    from neurotorch.cli import main

    cache = tmp_path / "cache"
    args = [
        "prepare",
        "--data-dir",
        str(tiny_laion_root),
        "--session",
        SES,
        "--cache-dir",
        str(cache),
    ]
    assert main(args) == 0
    npy = next(cache.rglob(f"{SES}.npy"))
    truncate(npy, 0.6)
    with caplog.at_level("WARNING"):
        assert main(args) == 0
    assert caplog.text.count(f"{npy} is damaged") == 1
    np.testing.assert_array_equal(np.load(npy), nibabel_betas(tiny_laion_root))


def test_store_file_changed_in_place_is_rebuilt(tiny_laion_root: Path, tmp_path: Path):
    """Same size, new modification time, other bytes: the CRC-32 finds it."""
    store = build(tiny_laion_root, tmp_path / "cache")
    npy = store.session(SES).betas_path
    flip_byte(npy, -3)
    with pytest.raises(CacheError, match="CRC-32"):
        store.session(SES).open_betas()
    rebuilt = build(tiny_laion_root, tmp_path / "cache")
    np.testing.assert_array_equal(rebuilt.session(SES).open_betas(), nibabel_betas(tiny_laion_root))


# -- durability of the prepared store ---------------------------------------------------------------

WORKER = Path(__file__).resolve().parent / "faults" / "store_worker.py"
KILL_POINTS = [
    "read:3",  # while the headers are checked, before any file is written
    "read:60",  # half-way through the volumes
    "replace:1:before",  # before the voxel mask is moved into place
    "replace:2:before",  # before the betas array is moved into place
    "replace:2:after",  # betas in place, statistics and manifest not yet
    "replace:3:after",  # statistics in place, manifest not yet
    "replace:4:before",  # manifest written to its temporary name only
    "replace:4:after",  # complete
]


def betas_file(session: str = SES) -> str:
    return BETAS.replace(SES, session)


def nibabel_betas(root: Path, session: str = SES) -> np.ndarray:
    """Reference: nibabel's full read, masked with the brain mask in C order."""
    mask = np.asarray(nib.load(root / BRAIN).dataobj) != 0
    data = np.asarray(nib.load(root / betas_file(session)).dataobj)
    return np.ascontiguousarray(data[mask].T, dtype=np.float32)


def build(root: Path, cache: Path, sessions: list[str] | None = None, **kwargs):
    from neurotorch.data.fmri.store import build_store

    return build_store(root, SUB, sessions or [SES], cache_dir=cache, progress=False, **kwargs)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in folder.iterdir()
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.mark.slow
def test_store_survives_sigkill_at_any_step(tiny_laion_root: Path, tmp_path: Path, record_property):
    reference = nibabel_betas(tiny_laion_root)
    caches = {point: tmp_path / point.replace(":", "-") for point in KILL_POINTS}
    children = {
        point: subprocess.Popen(
            [sys.executable, str(WORKER), str(tiny_laion_root), str(cache), point],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for point, cache in caches.items()
    }
    problems = []
    for point, child in children.items():
        _, err = child.communicate(timeout=240)
        killed = child.returncode == -signal.SIGKILL
        store = build(tiny_laion_root, caches[point])  # the next run: reuses or rebuilds
        correct = np.array_equal(store.session(SES).open_betas(), reference)
        leftovers = temporary_files(caches[point])
        intact = killed and correct and not leftovers
        record_property("durability", "intact" if intact else "damaged")
        if not intact:
            problems.append(
                f"{point}: killed={killed} correct={correct} leftovers={leftovers} {err[-300:]!r}"
            )
    assert not problems, problems


@pytest.mark.slow
def test_two_processes_build_one_store(tiny_laion_root: Path, tmp_path: Path, record_property):
    cache = tmp_path / "cache"
    children = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(tiny_laion_root), str(cache), "slow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=240) for child in children]
    codes = [child.returncode for child in children]
    written = sum(int(out.rsplit(":", 1)[1]) for out, _ in outputs if "manifests written" in out)
    store = build(tiny_laion_root, cache)
    intact = (
        codes == [0, 0]
        and written == 1  # one process built the session, the other waited and reused it
        and np.array_equal(store.session(SES).open_betas(), nibabel_betas(tiny_laion_root))
        and not temporary_files(cache)
    )
    record_property("durability", "intact" if intact else "damaged")
    assert intact, (codes, written, [err[-300:] for _, err in outputs])


def _disk_full_at(real: Callable, at: int) -> Callable:
    """``real`` wrapped to raise ``OSError(ENOSPC)`` at its ``at``-th call (a plain function, so
    it also binds as a method)."""
    calls = [0]

    def writer(*args, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    return writer


def _fill_disk(monkeypatch, where: str) -> None:
    """Make the next build run out of space at ``where``."""
    if where == "reserve":  # when the betas array's blocks are allocated, before any row
        if not hasattr(os, "posix_fallocate"):
            pytest.skip("this platform has no posix_fallocate")
        monkeypatch.setattr(os, "posix_fallocate", _disk_full_at(os.posix_fallocate, 1))
    elif where == "rows":  # while the rows of the betas array are written (after its header)
        from neurotorch.data.fmri.store import _RowWriter

        monkeypatch.setattr(_RowWriter, "write_bytes", _disk_full_at(_RowWriter.write_bytes, 2))
    else:  # when a finished file is flushed to disk: 1 = betas, 2 = statistics, 3 = manifest
        monkeypatch.setattr(os, "fsync", _disk_full_at(os.fsync, int(where.split(":")[1])))


@pytest.mark.parametrize("where", ["reserve", "rows", "fsync:1", "fsync:2", "fsync:3"])
def test_disk_full_keeps_previous_store(
    where: str, tiny_laion_root: Path, tmp_path: Path, monkeypatch, record_property
):
    cache = tmp_path / "cache"
    previous = build(tiny_laion_root, cache)
    before = snapshot(previous.directory)
    _fill_disk(monkeypatch, where)
    with pytest.raises(CacheError) as failure:
        build(tiny_laion_root, cache, [SES, "ses-02"])
    monkeypatch.undo()
    after = snapshot(previous.directory)
    unchanged = all(after.get(name) == data for name, data in before.items())
    no_partial = "ses-02.json" not in after and not temporary_files(cache)
    named = "No space" in str(failure.value) and str(previous.directory) in str(failure.value)
    rebuilt = build(tiny_laion_root, cache, [SES, "ses-02"])
    correct = np.array_equal(
        rebuilt.session("ses-02").open_betas(), nibabel_betas(tiny_laion_root, "ses-02")
    )
    intact = unchanged and no_partial and named and correct
    record_property("durability", "intact" if intact else "damaged")
    assert intact, (unchanged, no_partial, str(failure.value), correct)


def test_corrupt_source_leaves_no_cache(tiny_laion_root: Path, tmp_path: Path, record_property):
    root = Path(shutil.copytree(tiny_laion_root, tmp_path / "tree"))
    cache = tmp_path / "cache"
    truncate(root / BETAS, 0.7)
    with pytest.raises(CorruptFileError, match=Path(BETAS).name):
        build(root, cache)
    cached = sorted(p.name for p in cache.rglob(f"{SES}*") if not p.name.endswith(".lock"))
    shutil.copy(tiny_laion_root / BETAS, root / BETAS)  # the repair: a good copy of the file
    correct = np.array_equal(
        build(root, cache).session(SES).open_betas(), nibabel_betas(tiny_laion_root)
    )
    intact = cached == [] and correct and not temporary_files(cache)
    record_property("durability", "intact" if intact else "damaged")
    assert intact, (cached, correct)


def test_to_nifti_disk_full_keeps_previous_file(
    tiny_laion_root: Path, tmp_path: Path, monkeypatch, record_property
):
    sub = subject(tiny_laion_root)
    path = tmp_path / "out" / "values.nii.gz"
    path.parent.mkdir()
    values = np.arange(sub.get_n_voxels(), dtype=np.float32)
    sub.to_nifti(values, path)
    previous = path.read_bytes()

    def full_disk(image, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nib, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        sub.to_nifti(values * 2, path)
    intact = path.read_bytes() == previous and [p.name for p in path.parent.iterdir()] == [
        path.name
    ]
    record_property("durability", "intact" if intact else "damaged")
    assert intact


# -- documented repairs -------------------------------------------------------------------------------


def _with_nonfinite(tiny_laion_root: Path, tmp_path: Path) -> tuple[Path, np.ndarray]:
    root = Path(shutil.copytree(tiny_laion_root, tmp_path / "tree"))
    put_nonfinite(root)
    return root, nibabel_betas(root)


@pytest.mark.parametrize("reader", ["nibabel", "streaming", "store"])
@pytest.mark.parametrize("policy", ["zero", "keep"])
def test_nan_policy_repairs(reader: str, policy: str, tiny_laion_root: Path, tmp_path: Path):
    root, reference = _with_nonfinite(tiny_laion_root, tmp_path)
    assert np.count_nonzero(~np.isfinite(reference)) == 2
    if reader == "store":
        got = np.asarray(
            build(root, tmp_path / "cache", nan_policy=policy).session(SES).open_betas()
        )
    else:
        got = betas(root, streaming=reader == "streaming", nan_policy=policy)
    expected = np.where(np.isfinite(reference), reference, 0) if policy == "zero" else reference
    np.testing.assert_array_equal(got, expected)


def test_store_keys_cache_on_nan_policy(tiny_laion_root: Path, tmp_path: Path):
    """A store built with nan_policy="zero" is never served to a caller asking for "keep"."""
    root, reference = _with_nonfinite(tiny_laion_root, tmp_path)
    cache = tmp_path / "cache"
    zeroed = np.asarray(build(root, cache, nan_policy="zero").session(SES).open_betas())
    kept = np.asarray(build(root, cache, nan_policy="keep").session(SES).open_betas())
    assert np.count_nonzero(~np.isfinite(zeroed)) == 0
    np.testing.assert_array_equal(kept, reference)
    with pytest.raises(FormatError, match="2 non-finite"):
        build(root, cache)


def test_leadfield_pickled_info_is_skipped(tmp_path: Path):
    """CaliBrain's pickled ``info`` entry is skipped (listed), the leadfield itself read."""
    path = tmp_path / "fsaverage_fixed_leadfield.npz"
    info = np.empty((), dtype=object)
    info[()] = {"sfreq": 250.0}
    leadfield = np.arange(24, dtype=np.float64).reshape(4, 6)
    np.savez(path, leadfield=leadfield, info=info, src_coords=np.zeros((6, 3)))
    data = load_leadfield(path)
    assert data.skipped_keys == ["info"]
    np.testing.assert_array_equal(data.leadfield, leadfield)
