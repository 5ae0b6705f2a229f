"""Fault injection of the connectome family: damaged batch metadata, duplicated subjects, atlases
that miss the brain, devices that do not exist, output folders neurotorch does not own, a full
disk while writing maps, and bad arguments.

Each case writes its input from scratch in an empty folder, calls what a user would call, and
records how it failed (`tests/faults/framework.py`): a named error of the expected class whose
message names the file, key or value at fault.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import h5py
import nibabel as nib
import numpy as np
import pytest
from faults.framework import Fault, run_fault, tmp_case

from neurotorch.errors import (
    CorruptFileError,
    DatasetExistsError,
    DuplicateSubjectError,
    FormatError,
    OutputWriteError,
    ParameterError,
    ShapeMismatchError,
)

SHAPE = (3, 3, 2)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
N_TIMEPOINTS = 6
Case = tuple[Callable[[], object], str]


def neurotorch_batch(path: Path, *, first_id: int = 0, n_subjects: int = 2, seed: int = 0) -> Path:
    """A batch file as neurotorch writes it: subject ids, checksums, metadata digest."""
    from neurotorch.connectome.writer import write_batch

    rng = np.random.default_rng(seed)
    indices = np.argwhere(np.ones(SHAPE, dtype=bool))
    series = [rng.standard_normal((N_TIMEPOINTS, len(indices))) for _ in range(n_subjects)]
    ids = [f"sub-{first_id + k:02d}" for k in range(n_subjects)]
    return write_batch(
        path,
        series,
        ids,
        mask_indices=indices,
        mask_affine=AFFINE,
        mask_shape=SHAPE,
        n_timepoints=N_TIMEPOINTS,
    )


def lacuna_batch(path: Path, *, seed: int = 0, **changes) -> Path:
    """A batch file as Lacuna's converter writes it: (3, n) indices, no ids, no checksums, no
    digest; ``changes`` replace datasets or attributes before writing."""
    rng = np.random.default_rng(seed)
    indices = np.argwhere(np.ones(SHAPE, dtype=bool)).T
    content = {
        "timeseries": rng.standard_normal((2, N_TIMEPOINTS, indices.shape[1])).astype(np.float32),
        "mask_indices": indices,
        "mask_affine": AFFINE,
        "n_subjects": 2,
        "n_timepoints": N_TIMEPOINTS,
        "n_voxels": indices.shape[1],
        "mask_shape": np.asarray(SHAPE),
    }
    content.update(changes)
    with h5py.File(path, "w") as f:
        for key in ("timeseries", "mask_indices", "mask_affine"):
            f.create_dataset(key, data=content[key])
        for key in ("n_subjects", "n_timepoints", "n_voxels", "mask_shape", "space"):
            if key in content:
                f.attrs[key] = content[key]
    return path


def open_batches(path: Path):
    from neurotorch.connectome import ConnectomeBatches

    return ConnectomeBatches(path)


def flip_after(path: Path, text: bytes, offset: int, n: int = 4) -> None:
    """XOR ``n`` bytes at ``offset`` from the first occurrence of ``text`` in the file."""
    data = bytearray(path.read_bytes())
    start = data.index(text) + offset
    data[start : start + n] = bytes(b ^ 0xFF for b in data[start : start + n])
    path.write_bytes(bytes(data))


# -- batch metadata -----------------------------------------------------------------------------


def _object_header_damaged(tmp: Path) -> Case:
    path = neurotorch_batch(tmp / "c_chunk_000.h5")
    flip_after(path, b"n_subjects", -16)  # before the attribute: the file no longer opens
    return (lambda: open_batches(path)), path.name


def _attribute_message_damaged(tmp: Path) -> Case:
    path = neurotorch_batch(tmp / "c_chunk_000.h5")
    flip_after(path, b"n_subjects", 20)  # its datatype message: h5py raises RuntimeError
    return (lambda: open_batches(path)), "'n_subjects'"


def _attribute_value_damaged(tmp: Path) -> Case:
    path = neurotorch_batch(tmp / "c_chunk_000.h5")
    with h5py.File(path, "a") as f:  # as a bit flip would, with the data left consistent
        f.attrs["description"] = "changed after writing"
    return (lambda: open_batches(path)), "metadata_sha256"


def _lacuna_case(**changes) -> Callable[[Path], Case]:
    def make(tmp: Path) -> Case:
        path = lacuna_batch(tmp / "connectome_batch_000.h5", **changes)
        return (lambda: open_batches(path)), path.name

    return make


def _affine_nan() -> dict:
    affine = AFFINE.copy()
    affine[1, 3] = np.nan
    return {"mask_affine": affine}


def _affine_singular() -> dict:
    affine = AFFINE.copy()
    affine[2, 2] = 0.0
    return {"mask_affine": affine}


def _indices_outside() -> dict:
    indices = np.argwhere(np.ones(SHAPE, dtype=bool)).T
    indices[0, -1] = 7
    return {"mask_indices": indices}


def _indices_repeated() -> dict:
    indices = np.argwhere(np.ones(SHAPE, dtype=bool)).T
    indices[:, 1] = indices[:, 0]
    return {"mask_indices": indices}


def _indices_fractional() -> dict:
    return {"mask_indices": np.argwhere(np.ones(SHAPE, dtype=bool)).T + 0.5}


# -- duplicated subjects ------------------------------------------------------------------------


def _copied_batch_file(tmp: Path) -> Case:
    neurotorch_batch(tmp / "c_chunk_000.h5")
    neurotorch_batch(tmp / "c_chunk_001.h5", first_id=2, seed=1)
    shutil.copy(tmp / "c_chunk_001.h5", tmp / "c_chunk_002.h5")  # the same file twice
    return (lambda: open_batches(tmp)), "c_chunk_002.h5"


def _copied_lacuna_file(tmp: Path) -> Case:
    lacuna_batch(tmp / "connectome_batch_000.h5")
    shutil.copy(tmp / "connectome_batch_000.h5", tmp / "connectome_batch_001.h5")
    return (lambda: open_batches(tmp)), "connectome_batch_001.h5"


def _repeated_id_across_files(tmp: Path) -> Case:
    neurotorch_batch(tmp / "c_chunk_000.h5")
    neurotorch_batch(tmp / "c_chunk_001.h5", first_id=1, seed=1)  # sub-01 again, other data
    return (lambda: open_batches(tmp)), "sub-01"


def _repeated_id_in_file(tmp: Path) -> Case:
    from neurotorch.connectome.writer import write_batch

    indices = np.argwhere(np.ones(SHAPE, dtype=bool))
    path = write_batch(
        tmp / "c_chunk_000.h5",
        [np.ones((N_TIMEPOINTS, len(indices))), np.zeros((N_TIMEPOINTS, len(indices)))],
        ["sub-07", "sub-07"],
        mask_indices=indices,
        mask_affine=AFFINE,
        mask_shape=SHAPE,
        n_timepoints=N_TIMEPOINTS,
    )
    return (lambda: open_batches(path)), "sub-07"


# -- lesion network mapping ---------------------------------------------------------------------


def _result(tmp: Path):
    from neurotorch.connectome import network_map

    tmp.mkdir(exist_ok=True)
    neurotorch_batch(tmp / "c_chunk_000.h5")
    neurotorch_batch(tmp / "c_chunk_001.h5", first_id=2, seed=1)
    lesion = np.zeros(int(np.prod(SHAPE)), dtype=bool)
    lesion[[3, 4]] = True
    return network_map({"les": lesion}, tmp)


def _atlas_case(labels: np.ndarray, affine: np.ndarray) -> Callable[[Path], Case]:
    def make(tmp: Path) -> Case:
        from neurotorch.connectome import Atlas

        result = _result(tmp)
        path = tmp / "atlas.nii.gz"
        nib.save(nib.Nifti1Image(labels.astype(np.int16), affine), path)
        return (lambda: Atlas.from_files(path, {1: "one"}).aggregate(result)), path.name

    return make


_FAR_AWAY = AFFINE.copy()
_FAR_AWAY[:3, 3] = 500.0  # an atlas 50 cm from the brain


def _device(name: str) -> Callable[[Path], Case]:
    def make(tmp: Path) -> Case:
        from neurotorch.connectome import network_map

        neurotorch_batch(tmp / "c_chunk_000.h5")
        lesion = np.zeros(int(np.prod(SHAPE)), dtype=bool)
        lesion[0] = True
        return (lambda: network_map({"les": lesion}, tmp, device=name)), name

    return make


def _network_map_argument(**kwargs) -> Callable[[Path], Case]:
    def make(tmp: Path) -> Case:
        from neurotorch.connectome import network_map

        neurotorch_batch(tmp / "c_chunk_000.h5")
        lesion = np.zeros(int(np.prod(SHAPE)), dtype=bool)
        lesion[0] = True
        (key, value), *_ = kwargs.items()
        return (lambda: network_map({"les": lesion}, tmp, **kwargs)), key

    return make


def _lesions_named_twice(tmp: Path) -> Case:
    from neurotorch.connectome import load_lesions

    neurotorch_batch(tmp / "c_chunk_000.h5")
    for folder in ("a", "b"):
        (tmp / folder).mkdir()
        nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), AFFINE), tmp / folder / "les.nii.gz")
    files = [tmp / "a" / "les.nii.gz", tmp / "b" / "les.nii.gz"]
    return (lambda: load_lesions(files, open_batches(tmp))), "les"


def _empty_lesion(tmp: Path) -> Case:
    from neurotorch.connectome import load_lesions

    neurotorch_batch(tmp / "c_chunk_000.h5")
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFFINE), tmp / "empty.nii.gz")
    return (lambda: load_lesions([tmp / "empty.nii.gz"], open_batches(tmp))), "is empty"


# -- outputs ------------------------------------------------------------------------------------


def _out_not_ours(tmp: Path) -> Case:
    result = _result(tmp / "c")
    out = tmp / "results"
    out.mkdir()
    (out / "summary.csv").write_text("the user's own table\n")
    return (lambda: result.save(out)), "results"


def _out_previous_without_overwrite(tmp: Path) -> Case:
    result = _result(tmp / "c")
    result.save(tmp / "maps")
    return (lambda: result.save(tmp / "maps")), "overwrite"


def _out_previous_with_user_file(tmp: Path) -> Case:
    result = _result(tmp / "c")
    result.save(tmp / "maps")
    (tmp / "maps" / "notes.txt").write_text("mine\n")
    return (lambda: result.save(tmp / "maps", overwrite=True)), "notes.txt"


def _disk_full(call: Callable[[object, Path], object], culprit: str) -> Callable[[Path], Case]:
    """``call(result, tmp)`` with nibabel failing as on a full disk from the third image on."""

    def make(tmp: Path) -> Case:
        result = _result(tmp / "c")
        real_save, calls = nib.save, []

        def full_disk(image, filename):
            calls.append(filename)
            if len(calls) > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_save(image, filename)

        def run() -> object:
            with mock.patch.object(nib, "save", full_disk):
                return call(result, tmp)

        return run, culprit

    return make


def _save_maps(result, tmp: Path) -> object:
    return result.save(tmp / "maps")


def _t_map_to_nifti(result, tmp: Path) -> object:
    for kind in ("meanz", "r", "t"):
        result.to_nifti(kind, 0, path=tmp / f"les_{kind}.nii.gz")


def _unsafe_table_name(tmp: Path) -> Case:
    import pandas as pd

    result = _result(tmp / "c")
    return (lambda: result.save(tmp / "maps", tables={"../x": pd.DataFrame()})), "../x"


def _convert_over_foreign_batch(tmp: Path) -> Case:
    from neurotorch.connectome import convert_timeseries

    out = tmp / "gsp"
    out.mkdir()
    lacuna_batch(out / "gsp1000_chunk_000.h5")  # another connectome's first batch file
    rng = np.random.default_rng(0)
    series = tmp / "sub-01_bold.nii.gz"
    nib.save(nib.Nifti1Image(rng.standard_normal((*SHAPE, N_TIMEPOINTS)), AFFINE), series)
    mask = tmp / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), AFFINE), mask)
    return (lambda: convert_timeseries([series], mask, out)), "gsp1000_chunk_000.h5"


def _parcellation_damaged(tmp: Path) -> Case:
    from neurotorch.connectome import Parcellation

    neurotorch_batch(tmp / "c_chunk_000.h5")
    path = tmp / "parcels.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.int16), AFFINE), path)
    path.write_bytes(path.read_bytes()[:60])
    return (lambda: Parcellation.from_image(path, open_batches(tmp))), path.name


FAULTS: list[Fault] = [
    # damaged or implausible batch metadata (read_batch_header, the check `verify` calls)
    tmp_case("batch-object-header-damaged", CorruptFileError, _object_header_damaged),
    tmp_case("batch-attribute-message-damaged", CorruptFileError, _attribute_message_damaged),
    tmp_case("batch-attribute-value-changed", CorruptFileError, _attribute_value_damaged),
    tmp_case(
        "batch-mask-shape-implausible",
        FormatError,
        _lacuna_case(mask_shape=np.asarray([3, 65533, 2])),  # an axis of 131 m
    ),
    tmp_case("batch-affine-not-finite", FormatError, _lacuna_case(**_affine_nan())),
    tmp_case("batch-affine-singular", FormatError, _lacuna_case(**_affine_singular())),
    tmp_case("batch-indices-outside-shape", FormatError, _lacuna_case(**_indices_outside())),
    tmp_case("batch-indices-repeated", FormatError, _lacuna_case(**_indices_repeated())),
    tmp_case("batch-indices-fractional", FormatError, _lacuna_case(**_indices_fractional())),
    tmp_case("batch-attribute-vs-shape", FormatError, _lacuna_case(n_voxels=17)),
    tmp_case("batch-count-not-integer", FormatError, _lacuna_case(n_timepoints=6.5)),
    tmp_case("batch-space-not-text", FormatError, _lacuna_case(space=np.arange(3))),
    # the same subject twice
    tmp_case("batch-file-copied", DuplicateSubjectError, _copied_batch_file),
    tmp_case("batch-file-copied-no-ids", DuplicateSubjectError, _copied_lacuna_file),
    tmp_case("batch-id-in-two-files", DuplicateSubjectError, _repeated_id_across_files),
    tmp_case("batch-id-twice-in-file", DuplicateSubjectError, _repeated_id_in_file),
    # lesion network mapping and atlases
    tmp_case(
        "atlas-misses-the-brain",
        ShapeMismatchError,
        _atlas_case(np.ones(SHAPE), _FAR_AWAY),
    ),
    tmp_case("atlas-all-background", FormatError, _atlas_case(np.zeros(SHAPE), AFFINE)),
    tmp_case("device-cuda-absent", ParameterError, _device("cuda:99")),
    tmp_case("device-unknown", ParameterError, _device("gpu0")),
    tmp_case("permutations-fractional", ParameterError, _network_map_argument(n_permutations=2.7)),
    tmp_case("method-unknown", ParameterError, _network_map_argument(method="boess")),
    tmp_case("lesions-named-twice", ParameterError, _lesions_named_twice),
    tmp_case("lesion-empty", FormatError, _empty_lesion),
    tmp_case("parcellation-truncated", CorruptFileError, _parcellation_damaged),
    # outputs: only into folders neurotorch owns, complete or absent
    tmp_case("out-folder-not-neurotorchs", DatasetExistsError, _out_not_ours),
    tmp_case("out-previous-no-overwrite", DatasetExistsError, _out_previous_without_overwrite),
    tmp_case("out-previous-plus-user-file", DatasetExistsError, _out_previous_with_user_file),
    tmp_case(
        "out-disk-full-save", OutputWriteError, _disk_full(_save_maps, "maps/les_desc-t_map.nii.gz")
    ),
    tmp_case(
        "out-disk-full-to-nifti", OutputWriteError, _disk_full(_t_map_to_nifti, "les_t.nii.gz")
    ),
    tmp_case("out-table-name-escapes", ParameterError, _unsafe_table_name),
    tmp_case("convert-over-foreign-batch", DatasetExistsError, _convert_over_foreign_batch),
]


@pytest.fixture()
def no_laion_tree(tmp_path: Path) -> Path:
    """The framework copies a LAION-fMRI tree for each case; connectome cases need none."""
    empty = tmp_path / "no-tree"
    empty.mkdir()
    return empty


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_gives_named_error(
    fault: Fault, no_laion_tree: Path, tmp_path: Path, record_property
):
    run_fault(fault, no_laion_tree, tmp_path, record_property)
