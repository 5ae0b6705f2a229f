"""The fault-injection framework shared by every ``tests/test_faults*.py``.

A `Fault` damages one input (a file of a fresh copy of the tiny synthetic LAION-fMRI tree, or a bad
M/EEG or connectome file written from scratch), calls the public reader a user would call, and
`run_fault` records how it failed: ``named`` (a `NeurotorchError` subclass of the expected kind
whose message names the file or value), ``misnamed`` (a neurotorch error of another kind, or one
not naming the culprit), ``unnamed`` (any other exception), ``silent`` (no error at all) or
``left-temporary-files`` (a named error, but the failed build left temporary files in the cache).
``tests/conftest.py`` prints the totals at the end of the run as
``faults: N cases, N named errors, 0 silent``. Each area keeps its own list of cases in its own
``tests/test_faults_<area>.py`` and runs it with `run_fault`.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from neurotorch.errors import NeurotorchError

SUB, SES = "sub-01", "ses-01"


FUNC = f"derivatives/glmsingle-tedana/{SUB}/{SES}/func"

BETAS = f"{FUNC}/{SUB}_{SES}_task-images_space-T1w_stat-effect_desc-SingletrialBetas_statmap.nii.gz"

TRIALS = f"{FUNC}/{SUB}_{SES}_task-images_desc-SingletrialBetas_trials.tsv"

SESSION_NC = f"{FUNC}/{SUB}_{SES}_task-images_space-T1w_desc-Noiseceiling_statmap.nii.gz"

BRAIN = (
    f"derivatives/anatomical/{SUB}/ses-PrismaAnat/anat/"
    f"{SUB}_ses-PrismaAnat_space-T1w_res-1pt8_desc-brain_mask.nii.gz"
)

FFA1 = f"derivatives/rois/{SUB}/face/{SUB}_space-T1w_res-1pt8_label-FFA1_mask.nii.gz"

METADATA = "stimuli/task-images_metadata.csv"

CLIP = "stimuli/task-images_desc-CLIP_embeddings.h5"

IMAGES = "stimuli/task-images_stimuli.h5"

SPLIT = "splits/shared/random_0.json"


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_byte(path: Path, offset: int) -> None:
    """XOR one byte; a negative offset counts from the end (-8 is the first gzip CRC byte)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def rewrite_nifti(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    image = nib.load(path)
    data = change(np.asarray(image.dataobj).copy())
    nib.save(nib.Nifti1Image(data, image.affine), path)


def brain_voxel(root: Path) -> tuple[int, int, int]:
    """Grid index of the first voxel inside the brain mask."""
    mask = np.asarray(nib.load(root / BRAIN).dataobj) != 0
    return tuple(int(i) for i in np.argwhere(mask)[0])


def set_volume_count(path: Path, n_volumes: int) -> None:
    """Rewrite dim[4] of a little-endian NIfTI-1 ``.nii.gz`` header, leaving the data as they are."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    assert struct.unpack_from("<i", raw, 0)[0] == 348, "expected a little-endian NIfTI-1 header"
    struct.pack_into("<h", raw, 48, n_volumes)
    path.write_bytes(gzip.compress(bytes(raw), compresslevel=1))


def rewrite_h5(
    path: Path, change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
) -> None:
    with h5py.File(path, "r") as f:
        arrays = {key: f[key][()] for key in f}
    arrays = change(arrays)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value


@dataclass(frozen=True)
class Fault:
    """One damaged input: ``run(tree, tmp)`` damages it and returns ``(call, culprit)``.

    ``call()`` must raise ``error`` with ``culprit`` (a file name or value) in its message.
    """

    name: str
    error: type[NeurotorchError]
    run: Callable[[Path, Path], tuple[Callable[[], object], str]]


def _damage(fn: Callable[[Path], None], relpath: str) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        fn(root / relpath)
        return Path(relpath).name

    return apply


def tree_case(
    name: str,
    error: type[NeurotorchError],
    damage: Callable[[Path], object],
    call: Callable[[Path], object],
    culprit: str | None = None,
) -> Fault:
    """A case on the LAION-fMRI tree: ``damage(root)`` returns the culprit unless it is given."""

    def run(root: Path, tmp: Path) -> tuple[Callable[[], object], str]:
        found = damage(root)
        return (lambda: call(root)), culprit if culprit is not None else str(found)

    return Fault(name, error, run)


def tmp_case(
    name: str,
    error: type[NeurotorchError],
    make: Callable[[Path], tuple[Callable[[], object], str]],
) -> Fault:
    """A case on files written from scratch in an empty folder."""
    return Fault(name, error, lambda root, tmp: make(tmp))


def flip_at(path: Path, fraction: float, n: int = 1) -> None:
    """XOR ``n`` consecutive bytes starting at ``fraction`` of the file."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * fraction)
    for k in range(n):
        data[start + k] ^= 0xFF
    path.write_bytes(bytes(data))


def classify(
    fault: Fault, call: Callable[[], object], culprit: str
) -> tuple[str, BaseException | None]:
    """Run ``call`` and say how it failed (see the module docstring)."""
    try:
        call()
    except NeurotorchError as exc:
        named = isinstance(exc, fault.error) and culprit in str(exc)
        return ("named" if named else "misnamed"), exc
    except Exception as exc:  # noqa: BLE001 - any other exception is the finding
        return "unnamed", exc
    return "silent", None


def temporary_files(folder: Path) -> list[str]:
    """Files a build leaves behind under temporary names."""
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and ".tmp" in p.name)


def run_fault(fault: Fault, tiny_laion_root: Path, tmp_path: Path, record_property) -> None:
    """Run one case on a fresh copy of the tree, record its outcome and assert it was ``named``."""
    root = Path(shutil.copytree(tiny_laion_root, tmp_path / "tree"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    call, culprit = fault.run(root, scratch)
    outcome, exc = classify(fault, call, culprit)
    leftovers = temporary_files(tmp_path / "cache") if (tmp_path / "cache").exists() else []
    if outcome == "named" and leftovers:
        outcome = "left-temporary-files"
    record_property("fault", outcome)
    assert outcome == "named", (
        f"{fault.name}: expected {fault.error.__name__} naming {culprit!r}, got {outcome}: "
        f"{type(exc).__name__ if exc else ''} {exc} {leftovers}"
    )


def stream_items(root: Path, num_workers: int, **kwargs) -> tuple[list[dict], BaseException | None]:
    """Items a `StreamLoader` delivers (batch size 1) before it stops, and the error it stops with."""
    from neurotorch.data.fmri.settings import nest_settings
    from neurotorch.data.fmri.stream import BetasStream
    from neurotorch.data.loader import StreamLoader

    kwargs.setdefault("sessions", [SES])
    items: list[dict] = []
    try:
        dataset = BetasStream(root, SUB, **nest_settings(kwargs))
        for batch in StreamLoader(dataset, batch_size=1, num_workers=num_workers):
            items.append(batch)
    except NeurotorchError as exc:
        return items, exc
    return items, None
