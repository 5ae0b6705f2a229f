"""Shared parameter documentation: each parameter is described once, here (MNE's docdict).

A docstring names an entry as ``%(name)s`` on a line of its own, indented like the other
parameters; `fill_doc` replaces it with the entry, re-indented. Entries are numpydoc blocks
(``name`` line, then the description indented by four spaces), grouped by family below.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=Callable)

docdict: dict[str, str] = {}

# -- every family --------------------------------------------------------------------------------
docdict["data_dir"] = """
data_dir
    The dataset root: a local folder, an fsspec URL (``s3://bucket/prefix``), or
    ``"synthetic"`` for the built-in synthetic dataset of this family (written on first use under
    ``NEUROTORCH_DATA``).
"""
docdict["storage_options"] = """
storage_options
    fsspec options for a URL ``data_dir`` (``{"profile": "lab"}``, ``{"endpoint_url": ...}``);
    passed to fsspec unchanged.
"""
docdict["seed"] = """
seed
    Seed of every random choice (an integer >= 0); the same seed gives the same result on any
    machine, worker and rank.
"""
docdict["batch_size"] = """
batch_size
    Items per batch (a positive integer).
"""
docdict["num_workers"] = """
num_workers
    ``DataLoader`` worker processes (0: load in the main process).
"""
docdict["predict_part"] = """
predict_part
    The part ``predict`` runs on, in order and unshuffled: ``"test"`` (default), ``"val"`` or
    ``"train"``.
"""
docdict["streaming"] = """
streaming
    ``True``: serve an iterable dataset that reads its files front to back, sharded across
    ranks and workers; ``False``: a map-style dataset with random access.
"""

# -- LAION-fMRI readers (neurotorch.fmri) ---------------------------------------------------------
docdict["fmri_data_dir"] = """
data_dir
    The LAION-fMRI root: a local folder, an fsspec URL (``s3://bucket/prefix``) or a
    `neurotorch.io.storage.DataRoot`. Default: ``$LAION_FMRI_DATA_DIR``, then the folder in
    laion_fmri's config file, then ``<NEUROTORCH_DATA>/laion-fmri``.
"""
docdict["session"] = """
session
    A session id (``"ses-01"``, ``"01"``), or a list of them (the result is then a dict keyed by
    session). Required: single-trial betas are stored per session.
"""
docdict["roi"] = """
roi
    An ROI query: an ROI name (``"FFA1"``), a category (``"face"``), ``"all"``, or a list mixing
    them (their union, overlapping voxels counted once). Excludes ``mask``.
"""
docdict["mask"] = """
mask
    Your own boolean voxel mask: one entry per brain voxel (or the 3-D grid). Excludes ``roi``.
"""
docdict["nc_threshold"] = """
nc_threshold
    Keep the voxels whose noise ceiling of the session (percent) is at least this value.
"""
docdict["mask_source"] = """
mask_source
    The brain mask that defines the voxel axis: ``"anatomical"`` (the shipped brain mask, the
    default, as in laion_fmri) or ``"rsquare"`` (mean R² finite and non-zero).
"""
docdict["nan_policy"] = """
nan_policy
    NaN/±inf among the selected betas: ``"raise"`` (default: `FormatError` naming the file and
    the count), ``"zero"`` (replaced by 0) or ``"keep"``.
"""


# -- connectome ----------------------------------------------------------------------------------
docdict["connectome_data_dir"] = """
data_dir
    The connectome: a folder of batch files, one file or a list of them (local paths or fsspec
    URLs such as ``s3://bucket/prefix``), a `neurotorch.connectome.ConnectomeBatches`, or
    ``"synthetic"`` for the synthetic connectome of ``synthetic_size`` (written on first use
    under ``NEUROTORCH_DATA``). ``None`` is an alias of ``"synthetic"``.
"""
docdict["connectome_subjects"] = """
subjects
    Subject indices to serve, distinct, in ``0 .. n_subjects - 1`` (default: all).
"""
docdict["connectome_parcellation"] = """
parcellation
    Optional 3-D label image (file, image or `neurotorch.connectome.Parcellation`), sampled at
    the connectome's voxels: each item's time series becomes the mean of every parcel.
"""
docdict["connectome_connectivity"] = """
connectivity
    Add each subject's (n_parcels, n_parcels) Pearson connectivity matrix (needs a
    ``parcellation``).
"""
docdict["connectome_synthetic_size"] = """
synthetic_size
    Size of the synthetic connectome when ``data_dir`` is ``"synthetic"``: ``"tiny"`` (6
    subjects, 8 mm grid), ``"small"`` (20 subjects, 4 mm) or ``"bench"`` (10 subjects, 2 mm).
"""

docdict["lnm_lesions"] = """
lesions
    Lesion masks, see `neurotorch.connectome.load_lesions`, or an already loaded `LesionSet`.
"""
docdict["lnm_connectome"] = """
connectome
    Folder of batch files (local path or fsspec URL such as ``s3://bucket/prefix``) or a
    `ConnectomeBatches`.
"""
docdict["lnm_options"] = """
method
    ``"boes"``: the seed is the mean of all lesion voxels; ``"pini"``: the mean of the lesion
    voxels whose loading on the first principal component of their correlation with the lesion
    mean (over subjects) is at or above the ``pini_percentile`` percentile (one more pass).
pini_percentile
    Percentile (0-100) of absolute PC1 loadings below which PINI drops a voxel.
n_permutations
    Sign-flip permutations for family-wise error control (0: none). The observed |t| and the
    null come from one float64 computation (`neurotorch.connectome.permutation`).
seed
    Seed of the sign flips (`neurotorch.connectome.permutation.sign_flips`): the same seed
    gives the same FWER maps on any machine and device.
"""
docdict["lnm_lesion_options"] = """
**lesion_options
    ``threshold``, ``space``, ``resample``, ``allow_other_space`` of `load_lesions`.
"""

# -- stimulus features (neurotorch.features) ---------------------------------------------------
docdict["features_data_dir"] = """
data_dir
    The LAION-fMRI root whose stimulus set is used (a folder, an fsspec URL or a
    `neurotorch.io.storage.DataRoot`); default: the configured root. (``"synthetic"`` is resolved
    by the datasets and the command line, not here: pass the folder
    `neurotorch.synthetic.laion_fmri.make_laion_fmri` returns.)
"""
docdict["feature_specs"] = """
features
    One `neurotorch.features.FeatureSpec` or several (or dicts of their fields).
"""
docdict["feature_options"] = """
options
    `neurotorch.features.ExtractionOptions`: device, batch size, image-decoding workers, chunk
    size, worker processes or Dask scheduler, ranks, cache folder, progress bar.
"""


# -- reference models (neurotorch.models) --------------------------------------------------------
docdict["output_dir"] = """
output_dir
    Folder of the reports the model writes when it is tested (metrics JSON, PNG figures); default
    the trainer's log folder (``runs/<name>/version_N/`` on the command line).
"""
docdict["levels"] = """
levels
    Nominal coverage levels of the central credible intervals that are reported, and targeted
    after calibration (numbers in (0, 1)).
"""
docdict["coverage_mode"] = """
coverage_mode
    What an interval covers: ``"time_averaged"`` (the time average of each source, as
    CaliBrain's calibrator) or ``"pointwise"`` (every time sample).
"""


# -- LAION-fMRI: subjects, settings objects and their fields --------------------------------------
docdict["fmri_subject"] = """
subject
    One subject id (``"sub-01"``, ``"01"``) or a list of them. A string is one subject. Subjects
    have different voxel counts, so a batch holds one subject's items.
"""
docdict["trials"] = """
trials
    Which trials: a `neurotorch.data.fmri.TrialSelection`, or a dict of its fields
    (``{"split": "random_0", "part": "train"}``); default every trial of the subjects.
"""
docdict["voxels"] = """
voxels
    Which voxels: a `neurotorch.data.fmri.VoxelSelection`, or a dict of its fields
    (``{"roi": ["face", "V1v"], "nc_threshold": 20}``); default the whole brain mask.
"""
docdict["read"] = """
read
    How betas are read: a `neurotorch.data.fmri.ReadSettings`, or a dict of its fields
    (``{"zscore": True}``); default float32, raw values, ``nan_policy="raise"``.
"""
docdict["fmri_features"] = """
features
    What of the stimulus each item carries: embedding models (``"CLIP"``, ``"DINOv2"``,
    ``"PEcore"``, ``"SigLIP2"``), features of any vision model (a
    `neurotorch.features.FeatureSpec`, or in YAML a dict of its fields: a model, a layer, a
    pooling; computed once into the feature cache) and modalities (``"image"``, ``"captions"``,
    ``"segmentation"``), one or a list; ``None`` for betas only. One feature space gives the item
    key ``embedding``, several ``embedding_<name>`` each (the model's name, or the spec's
    ``name``); ``"image"`` gives ``image`` (see ``image_transform``), ``"captions"`` a list of
    strings, ``"segmentation"`` uint8 ``(k, H, W)`` masks and ``segmentation_nouns``.
"""
docdict["image_transform"] = """
image_transform
    Callable applied to each decoded PIL image (default: a ``(C, H, W)`` uint8 tensor).
"""
docdict["fmri_transform"] = """
transform
    Callable applied to each item dict, after everything else (or None).
"""
docdict["synthetic"] = """
synthetic
    The synthetic dataset that ``data_dir="synthetic"`` stands for: a
    `neurotorch.data.fmri.settings.SyntheticOptions` or a dict (``{"size": "tiny", "snr":
    "realistic"}``); its seed is ``seed``.
"""
docdict["split"] = """
split
    The split's name: ``"random_0"`` … ``"random_4"``, ``"cluster_k5_0"`` … ``"cluster_k5_4"``,
    ``"tau"`` or ``"ood"`` (the bundled splits), or a split file's name; None keeps every trial.
    The part is ``part``, not a suffix of the name.
"""
docdict["part"] = """
part
    Which part of the split: ``"train"``, ``"val"`` (the ``val_fraction`` of the training
    images carved out by ``val_seed``), ``"test"`` or ``"all"`` (default).
"""
docdict["pool"] = """
pool
    The stimulus pool of the split: ``"shared"`` (default) or a subject id.
"""
docdict["variant_id"] = """
variant_id
    Variant of the split (almost always 0).
"""
docdict["ood_types"] = """
ood_types
    OOD types to keep (``"shape"``, ``["cropped", "gabor"]``): the test images of the ``"ood"``
    split of these types, or, with no split, the OOD trials of these types.
"""
docdict["val_fraction"] = """
val_fraction
    Share of the split's training images held out as ``part="val"`` (and left out of
    ``part="train"``), in [0, 1); 0 means no validation part.
"""
docdict["val_seed"] = """
val_seed
    Seed of the choice of validation images (the same seed gives the same images everywhere).
"""
docdict["fmri_sessions"] = """
sessions
    Sessions (``"ses-01"``, a list, or a dict per subject); default every session. A string is
    one session.
"""
docdict["stimuli"] = """
stimuli
    ``"shared"`` or ``"unique"`` keeps the trials of those stimuli; None keeps both.
"""
docdict["image_names"] = """
image_names
    Keep only trials of these images (a string is one image name).
"""
docdict["roi"] = """
roi
    ROI query: an ROI name (``"FFA1"``), a category (``"face"``), ``"all"``, or a list of them
    (their union); None: no ROI restriction.
"""
docdict["mask"] = """
mask
    A custom mask in one shape: a 3-D boolean array on the subject's functional grid (what
    ``BetasDataset.voxel_mask()`` returns), or the path of a NIfTI mask on that grid (non-zero
    voxels are kept).
"""
docdict["mask_source"] = """
mask_source
    The brain mask: ``"anatomical"`` (default, the shipped brain mask) or ``"rsquare"``
    (mean R² finite and non-zero).
"""
docdict["nc_threshold"] = """
nc_threshold
    Keep voxels whose subject-level noise ceiling ``nc_desc`` is at least this (percent); one
    map for all sessions, so every session shares one voxel axis. None: no threshold.
"""
docdict["nc_desc"] = """
nc_desc
    The subject-level noise-ceiling map of ``nc_threshold``: ``"NoiseceilingAllrep"``
    (default), ``"Noiseceiling4rep"`` or ``"Noiseceiling12rep"``.
"""
docdict["dtype"] = """
dtype
    Storage dtype of the prepared store: ``"float32"`` (default) or ``"float16"`` (half the disk
    and page cache, ~3 significant digits; betas beyond ±65504 are refused). Items are float32.
"""
docdict["zscore"] = """
zscore
    Z-score every voxel within its session (statistics of all the session's trials, kept with
    the prepared store; a constant voxel is divided by 1). Map-style only.
"""
docdict["average_repeats"] = """
average_repeats
    One item per (subject, image): the mean of its selected presentations (``n_repeats`` says
    how many; ``trial`` is -1). Map-style only.
"""
docdict["nan_policy"] = """
nan_policy
    Non-finite betas among the selected voxels: ``"raise"`` (default: an error naming the file),
    ``"zero"`` (replaced by 0) or ``"keep"``.
"""
docdict["cache_dir"] = """
cache_dir
    Folder of the prepared store (default ``NEUROTORCH_CACHE``).
"""
docdict["verify"] = """
verify
    Streams only: ``"first-use"`` (default) reads a betas file not verified yet in full (gzip
    CRC-32 and length) before serving from it, once per file version; ``"off"`` does not. The
    prepared store needs no such option (its build reads every file in full).
"""
docdict["shuffle_buffer"] = """
shuffle_buffer
    Streams only: size of the shuffle buffer (sessions are then visited in a seeded order too);
    0 or 1 reads in file order. None (default): for a DataModule's training stream 1024 trials,
    or as many as fit in 256 MB (117 at LAION-fMRI's whole brain), file order otherwise. The
    buffer is held by each reader (each DataLoader worker) and filled before the first item.
    The map-style dataset is shuffled by its sampler instead.
"""


# -- M/EEG ---------------------------------------------------------------------------------------
docdict["meeg_y"] = """
y
    ``(B, M, T)`` sensor data of ``B`` trials (µV for EEG, fT for MEG).
"""
docdict["meeg_leadfield_tensor"] = """
leadfield
    ``(M, N)`` (fixed orientation) or ``(M, N, K)`` (free) leadfield, µV/nAm or fT/nAm; the
    ``(N, K)`` axes are flattened source-major.
"""
docdict["meeg_noise_var"] = """
noise_var
    The white sensor noise variance each trial assumes (µV² or fT²): a scalar or ``(B,)``.
"""
docdict["meeg_noise_var_or_none"] = """
noise_var
    The white sensor noise variance each trial assumes (µV² or fT²; a scalar or ``(B,)``), or
    ``None`` to learn it with the prior (CaliBrain's ``adaptive_joint_learning``; gamma-MAP
    learns one per sensor).
"""
docdict["meeg_max_iter_tol"] = """
max_iter, tol
    At most ``max_iter`` iterations; stop once the relative change of the prior variances is
    below ``tol`` (CaliBrain's rule and defaults).
"""
docdict["meeg_leadfield"] = """
leadfield
    The forward model: a `neurotorch.meeg.leadfield.LeadfieldData`, or a
    `neurotorch.meeg.leadfield.LeadfieldSpec` (or its fields as a mapping, e.g.
    ``{"sensor": "mag", "n_sources": 300}``) saying how to load, simulate or draw one
    (``data_dir="synthetic"``: the built-in synthetic CaliBrain root).
"""
docdict["meeg_posterior"] = """
posterior
    Which posterior the items carry: a `neurotorch.meeg.solvers.PosteriorSpec` (or its fields as
    a mapping, e.g. ``{"solver": "gamma_map", "noise_type": "baseline"}``): CaliBrain's solver
    and its options, the prior variance ``gamma``, how the noise variance is set
    (``noise_type``) and a misspecification factor ``noise_var_scale``. Default: BMN with
    learned ``gamma`` and the true noise variance.
"""
docdict["meeg_nnz_alpha"] = """
nnz, alpha
    The grids of active-source counts (one drawn per batch of trials) and of SNRs α in [0, 1]
    (one drawn per trial); CaliBrain's paper grid by default.
"""
docdict["meeg_erp_config"] = """
config
    Timing, band and amplitudes of the simulated ERPs (`neurotorch.meeg.simulation.ERPConfig`;
    CaliBrain's defaults).
"""
docdict["meeg_grid"] = """
builder
    Where the leadfields are loaded from (``<subject>_<orientation>_leadfield.npz``).
out_dir
    A new (or empty) folder for the summaries, ``run_manifest.csv`` and ``grid.json`` (the
    grid's record). The runs are written into the work folder ``<out_dir>.units`` beside it,
    renamed to ``out_dir`` at the end, so ``out_dir`` holds all of them or does not exist.
data_grid
    Values of ``subject``, ``orientation_type`` (a name or a list of names), ``nnz`` (counts)
    and ``alpha_SNR`` (in [0, 1]); see `neurotorch.meeg.grid.check_data_grid`.
noise_types
    CaliBrain's ``noise_type`` values to cross with the data grid.
n_runs, random_state
    Runs per configuration and the seed of the per-run seeds (all drawn up front, so a run's
    seed does not depend on where or in which order it runs).
config
    ERP settings.
solver, solver_options
    CaliBrain's solver name (a key of `neurotorch.meeg.solvers.SOLVERS`; BMN learns its
    ``gamma``) and its options (``solver_params``, written to the manifest). eLORETA needs
    ``noise_types`` ``"oracle"`` / ``"baseline"``; sFlex needs leadfields with
    ``src_coords``. The manifest's ``solver`` column carries CaliBrain's name of the solver
    under each noise type (``BMN_joint``, ``gamma_lambda_map``, ``gamma_lambda_map_sflex``
    when the noise is learned).
manifest_paths
    How the manifest names each summary: ``"relative"`` (to the manifest's folder; the
    folder can be moved; CaliBrain, which resolves paths against its working directory,
    reads it from that folder) or ``"absolute"`` (CaliBrain reads it from any working
    directory; the folder cannot be moved). `neurotorch.meeg.grid.read_manifest` reads both.
"""
docdict["meeg_device"] = """
device
    Where trials are simulated (and posteriors computed): ``"cpu"`` or a CUDA device.
"""
docdict["meeg_split_lengths"] = """
train_length, val_length, test_length
    Trials per part (positive integers; with ``streaming`` rounded up to whole batches). The
    parts draw from independent seed streams of ``seed``.
"""
docdict["meeg_coverage_mode"] = """
mode
    ``"time_averaged"`` (CaliBrain's calibrator: one interval per source for its time average,
    with variance ``var / T``) or ``"pointwise"`` (one per source and time sample).
"""
docdict["meeg_levels"] = """
levels
    Nominal coverage levels in [0, 1].
"""


def fill_doc(obj: T) -> T:
    """Replace every ``%(name)s`` line of ``obj.__doc__`` with ``docdict[name]``, indented.

    Raises ``KeyError`` at import time for a name without an entry, so a typo cannot ship.
    """
    doc = obj.__doc__
    if not doc:
        return obj
    lines = []
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.startswith("%(") and stripped.endswith(")s"):
            indent = line[: len(line) - len(line.lstrip())]
            entry = docdict[stripped[2:-2]].strip("\n")
            lines.append(textwrap.indent(entry, indent))
        else:
            lines.append(line)
    obj.__doc__ = "\n".join(lines)
    return obj
