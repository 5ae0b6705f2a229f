"""Synthetic CaliBrain data: real MNE leadfields, posterior summaries and aggregated runs.

`make_calibrain` writes a CaliBrain data root::

    1284src_leadfield/<subject>_{fixed,free}_leadfield.npz   leadfields (µV/nAm, fT/nAm)
    1284src_fwd/<subject>-fwd.fif                           the free-orientation MNE forwards
    posterior_summaries/posterior_summary_run{id:08d}_seed{seed}.h5
    calibration_datasets/<subject>_BMN_run{id:08d}_seed{seed}.npz (+ .json sidecar)
    dataset.json                                            size, seed, subjects; written last

Subjects: ``fsaverage`` (EEG easycap-M43) and ``sub-meg01`` (Neuromag magnetometers), both in a
spherical head with cortex-like shell sources. Each run simulates one CaliBrain trial and stores
its Bayesian minimum-norm posterior (CaliBrain's learned prior variance, oracle noise variance),
so the files carry their own ground truth (``x_true``).

`write_subject_leadfields` adds an EEG leadfield consistent with a synthetic LAION-fMRI subject's
brain mask under ``<fmri_root>/derivatives/meeg/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import numpy as np
from scipy.spatial.transform import Rotation
from tqdm.auto import tqdm

from neurotorch._options import check_option
from neurotorch.config import show_progress
from neurotorch.io.atomic import atomic_open, atomic_path, write_json
from neurotorch.meeg import forward, layout
from neurotorch.meeg.grid import simulate_run, write_posterior_summary
from neurotorch.meeg.leadfield import save_leadfield_npz
from neurotorch.synthetic._once import write_dataset_once
from neurotorch.synthetic.resolve import synthetic_root

SIZES = {
    "tiny": dict(n_sources=120, n_runs=4),
    "small": dict(n_sources=200, n_runs=12),
    "bench": dict(n_sources=1284, n_runs=8),
}
SUBJECTS = {"fsaverage": "eeg", "sub-meg01": "mag"}
SUMMARY_DIR = "posterior_summaries"
AGGREGATED_DIR = "calibration_datasets"
DATASET_INFO = "dataset.json"
#: CaliBrain's name of the solver of the runs (its metadata and file names use it as is).
SOLVER = "BMN"


def default_root(size: str = "small", seed: int = 0) -> Path:
    """Where the synthetic CaliBrain root of a size and seed lives by default."""
    return synthetic_root("calibrain", size, seed)


def _leadfields(info, *, rr: np.ndarray, nn: np.ndarray, sensor: str, forward_path: Path | None):
    """Fixed and free `LeadfieldData` from one free MNE forward (optionally written to disk)."""
    import mne

    fwd = forward.make_forward(info, rr, nn, bem=forward.sphere_model(sensor))
    if forward_path is not None:
        forward_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(forward_path) as tmp:
            mne.write_forward_solution(tmp, fwd, overwrite=True, verbose=False)
    return {ori: forward.forward_to_leadfield(fwd, ori) for ori in layout.ORIENTATIONS}


def _write_aggregated(path: Path, run: dict, *, metadata: dict, q_basis: np.ndarray | None) -> None:
    """CaliBrain's aggregated per-run NPZ: marginal variances (fixed) or covariance blocks and
    the component basis ``Q_basis`` (free; CaliBrain's calibration needs it for MEG)."""
    n_sources = run["x_true"].shape[0]
    k = 1 if run["x_true"].ndim == 2 else run["x_true"].shape[1]
    full = run["posterior_cov"].reshape(n_sources, k, n_sources, k)
    idx = np.arange(n_sources)
    blocks = full[idx, :, idx, :]
    arrays = {"x_true": run["x_true"], "x_hat": run["x_hat"]}
    if k == 1:
        arrays["posterior_var"] = blocks[:, 0, 0]
    else:
        arrays["posterior_cov_blocks"] = blocks
        arrays["Q_basis"] = q_basis
    scalars = {key: np.asarray(value) for key, value in metadata.items() if value is not None}
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays, **scalars)  # type: ignore[arg-type]  # numpy stubs match ** to allow_pickle
    sidecar = {
        "dataset_info": {
            key: metadata[key]
            for key in ("orientation_type", "coil_type", "sensor_kind", "subject", "solver")
        }
    }
    write_json(path.with_suffix(".json"), sidecar)


def _write_calibrain(root: Path, n_sources: int, n_runs: int, seed: int, progress: bool) -> dict:
    steps = tqdm(total=len(SUBJECTS) + n_runs, desc="synthetic CaliBrain", disable=not progress)
    leadfields = {}
    for subject, sensor in SUBJECTS.items():
        rr, nn = forward.cortical_shell(
            n_sources, center=forward.SPHERE_ORIGIN["eeg" if sensor == "eeg" else "meg"]
        )
        info = forward.sensor_info(sensor)
        per_ori = _leadfields(
            info, rr=rr, nn=nn, sensor=sensor, forward_path=root / layout.forward_file(subject)
        )
        for ori, data in per_ori.items():
            save_leadfield_npz(root / layout.leadfield_file(subject, ori), data)
            leadfields[subject, ori] = data
        steps.update()
    rng = np.random.default_rng(seed)
    combos = [(s, o) for s in SUBJECTS for o in layout.ORIENTATIONS]
    for dirname in (SUMMARY_DIR, AGGREGATED_DIR):
        (root / dirname).mkdir(parents=True, exist_ok=True)
    for run_id in range(1, n_runs + 1):
        subject, ori = combos[(run_id - 1) % len(combos)]
        data = leadfields[subject, ori]
        nnz = int(rng.choice([1, 3, 5, 10]))
        alpha = float(rng.choice([0.1, 0.3, 0.5, 0.7, 0.9]))
        run_seed = int(rng.integers(2**31))
        run = simulate_run(data, nnz=nnz, alpha=alpha, seed=run_seed, index=run_id)
        metadata = {
            "global_run_id": run_id,
            "run_id": run_id,
            "solver": SOLVER,
            "noise_type": "oracle",
            "subject": subject,
            "orientation_type": ori,
            "nnz": nnz,
            "alpha_SNR": alpha,
            "n_sources": data.n_sources,
            "n_times": run["x_true"].shape[-1],
            "seed": run_seed,
            "sensor_kind": data.sensor_kind,
            "coil_type": data.coil_type,
            "gamma": run["gamma"],
            "noise_var": run["noise_var"],
            "sensor_units": data.sensor_units,
            "sensor_unitmult": data.sensor_unitmult,
        }
        q_basis = data.Q_basis if ori == "free" else None
        write_posterior_summary(
            root / SUMMARY_DIR / layout.posterior_summary_name(run_id, run_seed),
            run,
            q_basis=q_basis,
            metadata=metadata,
        )
        name = layout.aggregated_run_name(subject, SOLVER, run_id=run_id, seed=run_seed)
        _write_aggregated(root / AGGREGATED_DIR / name, run, metadata=metadata, q_basis=q_basis)
        steps.update()
    steps.close()
    return {"subjects": SUBJECTS, "n_sources": n_sources, "n_runs": n_runs}


def make_calibrain(
    out: str | os.PathLike | None = None,
    size: str = "small",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write (or reuse) a synthetic CaliBrain data root.

    Parameters
    ----------
    out
        Output folder; default `default_root(size, seed)`. An existing complete root with the same
        size and seed is reused.
    size
        ``"tiny"`` (120 sources, 4 runs), ``"small"`` (200 sources, 12 runs) or ``"bench"``
        (1284 sources, 8 runs).
    seed
        Seed of every random choice.
    overwrite
        Replace an existing folder at ``out``.
    progress
        Show a progress bar (default: on unless ``NEUROTORCH_PROGRESS=0``).
    """
    check_option("size", size, SIZES)
    root = Path(out) if out is not None else default_root(size, seed)
    show = show_progress(progress)

    def write(folder: Path) -> dict:
        return _write_calibrain(folder, **SIZES[size], seed=seed, progress=show)

    return write_dataset_once(
        root,
        params={"size": size, "seed": seed},
        info_relpath=DATASET_INFO,
        write=write,
        what="CaliBrain",
        overwrite=overwrite,
    )


def _mask_shell(
    mask: np.ndarray,
    affine: np.ndarray,
    n_sources: int,
    depth: float,
    max_radius_mm: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sources (T1w mm) on a shell inside a brain mask, their radial normals and the mask centroid.

    Along each direction of a randomly rotated (by ``seed``) Fibonacci lattice the mask's extent
    from its centroid is found by
    stepping outwards voxel by voxel; the source sits at ``depth`` times that extent (at most
    ``max_radius_mm``), so the shell follows the brain's shape and stays inside it.
    """
    ijk = np.argwhere(mask)
    centroid = ijk.mean(axis=0) @ affine[:3, :3].T + affine[:3, 3]
    k = np.arange(n_sources) + 0.5
    cos_t = 1.0 - 2.0 * k / n_sources
    phi = np.pi * (3.0 - np.sqrt(5.0)) * k
    sin_t = np.sqrt(1.0 - cos_t**2)
    u = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    u = Rotation.random(random_state=seed).apply(u)
    step = 0.5 * float(np.min(np.linalg.norm(affine[:3, :3], axis=0)))
    inverse = np.linalg.inv(affine)
    radii = np.arange(step, 2 * max(mask.shape) * 2 * step, step)
    points = centroid + radii[None, :, None] * u[:, None, :]  # (n, steps, 3) mm
    vox = np.rint(points @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
    inside_grid = np.all((vox >= 0) & (vox < np.array(mask.shape)), axis=-1)
    clipped = np.clip(vox, 0, np.array(mask.shape) - 1)
    inside = inside_grid & mask[clipped[..., 0], clipped[..., 1], clipped[..., 2]]
    first_out = np.argmin(inside, axis=1)  # first step outside the mask
    extent = radii[np.maximum(first_out - 1, 0)]
    radius = np.minimum(depth * extent, max_radius_mm)
    return centroid + radius[:, None] * u, u, centroid


def write_subject_leadfields(
    fmri_root: str | os.PathLike,
    subject: str,
    n_sources: int = 1284,
    seed: int = 0,
    montage: str = "easycap-M43",
) -> Path:
    """Write an EEG leadfield consistent with a synthetic LAION-fMRI subject's anatomy.

    Sources lie on a shell inside the subject's anatomical brain mask (0.8 of the mask's extent
    from its centroid along each direction, at most 70 mm) with radial outward normals. The head
    frame is the T1w frame in metres, shifted so the mask centroid sits at the EEG sphere-model
    origin (0, 0, 0.04 m). Written under ``<fmri_root>/derivatives/meeg/``:
    ``1284src_leadfield/<subject>_{fixed,free}_leadfield.npz`` and ``<subject>_head-to-T1w.txt``
    (4x4, head metres -> T1w millimetres).

    ``seed`` rotates the source lattice. Returns the ``derivatives/meeg`` folder.
    """
    import nibabel as nib

    from neurotorch.fmri import layout as fmri_layout

    root = Path(fmri_root)
    img = cast(nib.Nifti1Image, nib.load(root / fmri_layout.anatomical_brain_mask(subject)))
    mask = np.asarray(img.dataobj) > 0
    src_mm, normals, centroid = _mask_shell(
        mask, img.affine, n_sources, depth=0.8, max_radius_mm=70.0, seed=seed
    )
    origin_m = np.asarray(forward.SPHERE_ORIGIN["eeg"])
    head_to_t1w = np.eye(4)
    head_to_t1w[:3, :3] *= 1000.0
    head_to_t1w[:3, 3] = centroid - 1000.0 * origin_m
    src_head = (src_mm - centroid) / 1000.0 + origin_m
    out = root / layout.FMRI_MEEG_DIR
    info = forward.sensor_info("eeg", montage)
    per_ori = _leadfields(info, rr=src_head, nn=normals, sensor="eeg", forward_path=None)
    for ori, data in per_ori.items():
        save_leadfield_npz(out / layout.leadfield_file(subject, ori), data)
    with atomic_open(out / layout.head_to_t1w_name(subject)) as handle:
        np.savetxt(handle, head_to_t1w)
    return out
