"""Every file name of the LAION-fMRI tree, in one place.

All functions return paths relative to the dataset root, with forward slashes, so they serve a
local folder and an ``s3://`` bucket alike (see `neurotorch.io.storage.DataRoot`).
"""

from __future__ import annotations

import re

from neurotorch.errors import ParameterError, UnknownModelError, UnsafePathError

GLM_DIR = "derivatives/glmsingle-tedana"
ANAT_DIR = "derivatives/anatomical"
ROI_DIR = "derivatives/rois"
FREESURFER_DIR = "derivatives/freesurfer"
STIMULI_DIR = "stimuli"
SPLITS_DIR = "splits"
GROUNDTRUTH_DIR = "_groundtruth"

ANAT_SESSION = "ses-PrismaAnat"
RESOLUTIONS = ("1pt8", None)
SUBJECT_NOISE_CEILINGS = ("Noiseceiling4rep", "Noiseceiling12rep", "NoiseceilingAllrep")
EMBEDDING_MODELS = {"CLIP": 1024, "DINOv2": 1024, "PEcore": 1024, "SigLIP2": 1152}
ROI_CATEGORIES: dict[str, tuple[str, ...]] = {
    "body": ("EBA", "FBA"),
    "character": ("VWFA1", "VWFA2", "mfswords", "pSTSwords"),
    "face": ("FFA1", "FFA2", "OFA", "pSTSfaces"),
    "laion": ("laionEVC", "laiondorsal", "laiongeneral", "laionlateral", "laionventral"),
    "motion": ("MST", "MT"),
    "object": ("lobjects", "vobjects"),
    "place": ("MPA", "OPA", "PPA"),
    "retinotopy": (
        "IPCS", "IPS0", "LO1", "LO2", "SPCS", "TO1", "TO2", "V1d", "V1v", "V2d", "V2v", "V3A",
        "V3B", "V3d", "V3v", "VO1", "VO2", "hV4",
    ),
}  # fmt: skip
OOD_TYPES = (
    "cropped", "gabor", "gaudy", "illusion-classic", "illusion-natural", "relations", "selfmade",
    "shape", "unusual",
)  # fmt: skip

TRIAL_COLUMNS = ("session", "run", "beta_index", "label")
#: values of the metadata column ``unique_or_shared``: the stimulus subsets a selection can name
STIMULUS_SUBSETS = ("shared", "unique")
METADATA_COLUMNS = ("image_name", "dataset", "participant", "unique_or_shared", "n_reps")
CAPTION_COLUMNS = ("image_name", "caption_idx", "source", "caption")
# files may add ``localized`` (see `StimulusSegmentations.nouns`)
SEGMENTATION_COLUMNS = (
    "mask_row", "image_name", "noun", "instance_id", "score", "box_x0", "box_y0", "box_x1", "box_y1",
)  # fmt: skip

_SUBJECT = re.compile(r"^(sub-)?([A-Za-z0-9]+)$")
_SESSION = re.compile(r"^(ses-)?([A-Za-z0-9]+)$")
_SUBJECT_DIR = re.compile(r"^sub-[A-Za-z0-9]+$")
_SESSION_DIR = re.compile(r"^ses-[A-Za-z0-9]+$")
_SUBJECT_IN_PATH = re.compile(r"(?:^|/)(sub-[A-Za-z0-9]+)(?:/|$)")
_SESSION_IN_PATH = re.compile(r"(?:^|/)(ses-[A-Za-z0-9]+)(?:/|$)")
_ROI_FILE = re.compile(
    r"^(?P<subject>sub-[A-Za-z0-9]+)_(?:hemi-[LR]_)?space-[A-Za-z0-9]+(?:_res-[A-Za-z0-9]+)?"
    r"_label-(?P<roi>.+)_mask\.(?:nii\.gz|func\.gii|label)$"
)
#: endings of split files: plain JSON, or gzip-compressed (the bundled copy)
SPLIT_SUFFIXES = (".json", ".json.gz")


def _refuse_path_like(value: object, what: str) -> None:
    """Raise `UnsafePathError` for an id that holds path syntax (``/``, ``\\``, ``..``)."""
    text = str(value)
    if "/" in text or "\\" in text or ".." in text:
        raise UnsafePathError(
            f"Invalid {what} id {value!r}: ids are plain names such as "
            f"{'sub-01' if what == 'subject' else 'ses-01'!r}, never paths."
        )


def subject_id(subject: str | int) -> str:
    """``"sub-01"`` from ``"sub-01"``, ``"01"`` or ``1``."""
    text = f"{subject:02d}" if isinstance(subject, int) else str(subject)
    _refuse_path_like(text, "subject")
    match = _SUBJECT.match(text)
    if not match:
        raise ParameterError(f"Invalid subject id {subject!r}; expected e.g. 'sub-01'.")
    return f"sub-{match.group(2)}"


def session_id(session: str | int) -> str:
    """``"ses-01"`` from ``"ses-01"``, ``"01"`` or ``1``."""
    text = f"{session:02d}" if isinstance(session, int) else str(session)
    _refuse_path_like(text, "session")
    match = _SESSION.match(text)
    if not match:
        raise ParameterError(f"Invalid session id {session!r}; expected e.g. 'ses-01'.")
    return f"ses-{match.group(2)}"


def subject_dir(subject: str) -> str:
    return f"{GLM_DIR}/{subject}"


def session_func_dir(subject: str, session: str) -> str:
    return f"{GLM_DIR}/{subject}/{session}/func"


def session_betas(subject: str, session: str) -> str:
    name = f"{subject}_{session}_task-images_space-T1w_stat-effect_desc-SingletrialBetas_statmap.nii.gz"
    return f"{session_func_dir(subject, session)}/{name}"


def session_trials(subject: str, session: str) -> str:
    name = f"{subject}_{session}_task-images_desc-SingletrialBetas_trials.tsv"
    return f"{session_func_dir(subject, session)}/{name}"


def session_noise_ceiling(subject: str, session: str) -> str:
    name = f"{subject}_{session}_task-images_space-T1w_desc-Noiseceiling_statmap.nii.gz"
    return f"{session_func_dir(subject, session)}/{name}"


def session_r2(subject: str, session: str) -> str:
    name = f"{subject}_{session}_task-images_space-T1w_stat-rsquare_desc-R2_statmap.nii.gz"
    return f"{session_func_dir(subject, session)}/{name}"


def subject_r2mean(subject: str) -> str:
    return f"{GLM_DIR}/{subject}/{subject}_task-images_space-T1w_stat-rsquare_desc-R2mean_statmap.nii.gz"


def subject_noise_ceiling(subject: str, desc: str) -> str:
    if desc not in SUBJECT_NOISE_CEILINGS:
        raise ParameterError(
            f"Unknown noise-ceiling desc {desc!r}; choose one of {SUBJECT_NOISE_CEILINGS}."
        )
    return f"{GLM_DIR}/{subject}/{subject}_task-images_space-T1w_desc-{desc}_statmap.nii.gz"


def _res_entity(res: str | None) -> str:
    if res not in RESOLUTIONS:
        raise ParameterError(
            f"Unknown resolution {res!r}; choose '1pt8' or None (full resolution)."
        )
    return f"_res-{res}" if res else ""


def anatomical_dir(subject: str) -> str:
    return f"{ANAT_DIR}/{subject}/{ANAT_SESSION}/anat"


def anatomical_brain_mask(subject: str, res: str | None = "1pt8") -> str:
    name = f"{subject}_{ANAT_SESSION}_space-T1w{_res_entity(res)}_desc-brain_mask.nii.gz"
    return f"{anatomical_dir(subject)}/{name}"


def anatomical_image(subject: str, modality: str = "T1w", res: str | None = "1pt8") -> str:
    if modality not in ("T1w", "T2w"):
        raise ParameterError(f"Unknown anatomical modality {modality!r}; choose 'T1w' or 'T2w'.")
    name = f"{subject}_{ANAT_SESSION}_space-T1w{_res_entity(res)}_{modality}.nii.gz"
    return f"{anatomical_dir(subject)}/{name}"


def roi_category_dir(subject: str, category: str) -> str:
    return f"{ROI_DIR}/{subject}/{category}"


def roi_volume(subject: str, category: str, roi: str) -> str:
    return f"{roi_category_dir(subject, category)}/{subject}_space-T1w_res-1pt8_label-{roi}_mask.nii.gz"


def roi_surface(subject: str, category: str, roi: str, hemi: str, kind: str = "func.gii") -> str:
    if hemi not in ("L", "R"):
        raise ParameterError(f"Unknown hemisphere {hemi!r}; choose 'L' or 'R'.")
    if kind not in ("func.gii", "label"):
        raise ParameterError(f"Unknown surface ROI format {kind!r}; choose 'func.gii' or 'label'.")
    name = f"{subject}_hemi-{hemi}_space-fsnative_label-{roi}_mask.{kind}"
    return f"{roi_category_dir(subject, category)}/{name}"


def stimuli_metadata() -> str:
    return f"{STIMULI_DIR}/task-images_metadata.csv"


def stimuli_images() -> str:
    return f"{STIMULI_DIR}/task-images_stimuli.h5"


def embeddings(model: str) -> str:
    if model not in EMBEDDING_MODELS:
        raise UnknownModelError(
            f"Unknown embedding model {model!r}; choose one of {list(EMBEDDING_MODELS)}."
        )
    return f"{STIMULI_DIR}/task-images_desc-{model}_embeddings.h5"


def segmentations() -> str:
    return f"{STIMULI_DIR}/task-images_desc-segmentations.h5"


def segmentations_metadata() -> str:
    return f"{STIMULI_DIR}/task-images_desc-segmentations_metadata.csv"


def captions() -> str:
    return f"{STIMULI_DIR}/task-images_desc-captions.csv"


def is_subject_dir(name: str) -> bool:
    """Whether a folder name is a subject's (``sub-01``)."""
    return bool(_SUBJECT_DIR.match(name))


def is_session_dir(name: str) -> bool:
    """Whether a folder name is a session's (``ses-01``)."""
    return bool(_SESSION_DIR.match(name))


def roi_label(file_name: str, subject: str | None = None) -> str | None:
    """The ROI an ROI file (volume or surface) holds (``sub-01_..._label-FFA1_mask.nii.gz`` →
    ``FFA1``); None for another file, or for a file of another subject than ``subject``."""
    match = _ROI_FILE.match(file_name)
    if match is None or subject not in (None, match["subject"]):
        return None
    return match["roi"]


def split_name(file_name: str) -> str | None:
    """The split a split file holds (``tau.json`` or ``tau.json.gz`` → ``tau``), or None."""
    if file_name.startswith("."):
        return None
    for suffix in sorted(SPLIT_SUFFIXES, key=len, reverse=True):
        if file_name.endswith(suffix):
            return file_name[: -len(suffix)]
    return None


def _glm_kind(name: str) -> str:
    if "desc-SingletrialBetas_statmap" in name:
        return "betas"
    if name.endswith("_trials.tsv"):
        return "trials"
    if "Noiseceiling" in name:
        return "noise_ceiling"
    return "r2" if "stat-rsquare" in name else "glm_other"


def classify(relpath: str) -> dict[str, str | None]:
    """Kind, subject and session of a path of the tree (``kind`` is ``other`` if unknown).

    Kinds: betas, trials, noise_ceiling, r2, glm_other, roi, brain_mask, anatomical, stimuli,
    split, other; the anatomical session is not a session.
    """
    subject = m.group(1) if (m := _SUBJECT_IN_PATH.search(relpath)) else None
    session = m.group(1) if (m := _SESSION_IN_PATH.search(relpath)) else None
    name = relpath.rsplit("/", 1)[-1]
    folders = {ROI_DIR: "roi", STIMULI_DIR: "stimuli", SPLITS_DIR: "split"}
    if relpath.startswith(GLM_DIR + "/"):
        kind = _glm_kind(name)
    elif relpath.startswith(ANAT_DIR + "/"):
        kind = "brain_mask" if name.endswith("desc-brain_mask.nii.gz") else "anatomical"
    else:
        kind = next((k for d, k in folders.items() if relpath.startswith(d + "/")), "other")
    return {
        "kind": kind,
        "subject": subject,
        "session": None if session == ANAT_SESSION else session,
    }


def ood_type(image_name: str) -> str | None:
    """The OOD type of an image name (``shared_4rep_OOD_cropped_air_pump.png`` → ``cropped``)."""
    marker = "_OOD_"
    if marker not in image_name:
        return None
    rest = image_name.split(marker, 1)[1]
    for kind in sorted(OOD_TYPES, key=len, reverse=True):
        if rest.startswith(kind + "_"):
            return kind
    return None
