"""Bad M/EEG input, case by case, through the framework of ``tests/faults``: physically impossible
leadfields and posteriors, damaged NPZ and HDF5 files, grid values and run manifests. Every case
must raise a named error of its class that names the file, key, row or value at fault."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from faults.framework import Fault, flip_byte, run_fault, tmp_case

from neurotorch.errors import (
    CorruptFileError,
    DatasetExistsError,
    FormatError,
    ImplausibleDataError,
    NonFiniteError,
    ParameterError,
    ShapeMismatchError,
    UnsafePathError,
)

Case = tuple[Callable[[], object], str]


# -- leadfields ---------------------------------------------------------------------------------
def _leadfield_npz(tmp: Path, name: str = "s_fixed_leadfield.npz", **overrides) -> Path:
    """A valid EEG leadfield NPZ in µV/nAm, with ``overrides`` applied (``None`` drops a key)."""
    rng = np.random.default_rng(0)
    arrays = {
        "leadfield": rng.standard_normal((6, 9)),
        "src_coords": rng.standard_normal((9, 3)) * 0.05,
        "sensor_kind": 2,
        "sensor_units": 107,
        "sensor_unitmult": -6,
        "coil_type": 1,
    }
    arrays.update(overrides)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / name
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def _load(path: Path) -> object:
    from neurotorch.meeg.leadfield import load_leadfield_npz

    return load_leadfield_npz(path)


def _leadfield_case(culprit: str | None = None, **overrides) -> Callable[[Path], Case]:
    def make(tmp: Path) -> Case:
        path = _leadfield_npz(tmp, **overrides)
        return (lambda: _load(path)), culprit or path.name

    return make


def _zero_leadfield_in_memory() -> object:
    from neurotorch.meeg.leadfield import LeadfieldData

    return LeadfieldData(np.zeros((4, 5)), sensor_kind=2)


def _mismatched_size(tmp: Path) -> Case:
    from neurotorch.meeg.leadfield import LeadfieldSpec

    _leadfield_npz(tmp / "1284src_leadfield", name="s_fixed_leadfield.npz")
    spec = LeadfieldSpec(data_dir=str(tmp), subject="s", n_sources=12)
    return spec.build, "n_sources=12"


def _without_positions(tmp: Path) -> Case:
    from neurotorch.meeg.leadfield import LeadfieldBuilder

    _leadfield_npz(tmp, name="s_fixed_leadfield.npz", src_coords=None)
    return (lambda: LeadfieldBuilder(tmp).get_leadfield("s")), "require_src_coords"


def _damaged_npz(region: str) -> Callable[[Path], Case]:
    """A leadfield NPZ with one byte flipped in its zip signature, central directory or end
    record."""

    def make(tmp: Path) -> Case:
        path = _leadfield_npz(tmp)
        data = path.read_bytes()
        offset = {
            "signature": 1,  # "PK\x03\x04" -> not a zip archive (np.load blamed pickles)
            "central-directory": data.rfind(b"PK\x01\x02") + 10,  # the compression method
            "end-record": data.rfind(b"PK\x05\x06") + 16,  # where the directory starts
        }[region]
        flip_byte(path, offset)
        return (lambda: _load(path)), path.name

    return make


def _damaged_run_member(tmp: Path) -> Case:
    """A compressed aggregated run whose x_true member fails its CRC."""
    from neurotorch.meeg.summaries import read_aggregated_run

    path = tmp / "s_BMN_run00000001_seed1.npz"
    np.savez_compressed(
        path,
        x_true=np.arange(60.0).reshape(6, 10),
        x_hat=np.zeros((6, 10)),
        posterior_var=np.ones(6),
    )
    data = bytearray(path.read_bytes())
    data[data.find(b"x_true.npy") + 40] ^= 0xFF  # inside the deflated member
    path.write_bytes(bytes(data))
    return (lambda: read_aggregated_run(path)), path.name


# -- posterior summaries and runs ----------------------------------------------------------------
def _summary(tmp: Path, cov: np.ndarray, n_sources: int, k: int = 1) -> Path:
    rng = np.random.default_rng(1)
    shape = (n_sources, 5) if k == 1 else (n_sources, k, 5)
    path = tmp / "posterior_summary_run00000001_seed1.h5"
    with h5py.File(path, "w") as f:
        f["x_true"], f["x_hat"] = rng.standard_normal(shape), rng.standard_normal(shape)
        f["posterior_cov"] = cov
        f.attrs["metadata_json"] = json.dumps({"orientation_type": "fixed" if k == 1 else "free"})
    return path


def _read_run(path: Path) -> object:
    from neurotorch.meeg.summaries import read_run

    return read_run(path)


def _negative_variance(tmp: Path) -> Case:
    path = _summary(tmp, np.diag([1.0, 2.0, -0.5, 1.0]), 4)
    return (lambda: _read_run(path)), path.name


def _indefinite_block(tmp: Path) -> Case:
    cov = np.eye(6)
    cov[0, 1] = cov[1, 0] = 3.0  # the first 2x2 block has eigenvalues 4 and -2
    path = _summary(tmp, cov, 3, k=2)
    return (lambda: _read_run(path)), "posterior_cov"


def _negative_run_variance(tmp: Path) -> Case:
    path = tmp / "s_BMN_run00000001_seed1.npz"
    np.savez(path, x_true=np.ones((3, 4)), x_hat=np.ones((3, 4)), posterior_var=[1.0, -2.0, 1.0])
    return (lambda: _read_run(path)), path.name


def _damaged_summary(what: str) -> Callable[[Path], Case]:
    """An HDF5 summary whose root object header (``"header"``) or metadata attribute
    (``"attribute"``) is damaged."""

    def make(tmp: Path) -> Case:
        path = _summary(tmp, np.eye(4), 4)
        data = bytearray(path.read_bytes())
        if what == "header":
            data[96:160] = bytes(64)  # the root group's object header
        else:
            start = data.find(b"metadata_json")
            data[start - 24 : start] = b"\xff" * 24  # the attribute message's header
        path.write_bytes(bytes(data))
        return (lambda: _read_run(path)), path.name

    return make


def _damaged_structure(signature: bytes) -> Callable[[Path], Case]:
    """A summary in h5py's default format (CaliBrain's) whose B-tree (``TREE``), local heap
    (``HEAP``) or symbol-table node (``SNOD``) signature is damaged: h5py raises RuntimeError."""

    def make(tmp: Path) -> Case:
        path = _summary(tmp, np.eye(4), 4)
        data = bytearray(path.read_bytes())
        data[data.find(signature)] ^= 0xFF
        path.write_bytes(bytes(data))
        return (lambda: _read_run(path)), path.name

    return make


def _damaged_written_summary(tmp: Path) -> Case:
    """A summary written by neurotorch with one byte of its ``x_true`` values flipped: found by
    the arrays' checksums instead of read as a wrong value."""
    from neurotorch.meeg.grid import write_posterior_summary

    rng = np.random.default_rng(2)
    run = {
        "x_true": rng.standard_normal((4, 6)),
        "x_hat": np.zeros((4, 6)),
        "posterior_cov": np.eye(4),
    }
    path = tmp / "posterior_summary_run00000001_seed1.h5"
    write_posterior_summary(path, run, q_basis=None, metadata={"orientation_type": "fixed"})
    data = bytearray(path.read_bytes())
    data[data.find(run["x_true"].tobytes()) + 21] ^= 0xFF
    path.write_bytes(bytes(data))
    return (lambda: _read_run(path)), path.name


def _coverage(var: list[float]) -> Callable[[], object]:
    def call() -> object:
        from neurotorch.meeg.calibration import coverage_curve

        return coverage_curve(np.zeros((3, 4)), np.zeros((3, 4)), np.asarray(var))

    return call


def _ellipsoids_indefinite() -> object:
    from neurotorch.meeg.calibration import ellipsoid_coverage_curve

    blocks = np.tile(np.eye(2), (3, 1, 1))
    blocks[2] = [[1.0, 2.0], [2.0, 1.0]]
    return ellipsoid_coverage_curve(np.zeros((3, 2, 4)), np.zeros((3, 2, 4)), blocks)


def _posterior_std_negative() -> object:
    from neurotorch.meeg.metrics import mean_posterior_std

    return mean_posterior_std(np.array([1.0, -4.0]))


# -- the grid and its manifest -------------------------------------------------------------------
GRID = {"subject": ["s"], "orientation_type": ["fixed"], "nnz": [1], "alpha_SNR": [0.5]}


def _builder(tmp: Path):
    from neurotorch.meeg.leadfield import LeadfieldBuilder

    _leadfield_npz(tmp / "leadfields", name="s_fixed_leadfield.npz")
    return LeadfieldBuilder(tmp / "leadfields")


def _grid_value(key: str, value: object, culprit: str) -> Callable[[Path], Case]:
    def make(tmp: Path) -> Case:
        from neurotorch.meeg.grid import run_grid

        builder = _builder(tmp)
        return (lambda: run_grid(builder, tmp / "runs", {**GRID, key: value})), culprit

    return make


def _grid_into_a_full_folder(tmp: Path) -> Case:
    from neurotorch.meeg.grid import run_grid

    builder, mine = _builder(tmp), tmp / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    return (lambda: run_grid(builder, mine, GRID)), "mine"


def _grid_engine(**engine: object) -> Callable[[Path], Case]:
    def make(tmp: Path) -> Case:
        from neurotorch.meeg.grid import run_grid

        builder = _builder(tmp)
        culprit = next(iter(engine))
        return (lambda: run_grid(builder, tmp / "runs", GRID, **engine)), culprit

    return make


def _grid_only_out_of_range(tmp: Path) -> Case:
    from neurotorch.meeg.grid import plan_grid

    plan = plan_grid(_builder(tmp), tmp / "runs", GRID, n_runs=2)
    return (lambda: plan.run(only=2)), "only"


def _grid_changed_mid_run(tmp: Path) -> Case:
    """A grid started (one unit run), then planned again with another number of runs."""
    from neurotorch.meeg.grid import plan_grid

    builder = _builder(tmp)
    plan_grid(builder, tmp / "runs", GRID, n_runs=2).run(only=0, progress=False)
    return (lambda: plan_grid(builder, tmp / "runs", GRID, n_runs=3)), "runs.units"


def _manifest(edit: Callable[[pd.DataFrame, Path], pd.DataFrame]) -> Callable[[Path], Case]:
    """A one-run grid whose manifest is then edited by ``edit(manifest, folder)``."""

    def make(tmp: Path) -> Case:
        from neurotorch.meeg.grid import MANIFEST, aggregate_runs, run_grid

        manifest = run_grid(_builder(tmp), tmp / "runs", GRID, n_runs=2)
        edit(manifest, tmp).to_csv(tmp / "runs" / MANIFEST, index=False)
        return (lambda: aggregate_runs(tmp / "runs" / MANIFEST)), "Row 3"

    return make


def _escape(manifest: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    return manifest.assign(posterior_summary=[manifest.posterior_summary[0], "../other/x.h5"])


def _outside(manifest: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    outside = str(tmp / "leadfields" / "x.h5")
    return manifest.assign(posterior_summary=[manifest.posterior_summary[0], outside])


def _two_headers(manifest: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    header = pd.DataFrame([manifest.columns], columns=manifest.columns)
    return pd.concat([manifest.iloc[:1], header, manifest.iloc[1:]], ignore_index=True)


# -- settings ------------------------------------------------------------------------------------
def _spec(cls_name: str, **fields) -> Callable[[], object]:
    def call() -> object:
        from neurotorch.meeg.leadfield import LeadfieldSpec
        from neurotorch.meeg.solvers import PosteriorSpec

        return {"leadfield": LeadfieldSpec, "posterior": PosteriorSpec}[cls_name](**fields)

    return call


def _mapping_typo(kind: str) -> Callable[[], object]:
    """A mistyped key in the mapping a dataset or DataModule takes for its settings."""

    def call() -> object:
        from neurotorch.data.meeg.calibration import CalibrationDataset
        from neurotorch.data.meeg.simulation import resolve_leadfield

        if kind == "leadfield":
            return resolve_leadfield({"sensr": "mag", "n_sources": 12})
        leadfield = resolve_leadfield({"retrieve_mode": "random", "n_sources": 12, "n_sensors": 6})
        return CalibrationDataset(leadfield, posterior={"solvr": "BMN"}, length=2, nnz=2)

    return call


def _value(call: Callable[[], object], culprit: str) -> Callable[[Path], Case]:
    return lambda tmp: (call, culprit)


FAULTS: list[Fault] = [
    # physically impossible leadfields, named with their file
    tmp_case(
        "leadfield-all-zero", ImplausibleDataError, _leadfield_case(leadfield=np.zeros((6, 9)))
    ),
    tmp_case(
        "leadfield-zero-in-memory",
        ImplausibleDataError,
        _value(_zero_leadfield_in_memory, "all zeros"),
    ),
    # each case gives only the codes one check compares (the checks overlap)
    tmp_case(
        "leadfield-eeg-in-tesla",
        ImplausibleDataError,
        _leadfield_case(sensor_units=112, coil_type=None),
    ),
    tmp_case(
        "leadfield-meg-in-volt",
        ImplausibleDataError,
        _leadfield_case(sensor_kind=1, coil_type=3022),
    ),
    tmp_case(
        "leadfield-eeg-gradiometer-coil",
        ImplausibleDataError,
        _leadfield_case(coil_type=3012, sensor_units=None, sensor_unitmult=None),
    ),
    tmp_case(
        "leadfield-meg-electrode-coil",
        ImplausibleDataError,
        _leadfield_case(sensor_kind=1, sensor_units=112, sensor_unitmult=-15),
    ),
    tmp_case(
        "leadfield-gradiometer-in-tesla",
        ImplausibleDataError,
        _leadfield_case(sensor_kind=1, sensor_units=112, sensor_unitmult=-15, coil_type=3012),
    ),
    # FIFF codes decide the scaling on load: one integer each, never truncated or dropped
    tmp_case(
        "leadfield-fractional-unit-code",
        FormatError,
        _leadfield_case("sensor_units", sensor_units=107.9),
    ),
    tmp_case(
        "leadfield-unit-code-per-channel",
        FormatError,
        _leadfield_case("sensor_units", sensor_units=np.array([107, 112])),
    ),
    tmp_case(
        "leadfield-unit-as-text",
        FormatError,
        _leadfield_case("sensor_units", sensor_units=np.array("V")),
    ),
    tmp_case(
        "leadfield-fractional-multiplier",
        FormatError,
        _leadfield_case("sensor_unitmult", sensor_unitmult=-5.5),
    ),
    tmp_case("leadfield-size-mismatch", ShapeMismatchError, _mismatched_size),
    tmp_case("leadfield-without-positions", FormatError, _without_positions),
    # damaged NPZ files
    tmp_case("npz-damaged-signature", CorruptFileError, _damaged_npz("signature")),
    tmp_case("npz-damaged-central-directory", CorruptFileError, _damaged_npz("central-directory")),
    tmp_case("npz-damaged-end-record", CorruptFileError, _damaged_npz("end-record")),
    tmp_case("npz-member-fails-crc", CorruptFileError, _damaged_run_member),
    # impossible posteriors, in files and as arguments
    tmp_case("summary-negative-variance", ImplausibleDataError, _negative_variance),
    tmp_case("summary-indefinite-block", ImplausibleDataError, _indefinite_block),
    tmp_case("run-negative-variance", ImplausibleDataError, _negative_run_variance),
    tmp_case("summary-damaged-object-header", CorruptFileError, _damaged_summary("header")),
    tmp_case("summary-damaged-attribute", CorruptFileError, _damaged_summary("attribute")),
    tmp_case("summary-damaged-values", CorruptFileError, _damaged_written_summary),
    tmp_case("summary-damaged-btree", CorruptFileError, _damaged_structure(b"TREE")),
    tmp_case("summary-damaged-local-heap", CorruptFileError, _damaged_structure(b"HEAP")),
    tmp_case("summary-damaged-symbol-node", CorruptFileError, _damaged_structure(b"SNOD")),
    tmp_case(
        "coverage-negative-variance",
        ImplausibleDataError,
        _value(_coverage([1.0, -1.0, 1.0]), "negative"),
    ),
    tmp_case("coverage-nan-variance", NonFiniteError, _value(_coverage([1.0, np.nan, 1.0]), "NaN")),
    tmp_case(
        "coverage-indefinite-blocks",
        ImplausibleDataError,
        _value(_ellipsoids_indefinite, "semi-definite"),
    ),
    tmp_case(
        "posterior-std-negative", ImplausibleDataError, _value(_posterior_std_negative, "negative")
    ),
    # grid values and folders
    tmp_case("grid-fractional-nnz", ParameterError, _grid_value("nnz", [2.7], "2.7")),
    tmp_case("grid-alpha-above-one", ParameterError, _grid_value("alpha_SNR", [1.5], "1.5")),
    tmp_case(
        "grid-orientation-typo", ParameterError, _grid_value("orientation_type", "fixd", "fixd")
    ),
    tmp_case("grid-into-a-full-folder", DatasetExistsError, _grid_into_a_full_folder),
    tmp_case("grid-fractional-workers", ParameterError, _grid_engine(workers=1.5)),
    tmp_case("grid-zero-workers", ParameterError, _grid_engine(workers=0)),
    tmp_case("grid-unit-index-out-of-range", ParameterError, _grid_only_out_of_range),
    tmp_case("grid-changed-against-its-work-folder", DatasetExistsError, _grid_changed_mid_run),
    # manifests
    tmp_case("manifest-path-escapes", UnsafePathError, _manifest(_escape)),
    tmp_case("manifest-absolute-path-outside", UnsafePathError, _manifest(_outside)),
    tmp_case("manifest-two-headers", FormatError, _manifest(_two_headers)),
    # settings
    tmp_case(
        "leadfield-spec-dir-with-simulate",
        ParameterError,
        _value(_spec("leadfield", data_dir="x", retrieve_mode="simulate"), "retrieve_mode"),
    ),
    tmp_case(
        "leadfield-spec-sensor-typo",
        ParameterError,
        _value(_spec("leadfield", sensor="megg"), "megg"),
    ),
    tmp_case(
        "posterior-spec-scale-with-learned-noise",
        ParameterError,
        _value(
            _spec("posterior", noise_type="adaptive_joint_learning", noise_var_scale=2.0),
            "noise_var_scale",
        ),
    ),
    tmp_case(
        "leadfield-mapping-key-typo", ParameterError, _value(_mapping_typo("leadfield"), "sensr")
    ),
    tmp_case(
        "posterior-mapping-key-typo", ParameterError, _value(_mapping_typo("posterior"), "solvr")
    ),
    tmp_case(
        "posterior-spec-gamma-typo",
        ParameterError,
        _value(_spec("posterior", gamma="lern"), "lern"),
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_meeg_fault_is_named(fault: Fault, tiny_laion_root: Path, tmp_path: Path, record_property):
    run_fault(fault, tiny_laion_root, tmp_path, record_property)
