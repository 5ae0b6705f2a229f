"""Inputs shared by the tests of the commands' units (`tests/test_parallel_*.py`).

A connectome of 11 subjects in batch files of 3, 3, 3 and 2, 5 of its lesions in batches of 2,
2 and 1, 13 sign flips in chunks of 5, 5 and 3: prime counts, so no split divides evenly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_SUBJECTS, SUBJECTS_PER_FILE = 11, 3
N_LESIONS, LESIONS_PER_UNIT = 5, 2
N_PERMUTATIONS, PERMUTATIONS_PER_UNIT = 13, 5
SEED = 3


def small_connectome(root: Path) -> tuple[Path, list[Path]]:
    """(batch folder, lesion files) of a synthetic connectome written under ``root``."""
    from neurotorch.synthetic.connectome import make_connectome

    make_connectome(
        root,
        n_subjects=N_SUBJECTS,
        n_timepoints=30,
        subjects_per_chunk=SUBJECTS_PER_FILE,
        n_networks=3,
        lesions_per_network=2,
        seed=1,
    )
    lesions = sorted((root / "lesions").glob("*.nii.gz"))[:N_LESIONS]
    return root / "batches", lesions


def plan(folder: Path, connectome: Path, lesions: list[Path], **options):
    """`plan_network_map` with the split of the module docstring."""
    from neurotorch.connectome.lnm_units import plan_network_map

    options = {
        "n_permutations": N_PERMUTATIONS,
        "seed": SEED,
        "lesions_per_unit": LESIONS_PER_UNIT,
        "permutations_per_unit": PERMUTATIONS_PER_UNIT,
        **options,
    }
    return plan_network_map(folder, lesions, connectome, **options)


MAP_FIELDS = ("mean_z", "t", "p", "q", "p_fwe", "max_t_null", "seed_voxels", "lesion_voxels")


def assert_same_maps(a, b) -> None:
    """Two results hold the same bytes in every map."""
    assert a.names == b.names
    for name in MAP_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name


def unit_files(folder: Path) -> dict[str, bytes]:
    """Every output of the units under a units folder (no locks), by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "locks" not in p.parts and ".tmp." not in p.name
    }


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (no partial or temporary files)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".part") and ".tmp." not in p.name
    }


def relative_gap(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    """max |a - b| / (scale + |a|) over the finite entries (both must be finite there)."""
    finite = np.isfinite(a)
    assert np.array_equal(finite, np.isfinite(b)) and np.array_equal(a[~finite], b[~finite])
    return float(np.max(np.abs(a[finite] - b[finite]) / (scale + np.abs(a[finite]))))
