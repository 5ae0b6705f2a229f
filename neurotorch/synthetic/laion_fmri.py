"""`make_laion_fmri`: a complete synthetic LAION-fMRI tree with a known ground truth.

Every file of the real layout is written with its real name, dtype and columns (betas, trial
tables, noise ceilings, R², masks, anatomy, volume and surface ROIs, stimuli, embeddings, captions,
segmentations, split files). Shared images repeat across sessions and subjects; each subject also
sees unique images. The noise-ceiling maps are computed from the written betas (NSD's ncsnr).

The ground truth lives in ``_groundtruth/`` (readers ignore it): per subject an ``.npz`` with the
true CLIP-space weights of the signal voxels, noise SDs, baselines and the attainable single-trial
test correlation of every brain voxel.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from neurotorch import __version__
from neurotorch._options import check_int
from neurotorch.config import show_progress
from neurotorch.errors import ParameterError
from neurotorch.fmri import layout
from neurotorch.fmri.noise_ceiling import ncsnr_from_noise_variance, noise_ceiling
from neurotorch.io.atomic import atomic_open, write_text
from neurotorch.synthetic import brain as synth_brain
from neurotorch.synthetic._once import write_dataset_once
from neurotorch.synthetic.resolve import synthetic_root
from neurotorch.synthetic.stimuli import (
    StimulusSet,
    make_embeddings,
    make_stimulus_set,
    write_stimuli,
)

DATASET_INFO = f"{layout.GROUNDTRUTH_DIR}/dataset.json"
_FIT_BLOCK_BYTES = 1 << 23  # noise-free responses are computed for blocks of trials this large


@dataclass(frozen=True)
class SizePreset:
    """The geometry and stimulus counts of a synthetic LAION-fMRI dataset.

    A subject sees ``12 * n_shared12 + 4 * n_shared4 + 4 * 9 * n_ood_per_type + n_unique``
    trials, spread over ``n_sessions`` sessions. ``brain_fill`` is the brain ellipsoid's
    half-axis as a fraction of the grid's (0.9: ≈ 38 % of the box is brain; 0.7256: ≈ 20 %, as
    in LAION-fMRI).
    """

    n_subjects: int
    n_sessions: int
    grid: tuple[int, int, int]
    n_shared12: int
    n_shared4: int
    n_ood_per_type: int
    n_unique: int  # per subject
    latent_dim: int
    image_px: int
    roi_radius: float
    surface_vertices: int
    brain_fill: float = 0.9

    def with_sessions(self, n_sessions: int) -> SizePreset:
        """This preset with ``n_sessions`` sessions of the same length: the image counts scale
        with the number of sessions."""
        scale = n_sessions / self.n_sessions
        counts = ("n_shared12", "n_shared4", "n_ood_per_type", "n_unique")
        scaled = {name: max(1, round(getattr(self, name) * scale)) for name in counts}
        return dataclasses.replace(self, n_sessions=n_sessions, **scaled)


SIZES = {
    "tiny": SizePreset(2, 2, (14, 16, 14), 10, 30, 1, 30, 4, 32, 2.0, 300),
    "small": SizePreset(2, 3, (30, 36, 30), 24, 96, 2, 150, 8, 96, 3.0, 2000),
    "bench": SizePreset(1, 1, (80, 96, 80), 10, 30, 1, 24, 8, 64, 6.0, 2000),
    # LAION-fMRI's geometry: 143³ at 1.8 mm, brain ≈ 20 % of the box (≈ 573k voxels), 1,050
    # trials per session (240 shared 12-rep, 200 shared 4-rep, 72 OOD, 538 unique)
    "real": SizePreset(1, 1, (143, 143, 143), 20, 50, 2, 538, 16, 32, 6.0, 2000, 0.7256),
}


# Noise SD multiplier of the signal voxels. "default": single-trial ceilings r 0.53-0.85;
# "realistic": 0.21-0.47, where real single-trial fMRI encoding models sit.
SNR_PRESETS = {"default": 1.0, "realistic": 3.0}


def default_root(
    size: str = "small", seed: int = 0, snr: str = "default", sessions: int | None = None
) -> Path:
    """Where the synthetic dataset of a size, seed and SNR preset lives by default."""
    options: dict[str, Any] = {} if snr == "default" else {"snr": snr}
    if sessions is not None:
        options["sessions"] = sessions
    return synthetic_root("laion-fmri", size, seed, **options)


def make_laion_fmri(
    root: str | os.PathLike | None = None,
    size: str | SizePreset = "small",
    seed: int = 0,
    overwrite: bool = False,
    meeg: bool = False,
    progress: bool | None = None,
    shuffle_trials_tables: bool = False,
    snr: str = "default",
    sessions: int | None = None,
) -> Path:
    """Write (or reuse) a synthetic LAION-fMRI dataset.

    Parameters
    ----------
    root
        Output folder; default `default_root(size, seed)`. An existing complete dataset with the
        same size and seed is reused as is.
    size
        ``"tiny"`` (tests, ~1 s), ``"small"`` (examples, the default), ``"bench"`` (one session on
        an 80×96×80 grid with 300 trials, for benchmarks), ``"real"`` (LAION-fMRI's geometry:
        one subject, 143×143×143 at 1.8 mm, brain ≈ 20 % of the box, 1,050 trials per session;
        ≈ 2.3 GB of gzipped betas and about two minutes per session), or a `SizePreset`. Betas
        are written volume by volume: memory does not grow with the number of trials.
    seed
        Seed of every random choice.
    overwrite
        Replace an existing dataset at ``root``.
    meeg
        Also write a CaliBrain-style leadfield folder consistent with each subject's anatomy.
    progress
        Show a progress bar (default: on unless ``NEUROTORCH_PROGRESS=0``).
    shuffle_trials_tables
        Write each session's trials table in a random row order (each row keeps its own
        ``beta_index``), as a table ordered by run or presentation would be; readers must pair
        trials with volumes by ``beta_index``, not by row. Everything else is unchanged.
    snr
        Signal-to-noise preset of the signal voxels (`SNR_PRESETS`): ``"default"`` (single-trial
        ceilings r 0.53–0.85) or ``"realistic"`` (0.21–0.47, like real single-trial betas).
    sessions
        Sessions per subject (default: the preset's); the number of images grows with it, so
        every session keeps the preset's length (`SizePreset.with_sessions`).

    Returns
    -------
    Path
        The dataset root.
    """
    if not isinstance(size, SizePreset) and size not in SIZES:
        raise ParameterError(f"Unknown size {size!r}; choose one of {sorted(SIZES)}.")
    if snr not in SNR_PRESETS:
        raise ParameterError(f"Unknown snr {snr!r}; choose one of {sorted(SNR_PRESETS)}.")
    preset = size if isinstance(size, SizePreset) else SIZES[size]
    if sessions is not None:
        preset = preset.with_sessions(check_int("sessions", sessions, minimum=1))
    if root is None:
        if isinstance(size, SizePreset):
            raise ParameterError("A custom SizePreset needs root=, the folder to write it to.")
        root = default_root(size, seed, snr=snr, sessions=sessions)
    root = Path(root)
    show = show_progress(progress)

    def write(folder: Path) -> dict:
        _write_dataset(
            folder,
            preset,
            seed,
            meeg=meeg,
            progress=show,
            shuffle_trials=shuffle_trials_tables,
            noise_scale=SNR_PRESETS[snr],
        )
        return {"version": __version__}

    custom = {**dataclasses.asdict(preset), "grid": list(preset.grid)}  # as its JSON reads back
    identity = {"size": custom if isinstance(size, SizePreset) else size, "seed": seed}
    identity["meeg"] = meeg
    if sessions is not None:
        identity["sessions"] = sessions
    if shuffle_trials_tables:
        identity["shuffle_trials_tables"] = True
    if snr != "default":  # default datasets written before the option keep their identity
        identity["snr"] = snr
    return write_dataset_once(
        root, identity, DATASET_INFO, write=write, what="LAION-fMRI", overwrite=overwrite
    )


def _write_dataset(
    root: Path,
    preset: SizePreset,
    seed: int,
    meeg: bool,
    progress: bool,
    shuffle_trials: bool,
    noise_scale: float,
) -> None:
    rng = np.random.default_rng(seed)
    subjects = [f"sub-{i + 1:02d}" for i in range(preset.n_subjects)]
    steps = tqdm(total=len(subjects) + 2 + meeg, desc="synthetic LAION-fMRI", disable=not progress)
    stimset = make_stimulus_set(
        rng,
        subjects,
        preset.n_shared12,
        n_shared4=preset.n_shared4,
        n_ood_per_type=preset.n_ood_per_type,
        n_unique=preset.n_unique,
        latent_dim=preset.latent_dim,
    )
    embeddings, projections = make_embeddings(stimset, rng)
    write_stimuli(root, stimset, embeddings, image_size=preset.image_px, rng=rng)
    steps.update()
    clip = embeddings["CLIP"].astype(np.float32)
    for subject in subjects:
        subject_rng = np.random.default_rng([seed, int(subject[4:])])
        # a generator of its own, so that shuffling leaves every other file unchanged
        row_order_rng = (
            np.random.default_rng([seed, int(subject[4:]), 1]) if shuffle_trials else None
        )
        _write_subject(
            root,
            subject,
            preset,
            stimset=stimset,
            clip=clip,
            clip_projection=projections["CLIP"],
            rng=subject_rng,
            noise_scale=noise_scale,
            row_order_rng=row_order_rng,
            progress=progress,
        )
        steps.update()
    _write_splits(root, stimset, clip, subjects=subjects, seed=seed)
    steps.update()
    if meeg:
        from neurotorch.synthetic.meeg import write_subject_leadfields

        for subject in subjects:
            write_subject_leadfields(root, subject, seed=seed)
        steps.update()
    steps.close()


def _session_schedule(
    stimset: StimulusSet, subject: str, n_sessions: int, rng: np.random.Generator
) -> list[list[int]]:
    """Image index of every trial, per session: repetitions spread over sessions, then shuffled."""
    sessions: list[list[int]] = [[] for _ in range(n_sessions)]
    shown = np.concatenate(
        [
            stimset.indices("shared12", "shared4", "ood"),
            stimset.indices("unique", participant=subject),
        ]
    )
    for offset, image in enumerate(shown):
        for rep in range(stimset.n_reps[image]):
            sessions[(offset + rep) % n_sessions].append(int(image))
    for trials in sessions:
        rng.shuffle(trials)
    return sessions


def _trial_table(trials: list[int], session_number: int, stimset: StimulusSet) -> pd.DataFrame:
    n_runs = max(1, round(len(trials) / 50))
    return pd.DataFrame(
        {
            "session": session_number,
            "run": np.arange(len(trials)) * n_runs // len(trials) + 1,
            "beta_index": np.arange(len(trials)),
            "label": [stimset.names[i] for i in trials],
        }
    )


def _volume(values: np.ndarray, brain_index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Scatter (n_brain,) values into a float32 grid (x, y, z); NaN outside the brain."""
    out = np.full(int(np.prod(shape)), np.nan, dtype=np.float32)
    out[brain_index] = values
    return out.reshape(shape)


@dataclass(frozen=True)
class _Betas:
    """How a subject's single-trial betas are drawn: the encoding model and the stimuli."""

    model: synth_brain.EncodingModel
    clip: np.ndarray
    grid: tuple[int, int, int]

    @property
    def n_brain(self) -> int:
        return len(self.model.brain_index)

    def fits(self, images: list[int]) -> np.ndarray:
        """Noise-free responses (float64, ``(len(images), n_brain)``)."""
        return self.model.signal(self.clip[images])

    def draw(self, fit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The float32 betas of one presentation: ``fit`` plus the next noise draw of ``rng``."""
        return (fit + self.model.noise_sd * rng.standard_normal(fit.shape)).astype(np.float32)

    def blocks(self, images: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """``(image, fit)`` of every trial, the fits computed a block of trials at a time (one
        matrix product per block, in bounded memory)."""
        step = max(1, _FIT_BLOCK_BYTES // (8 * self.n_brain))
        for start in range(0, len(images), step):
            block = images[start : start + step]
            yield from zip(block, self.fits(block), strict=True)


@dataclass
class _SessionDraws:
    """What is needed to draw a session's betas again, trial by trial, in bounded memory: the
    image of every trial, the generator state before its noise, and the session's voxel
    moments (for z-scoring)."""

    images: list[int]
    states: list[Mapping[str, Any]]
    mean: np.ndarray
    sd: np.ndarray

    def zscored(self, trial: int, fit: np.ndarray, source: _Betas) -> np.ndarray:
        """The z-scored betas of one trial (whose noise-free response is ``fit``), drawn again
        from its generator state."""
        generator = np.random.Generator(np.random.PCG64())
        generator.bit_generator.state = self.states[trial]
        return (source.draw(fit, generator) - self.mean) / self.sd


def _replayed_ncsnr(sessions: list[_SessionDraws], source: _Betas) -> np.ndarray:
    """NSD's ncsnr over the trials of ``sessions``, one repeated image at a time (its trials are
    drawn again): the memory of one image's repetitions, whatever the number of trials."""
    trials_of_image: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for s, draws in enumerate(sessions):
        for t, image in enumerate(draws.images):
            trials_of_image[image].append((s, t))
    repeated = {image: trials for image, trials in trials_of_image.items() if len(trials) >= 2}
    if not repeated:
        return np.full(source.n_brain, np.nan)
    noise_var = np.zeros(source.n_brain)
    for image, fit in source.blocks(list(repeated)):
        zscored = np.stack([sessions[s].zscored(t, fit, source) for s, t in repeated[image]])
        noise_var += zscored.var(axis=0, ddof=1)
    return ncsnr_from_noise_variance(noise_var / len(repeated))


def _write_session_betas(
    path: Path, images: list[int], source: _Betas, *, rng: np.random.Generator, volumes: tqdm
) -> tuple[_SessionDraws, np.ndarray]:
    """Write one session's betas volume by volume; return its draws and its R² map (percent)."""
    sums, squares, residual = (np.zeros(source.n_brain) for _ in range(3))
    states = []
    affine = synth_brain.grid_affine(source.grid)
    brain_index = source.model.brain_index
    with synth_brain.write_volumes(
        path, source.grid, len(images), affine=affine, brain_index=brain_index
    ) as out:
        for _, fit in source.blocks(images):
            states.append(rng.bit_generator.state)
            betas = source.draw(fit, rng)
            out.write(betas)
            values = betas.astype(np.float64)
            sums += values
            squares += values**2
            residual += (values - fit) ** 2
            volumes.update()
    mean = sums / len(images)
    sd = np.sqrt(np.clip(squares / len(images) - mean**2, 0.0, None))
    draws = _SessionDraws(images, states, mean, sd=np.where(sd > 0, sd, 1.0))
    return draws, 100 * (1 - residual / squares)


def _write_subject(
    root: Path,
    subject: str,
    preset: SizePreset,
    stimset: StimulusSet,
    clip: np.ndarray,
    clip_projection: np.ndarray,
    rng: np.random.Generator,
    noise_scale: float,
    row_order_rng: np.random.Generator | None = None,
    progress: bool = False,
) -> None:
    grid = preset.grid
    affine = synth_brain.grid_affine(grid)
    brain = synth_brain.ellipsoid_mask(grid, fill=preset.brain_fill)
    rois = synth_brain.place_rois(brain, preset.roi_radius, rng)
    model = synth_brain.make_encoding_model(
        brain,
        rois,
        stimset.latent,
        categories=stimset.categories,
        clip=clip,
        clip_projection=clip_projection,
        rng=rng,
    )
    model.noise_sd[model.signal_rows] *= noise_scale  # after every draw: same data otherwise
    source = _Betas(model, clip, grid)

    schedule = _session_schedule(stimset, subject, preset.n_sessions, rng=rng)
    sessions: list[_SessionDraws] = []
    all_labels: list[str] = []
    r2_sum = np.zeros(len(model.brain_index))
    volumes = tqdm(
        total=sum(map(len, schedule)), desc=f"{subject} betas", unit="vol", disable=not progress
    )
    for s, trials in enumerate(schedule, start=1):
        session = f"ses-{s:02d}"
        (root / layout.session_func_dir(subject, session)).mkdir(parents=True, exist_ok=True)
        draws, r2 = _write_session_betas(
            root / layout.session_betas(subject, session), trials, source, rng=rng, volumes=volumes
        )
        table = _trial_table(trials, s, stimset)
        written = (
            table if row_order_rng is None else table.iloc[row_order_rng.permutation(len(table))]
        )
        write_text(
            root / layout.session_trials(subject, session), written.to_csv(sep="\t", index=False)
        )
        session_snr = _replayed_ncsnr([draws], source)
        synth_brain.save_nifti(
            _volume(noise_ceiling(session_snr, 1), model.brain_index, grid),
            affine,
            root / layout.session_noise_ceiling(subject, session),
        )
        synth_brain.save_nifti(
            _volume(r2, model.brain_index, grid), affine, root / layout.session_r2(subject, session)
        )
        r2_sum += r2
        sessions.append(draws)
        all_labels += list(table["label"])
    volumes.close()

    snr = _replayed_ncsnr(sessions, source)
    n_reps = {"Noiseceiling4rep": 4, "Noiseceiling12rep": 12}
    reps_of_images = pd.Series(all_labels).value_counts().to_numpy()
    for desc in layout.SUBJECT_NOISE_CEILINGS:
        nc = noise_ceiling(snr, n_reps.get(desc, reps_of_images))
        synth_brain.save_nifti(
            _volume(nc, model.brain_index, grid),
            affine,
            root / layout.subject_noise_ceiling(subject, desc),
        )
    synth_brain.save_nifti(
        _volume(r2_sum / len(schedule), model.brain_index, grid),
        affine,
        root / layout.subject_r2mean(subject),
    )
    _write_anatomy(root, subject, brain, affine=affine, rng=rng)
    _write_rois(root, subject, rois, affine=affine, n_vertices=preset.surface_vertices, rng=rng)
    gt = root / layout.GROUNDTRUTH_DIR
    gt.mkdir(exist_ok=True)
    with atomic_open(gt / f"{subject}_encoding.npz") as handle:
        np.savez(
            handle,
            brain_index=model.brain_index,
            signal_rows=model.signal_rows,
            weights=model.weights,
            amplitude=model.amplitude,
            noise_sd=model.noise_sd,
            baseline=model.baseline,
            attainable_r=model.attainable_r,
            grid_shape=np.asarray(grid),
        )


def _write_anatomy(root: Path, subject: str, brain: np.ndarray, affine: np.ndarray, rng) -> None:
    (root / layout.anatomical_dir(subject)).mkdir(parents=True, exist_ok=True)
    fine_affine = synth_brain.full_resolution_affine(affine)
    images = synth_brain.anatomical_images(brain, rng)
    for res, grid_affine, convert in (
        ("1pt8", affine, lambda v: v),
        (None, fine_affine, synth_brain.upsample2),
    ):
        synth_brain.save_nifti(
            convert(brain.astype(np.uint8)),
            grid_affine,
            root / layout.anatomical_brain_mask(subject, res),
        )
        for modality, image in images.items():
            synth_brain.save_nifti(
                convert(image), grid_affine, root / layout.anatomical_image(subject, modality, res)
            )


def _write_rois(
    root: Path, subject: str, rois: dict, affine: np.ndarray, n_vertices: int, rng
) -> None:
    for (category, name), mask in rois.items():
        (root / layout.roi_category_dir(subject, category)).mkdir(parents=True, exist_ok=True)
        synth_brain.save_nifti(
            mask.astype(np.uint8), affine, root / layout.roi_volume(subject, category, name)
        )
        for hemi in ("L", "R"):
            centre = rng.integers(n_vertices)
            vertices = np.sort((centre + np.arange(int(rng.integers(10, 40)))) % n_vertices)
            synth_brain.write_surface_roi(
                root / layout.roi_surface(subject, category, name, hemi=hemi, kind="func.gii"),
                root / layout.roi_surface(subject, category, name, hemi=hemi, kind="label"),
                vertices,
                n_vertices=n_vertices,
                subject=subject,
                rng=rng,
            )


def _write_splits(
    root: Path, stimset: StimulusSet, clip: np.ndarray, subjects: list[str], seed: int
) -> None:
    from neurotorch.fmri.split_makers import make_splits, write_split_files

    names = np.asarray(stimset.names)
    ood = stimset.indices("ood")
    shared = stimset.indices("shared12", "shared4")
    pools = {"shared": shared}  # subject pools, as in laion_fmri: the shared images + their own
    pools.update(
        {s: np.concatenate([shared, stimset.indices("unique", participant=s)]) for s in subjects}
    )
    for pool, rows in pools.items():
        splits = make_splits(
            list(names[rows]),
            clip[rows],
            pool=pool,
            ood_names=list(names[ood]),
            seed=seed,
            progress=False,
        )
        write_split_files(splits, root / layout.SPLITS_DIR)


__all__ = ["SIZES", "SNR_PRESETS", "SizePreset", "default_root", "make_laion_fmri"]
