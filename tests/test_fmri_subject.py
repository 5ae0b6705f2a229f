"""`neurotorch.fmri` Subject / SubjectGroup against independent nibabel / pandas computations."""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from neurotorch.errors import (
    DataDirNotSetError,
    DataNotDownloadedError,
    FormatError,
    ShapeMismatchError,
    StimuliNotDownloadedError,
    SubjectNotFoundError,
)
from neurotorch.fmri import load_subject, load_subjects

pytest_plugins = ["s3_server"]

SUB = "sub-01"


# -- independent readers: file names written out by hand from the dataset description -------------


def glm(root: Path, *parts: str) -> Path:
    return root.joinpath("derivatives", "glmsingle-tedana", SUB, *parts)


def betas_file(root: Path, ses: str, sub: str = SUB) -> Path:
    return root / (
        f"derivatives/glmsingle-tedana/{sub}/{ses}/func/"
        f"{sub}_{ses}_task-images_space-T1w_stat-effect_desc-SingletrialBetas_statmap.nii.gz"
    )


def trials_file(root: Path, ses: str) -> Path:
    return glm(root, ses, "func", f"{SUB}_{ses}_task-images_desc-SingletrialBetas_trials.tsv")


def session_nc_file(root: Path, ses: str) -> Path:
    return glm(
        root, ses, "func", f"{SUB}_{ses}_task-images_space-T1w_desc-Noiseceiling_statmap.nii.gz"
    )


def anat_file(root: Path, suffix: str, sub: str = SUB) -> Path:
    return (
        root
        / f"derivatives/anatomical/{sub}/ses-PrismaAnat/anat/{sub}_ses-PrismaAnat_space-T1w{suffix}"
    )


def roi_files(root: Path, sub: str = SUB) -> dict[str, tuple[str, Path]]:
    """ROI name -> (category, volume file), found by globbing."""
    out = {}
    for path in sorted(
        (root / "derivatives/rois" / sub).glob("*/*_space-T1w_res-1pt8_label-*_mask.nii.gz")
    ):
        name = path.name.split("_label-")[1].removesuffix("_mask.nii.gz")
        out[name] = (path.parent.name, path)
    return out


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def brain(root: Path, sub: str = SUB) -> np.ndarray:
    return load(anat_file(root, "_res-1pt8_desc-brain_mask.nii.gz", sub)) != 0


def roi(root: Path, *names: str) -> np.ndarray:
    files = roi_files(root)
    return np.logical_or.reduce([load(files[n][1]) != 0 for n in names])


def expected_betas(root: Path, ses: str, voxels: np.ndarray, sub: str = SUB) -> np.ndarray:
    data = np.asarray(nib.load(betas_file(root, ses, sub)).get_fdata(dtype=np.float32))
    return data.reshape(-1, data.shape[3])[voxels.ravel()].T


@pytest.fixture(scope="module")
def root(tiny_laion_root: Path) -> Path:
    return tiny_laion_root


@pytest.fixture(scope="module")
def sub(root: Path):
    return load_subject(SUB, root)


# -- loading -----------------------------------------------------------------------------------------


def test_load_subject_ids_and_errors(root, monkeypatch, tmp_path):
    assert load_subject("01", root).subject_id == SUB
    for number in (1, np.int64(2), 3.0):  # laion_fmri's newest code: a TypeError, no position
        with pytest.raises(TypeError, match="string"):
            load_subject(number, root)
    with pytest.raises(SubjectNotFoundError, match="sub-01, sub-02"):
        load_subject("sub-07", root)
    # except clauses written for laion_fmri: an absent subject is its DataNotDownloadedError
    for laion_class in (DataNotDownloadedError, FileNotFoundError, ValueError):
        with pytest.raises(laion_class, match="sub-07"):
            load_subject("sub-07", root)
    monkeypatch.setenv("LAION_FMRI_DATA_DIR", str(root))
    assert load_subject(SUB).root.url == str(root.resolve())
    monkeypatch.delenv("LAION_FMRI_DATA_DIR")
    monkeypatch.setenv("NEUROTORCH_DATA", str(tmp_path / "empty-home"))
    with pytest.raises(DataDirNotSetError, match="LAION_FMRI_DATA_DIR.*dataset_initialize"):
        load_subject(SUB)
    with pytest.raises(DataNotDownloadedError):
        load_subject(SUB, tmp_path)


def test_laion_fmri_config_file_is_read_and_written(root, monkeypatch, tmp_path):
    """laion_fmri keeps {"data_dir": ...} in $XDG_CONFIG_HOME/laion_fmri/config.json."""
    from neurotorch.fmri import dataset_initialize, get_data_dir, set_data_dir

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("NEUROTORCH_DATA", str(tmp_path / "empty-home"))
    config = tmp_path / "cfg" / "laion_fmri" / "config.json"
    with pytest.raises(DataDirNotSetError, match="dataset_initialize"):
        get_data_dir()
    # a file as laion_fmri writes it
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"data_dir": str(root)}, indent=2))
    assert get_data_dir() == str(root)
    assert load_subject(SUB).root.url == str(root.resolve())
    # neurotorch's own variable and an explicit argument come first
    monkeypatch.setenv("LAION_FMRI_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_subject(SUB, root).root.url == str(root.resolve())
    with pytest.raises(DataNotDownloadedError):
        load_subject(SUB)
    monkeypatch.delenv("LAION_FMRI_DATA_DIR")
    # writing: the same file and key laion_fmri reads
    set_data_dir(tmp_path)
    assert json.loads(config.read_text()) == {"data_dir": str(tmp_path.resolve())}
    dataset_initialize(str(root))
    assert json.loads(config.read_text()) == {"data_dir": str(root.resolve())}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_initialize(tmp_path / "missing")
    with pytest.raises(TypeError):
        dataset_initialize(3)
    config.write_text("{not json")
    with pytest.raises(FormatError, match="config.json"):
        load_subject(SUB)


def test_sessions_and_trial_info(sub, root):
    sessions = sorted(p.name for p in glm(root).glob("ses-*"))
    assert sub.get_sessions() == sessions
    table = sub.get_trial_info("ses-01")
    pd.testing.assert_frame_equal(table, pd.read_csv(trials_file(root, "ses-01"), sep="\t"))
    both = sub.get_trial_info(sessions)
    assert list(both) == sessions
    with pytest.raises(ValueError, match="session is required"):
        sub.get_trial_info()


# -- masks -------------------------------------------------------------------------------------------


def test_brain_masks(sub, root):
    anatomical = brain(root)
    np.testing.assert_array_equal(sub.get_brain_mask(), anatomical.ravel())
    full = load(anat_file(root, "_desc-brain_mask.nii.gz")) != 0
    np.testing.assert_array_equal(sub.get_brain_mask(res=None), full.ravel())
    r2 = load(glm(root, f"{SUB}_task-images_space-T1w_stat-rsquare_desc-R2mean_statmap.nii.gz"))
    rsquare = np.isfinite(r2) & (r2 != 0)  # laion_fmri: every finite, non-zero R², negatives too
    assert (r2[rsquare] < 0).any()  # the case where "R² > 0" would differ
    np.testing.assert_array_equal(sub.get_brain_mask("rsquare"), rsquare.ravel())
    assert sub.get_n_voxels() == anatomical.sum() and sub.get_n_voxels("rsquare") == rsquare.sum()
    with pytest.raises(ValueError, match="source"):
        sub.get_brain_mask("bogus")


def test_available_rois_and_categories(sub, root):
    files = roi_files(root)
    assert sub.get_available_rois() == sorted(files)  # laion_fmri: one global sort
    assert sub.get_available_categories() == sorted({c for c, _ in files.values()})
    assert sub.get_available_rois(category="face") == sorted(
        n for n, (c, _) in files.items() if c == "face"
    )


def test_roi_grammar(sub, root):
    files = roi_files(root)
    b = brain(root)
    face = [n for n, (c, _) in files.items() if c == "face"]
    np.testing.assert_array_equal(sub.get_roi_mask("FFA1"), roi(root, "FFA1")[b])
    np.testing.assert_array_equal(sub.get_roi_mask("face"), roi(root, *face)[b])
    np.testing.assert_array_equal(sub.get_roi_mask("all"), roi(root, *files)[b])
    mixed = sub.get_roi_mask(["FFA1", "face", "V1v"])
    np.testing.assert_array_equal(mixed, roi(root, *face, "V1v")[b])
    masks = sub.get_roi_masks(["FFA1", "face"])
    assert list(masks) == ["FFA1", "face"]
    with pytest.raises(ValueError) as info:
        sub.get_roi_mask("not_an_roi")
    assert "FFA1" in str(info.value) and "retinotopy" in str(info.value)


def test_roi_data_formats(sub, root):
    _, volume_file = roi_files(root)["FFA1"]
    out = sub.get_roi_data("FFA1")
    # laion_fmri: the ROI over the brain voxels (the voxel axis), like get_roi_mask
    np.testing.assert_array_equal(out["FFA1"]["volume"], (load(volume_file) != 0)[brain(root)])
    r2 = load(glm(root, f"{SUB}_task-images_space-T1w_stat-rsquare_desc-R2mean_statmap.nii.gz"))
    rsquare = np.isfinite(r2) & (r2 != 0)
    got = sub.get_roi_data("FFA1", format="volume", mask_source="rsquare")["FFA1"]["volume"]
    np.testing.assert_array_equal(got, (load(volume_file) != 0)[rsquare])
    assert sub.get_roi_data("FFA1", format=None, hemi=None).keys() == out.keys()
    surface = volume_file.parent / f"{SUB}_hemi-L_space-fsnative_label-FFA1_mask"
    gii = nib.load(f"{surface}.func.gii").darrays[0].data != 0
    np.testing.assert_array_equal(out["FFA1"]["gii"]["hemi-L"]["func.gii"], gii)
    label_lines = Path(f"{surface}.label").read_text().splitlines()[2:]
    vertices = [int(line.split()[0]) for line in label_lines if line.strip()]
    np.testing.assert_array_equal(out["FFA1"]["gii"]["hemi-L"]["label"], vertices)
    left = sub.get_roi_data("FFA1", format="gii", hemi="L")["FFA1"]
    assert list(left) == ["gii"] and list(left["gii"]) == ["hemi-L"]
    only = sub.get_roi_data("face", format="func.gii")
    assert set(only) == {n for n, (c, _) in roi_files(root).items() if c == "face"}
    assert all(set(v["gii"]["hemi-R"]) == {"func.gii"} for v in only.values())
    assert list(sub.get_roi_data("FFA1", format="nii.gz")["FFA1"]) == ["volume"]
    for bad in ({"format": "bogus"}, {"format": "gii", "hemi": "X"}):
        with pytest.raises(ValueError):
            sub.get_roi_data("FFA1", **bad)


# -- betas -------------------------------------------------------------------------------------------


def test_get_betas_roi_equals_nibabel(sub, root):
    got = sub.get_betas(session="ses-01", roi="FFA1")
    want = expected_betas(root, "ses-01", brain(root) & roi(root, "FFA1"))
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


def test_get_betas_streaming_equals_nibabel(sub, root):
    pytest.importorskip("neurotorch.io.nifti")
    voxels = brain(root) & roi(root, "FFA1", "V1v")
    got = sub.get_betas(session="ses-02", roi=["FFA1", "V1v"], streaming=True)
    np.testing.assert_array_equal(got, expected_betas(root, "ses-02", voxels))
    shared = sub.get_betas(session="ses-02", roi="FFA1", stimuli="shared", streaming=True)
    np.testing.assert_array_equal(
        shared, sub.get_betas(session="ses-02", roi="FFA1", stimuli="shared")
    )


def test_get_betas_session_list_is_a_dict(sub, root):
    got = sub.get_betas(session=["ses-01", "ses-02"], roi="face")
    assert isinstance(got, dict) and list(got) == ["ses-01", "ses-02"]
    face = [n for n, (c, _) in roi_files(root).items() if c == "face"]
    for ses, betas in got.items():
        np.testing.assert_array_equal(
            betas, expected_betas(root, ses, brain(root) & roi(root, *face))
        )
    with pytest.raises(ValueError, match="session is required"):
        sub.get_betas()


def test_get_betas_filters(sub, root):
    b = brain(root)
    rng = np.random.default_rng(0)
    custom = rng.random(int(b.sum())) < 0.3
    voxels = np.zeros(b.shape, bool)
    voxels[b] = custom
    np.testing.assert_array_equal(
        sub.get_betas("ses-01", mask=custom), expected_betas(root, "ses-01", voxels)
    )

    nc = load(session_nc_file(root, "ses-01"))
    values = np.sort(nc[b & np.isfinite(nc)])
    threshold = float(values[len(values) // 2])  # a value some voxel has: a tie
    passing = np.nan_to_num(nc, nan=-np.inf) >= threshold  # laion_fmri keeps nc >= t
    assert (nc == threshold).sum() >= 1
    got = sub.get_betas("ses-01", roi="all", nc_threshold=threshold)
    all_rois = roi(root, *roi_files(root))
    np.testing.assert_array_equal(got, expected_betas(root, "ses-01", b & all_rois & passing))

    labels = pd.read_csv(trials_file(root, "ses-01"), sep="\t")["label"]
    full = expected_betas(root, "ses-01", b)
    for subset in ("shared", "unique"):
        rows = labels.str.startswith(subset + "_").to_numpy()
        np.testing.assert_array_equal(sub.get_betas("ses-01", stimuli=subset), full[rows])

    r2 = load(glm(root, f"{SUB}_task-images_space-T1w_stat-rsquare_desc-R2mean_statmap.nii.gz"))
    rsquare = np.isfinite(r2) & (r2 != 0)
    got = sub.get_betas("ses-01", mask_source="rsquare")
    np.testing.assert_array_equal(got, expected_betas(root, "ses-01", rsquare))

    with pytest.raises(ValueError, match="mutually exclusive"):
        sub.get_betas("ses-01", roi="FFA1", mask=custom)
    with pytest.raises(ValueError, match="shared"):
        sub.get_betas("ses-01", stimuli="both")
    with pytest.raises(ShapeMismatchError):
        sub.get_betas("ses-01", mask=custom[:-1])


def test_missing_session_names_file_and_remedy(sub):
    with pytest.raises(DataNotDownloadedError) as info:
        sub.get_betas("ses-09")
    message = str(info.value)
    assert (
        "ses-09" in message and "neurotorch download laion-fmri" in message and "synth" in message
    )


# -- noise ceiling, brain space, anatomy ---------------------------------------------------------


def test_noise_ceiling(sub, root):
    b = brain(root)
    ffa = b & roi(root, "FFA1")
    np.testing.assert_array_equal(
        sub.get_noise_ceiling(session="ses-01"), load(session_nc_file(root, "ses-01"))[b]
    )
    np.testing.assert_array_equal(
        sub.get_noise_ceiling(session="ses-02", roi="FFA1"),
        load(session_nc_file(root, "ses-02"))[ffa],
    )
    desc = load(glm(root, f"{SUB}_task-images_space-T1w_desc-Noiseceiling12rep_statmap.nii.gz"))
    np.testing.assert_array_equal(sub.get_noise_ceiling(desc="Noiseceiling12rep"), desc[b])
    assert list(sub.get_noise_ceiling(session=["ses-01", "ses-02"])) == ["ses-01", "ses-02"]
    for bad in ({}, {"session": "ses-01", "desc": "Noiseceiling4rep"}):
        with pytest.raises(ValueError, match="session.*desc"):
            sub.get_noise_ceiling(**bad)


def test_to_nifti_and_coordinates(sub, root, tmp_path):
    mask_image = nib.load(anat_file(root, "_res-1pt8_desc-brain_mask.nii.gz"))
    voxels = brain(root) & roi(root, "FFA1")
    values = np.arange(1, int(voxels.sum()) + 1, dtype=np.float32)
    image = sub.to_nifti(values, roi="FFA1")  # the common rule: path=None returns the image
    assert not list(tmp_path.iterdir())
    returned = sub.to_nifti(values, tmp_path / "ffa.nii.gz", roi="FFA1")
    sub.to_nifti(values, output_path=tmp_path / "laion.nii.gz", roi="FFA1")  # laion_fmri's name
    for found in (
        image,
        returned,
        nib.load(tmp_path / "ffa.nii.gz"),
        nib.load(tmp_path / "laion.nii.gz"),
    ):
        data = np.asarray(found.dataobj)
        np.testing.assert_array_equal(data[voxels], values)
        assert not data[~voxels].any()
        np.testing.assert_allclose(found.affine, mask_image.affine)
    with pytest.raises(ShapeMismatchError):
        sub.to_nifti(values[:-1], tmp_path / "bad.nii.gz", roi="FFA1")
    with pytest.raises(ValueError, match="output_path"):
        sub.to_nifti(values, tmp_path / "a.nii.gz", output_path=tmp_path / "b.nii.gz")

    ijk = np.argwhere(voxels)
    homogeneous = np.c_[ijk, np.ones(len(ijk))] @ mask_image.affine.T
    np.testing.assert_allclose(sub.get_voxel_coordinates(roi="FFA1"), homogeneous[:, :3])


def test_anatomical_accessors(sub, root):
    assert sub.has_anatomical()
    assert sub.get_anatomical_dir() == root.resolve() / "derivatives/anatomical" / SUB
    assert sub.get_t1w() == anat_file(root.resolve(), "_T1w.nii.gz")
    assert sub.get_t1w(res="1pt8") == anat_file(root.resolve(), "_res-1pt8_T1w.nii.gz")
    assert sub.get_t2w() == anat_file(root.resolve(), "_T2w.nii.gz")
    assert sub.get_anatomical_brain_mask(res="1pt8") == anat_file(
        root.resolve(), "_res-1pt8_desc-brain_mask.nii.gz"
    )


def test_partial_tree_errors(tmp_path):
    (tmp_path / "derivatives/glmsingle-tedana" / SUB / "ses-01").mkdir(parents=True)
    partial = load_subject(SUB, tmp_path)
    assert not partial.has_anatomical() and not partial.has_stimuli()
    with pytest.raises(DataNotDownloadedError, match="anatomical"):
        partial.get_anatomical_dir()
    with pytest.raises(DataNotDownloadedError, match="T1w"):
        partial.get_t1w()
    with pytest.raises(StimuliNotDownloadedError, match="task-images_metadata.csv"):
        _ = partial.metadata


# -- trial table, group, pickling ----------------------------------------------------------------


def test_metadata_joins_trials_with_stimulus_table(sub, root):
    stimuli = pd.read_csv(root / "stimuli/task-images_metadata.csv")
    frames = []
    for ses in sorted(p.name for p in glm(root).glob("ses-*")):
        trials = pd.read_csv(trials_file(root, ses), sep="\t")
        frames.append(trials.assign(session=ses, session_trial=np.arange(len(trials))))
    trials = pd.concat(frames, ignore_index=True)
    joined = trials.merge(
        stimuli.reset_index().rename(columns={"index": "stim_idx"}),
        left_on="label", right_on="image_name", how="left",
    )  # fmt: skip
    got = sub.metadata
    # laion_fmri: the trials TSV's columns, then the derived ones ("session" keeps its place)
    assert list(got.columns) == [
        "session", "run", "beta_index", "label",
        "session_trial", "image_name", "stim_idx", "unique_or_shared", "dataset",
    ]  # fmt: skip
    for column in (
        "session",
        "session_trial",
        "image_name",
        "stim_idx",
        "unique_or_shared",
        "dataset",
        "run",
    ):
        np.testing.assert_array_equal(
            got[column].to_numpy(), joined[column].to_numpy(), err_msg=column
        )


def test_group_shared_betas(root):
    group = load_subjects("all", root)
    assert [sid for sid, _ in group] == ["sub-01", "sub-02"] and len(group) == 2
    assert group[1].subject_id == "sub-02" and group["sub-01"].subject_id == "sub-01"
    shared = group.get_shared_betas(session="ses-01")
    for sid, betas in shared.items():
        labels = pd.read_csv(
            root
            / f"derivatives/glmsingle-tedana/{sid}/ses-01/func/{sid}_ses-01_task-images_desc-SingletrialBetas_trials.tsv",
            sep="\t",
        )["label"]
        rows = labels.str.startswith("shared_").to_numpy()
        np.testing.assert_array_equal(
            betas, expected_betas(root, "ses-01", brain(root, sid), sid)[rows]
        )
    metadata = group.get_shared_stimulus_metadata()
    assert (metadata["unique_or_shared"] == "shared").all()


def test_laion_fmri_calls_added_for_parity(sub, root, tmp_path):
    from neurotorch.data.fmri.betas import BetasDataset
    from neurotorch.fmri.discovery import get_rois

    table = pd.read_csv(root / "stimuli/task-images_metadata.csv")
    assert sub.get_n_stimuli() == len(table)
    for kind in ("shared", "unique"):
        assert sub.get_n_stimuli(kind) == (table["unique_or_shared"] == kind).sum()
    with pytest.raises(ValueError, match="stimuli"):
        sub.get_n_stimuli("both")
    # FreeSurfer recon folder
    assert not sub.has_freesurfer()
    with pytest.raises(DataNotDownloadedError, match="derivatives/freesurfer/sub-01"):
        sub.get_freesurfer_dir()
    recon = root / "derivatives" / "freesurfer" / SUB
    recon.mkdir(parents=True)
    try:
        assert sub.has_freesurfer() and sub.get_freesurfer_dir() == recon
    finally:
        recon.rmdir()
        recon.parent.rmdir()
    # noise ceilings by a list of desc, and a desc the dataset does not ship
    b = brain(root)
    both = sub.get_noise_ceiling(desc=["Noiseceiling4rep", "Noiseceiling12rep"])
    assert list(both) == ["Noiseceiling4rep", "Noiseceiling12rep"]
    for desc, values in both.items():
        nc = load(glm(root, f"{SUB}_task-images_space-T1w_desc-{desc}_statmap.nii.gz"))
        np.testing.assert_array_equal(values, nc[b])
    with pytest.raises(FileNotFoundError, match="noiseceiling33ses"):
        sub.get_noise_ceiling(desc="noiseceiling33ses")
    # ROIs of the first subject; an unknown subject gives [] and a warning
    rois = sorted({name for name, _ in roi_files(root).items()})
    assert get_rois(source=root) == get_rois(SUB, source=root) == rois
    with pytest.warns(UserWarning, match="sub-99"):
        assert get_rois("sub-99", source=root) == []
    # laion_fmri's to_torch_dataset: the torch layer's BetasDataset.from_subject
    with pytest.raises(AttributeError, match="from_subject"):
        sub.to_torch_dataset()
    dataset = BetasDataset.from_subject(
        sub, voxels={"roi": "FFA1"}, features=None, trials={"sessions": "ses-01"}
    )
    assert isinstance(dataset, BetasDataset)
    assert len(dataset) == len(pd.read_csv(trials_file(root, "ses-01"), sep="\t"))


def test_group_shared_images(root):
    group = load_subjects("all", root)
    table = pd.read_csv(root / "stimuli/task-images_metadata.csv")
    shared = np.flatnonzero(table["unique_or_shared"] == "shared")
    stack = group.get_shared_images(format="numpy")
    assert stack.shape[0] == len(shared) and stack.dtype == np.uint8
    with h5py.File(root / "stimuli/task-images_stimuli.h5", "r") as f:
        for position in (0, len(shared) - 1):
            raw = f["images"][shared[position]].tobytes()
            want = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
            np.testing.assert_array_equal(stack[position], want)
    assert len(group.get_shared_images()) == len(shared)


def test_subject_pickles(sub):
    _ = sub.metadata
    clone = pickle.loads(pickle.dumps(sub))
    np.testing.assert_array_equal(
        clone.get_betas("ses-01", roi="FFA1"), sub.get_betas("ses-01", roi="FFA1")
    )
    np.testing.assert_array_equal(clone.embeddings.get("CLIP", 3), sub.embeddings.get("CLIP", 3))


@pytest.mark.slow
def test_remote_root_reads_like_local(moto_server, public_laion_bucket, isolated_cache, sub):
    remote = load_subject(SUB, public_laion_bucket, storage_options=moto_server.options())
    assert remote.get_sessions() == sub.get_sessions()
    assert remote.get_available_rois() == sub.get_available_rois()
    want = sub.get_betas("ses-01", roi="face", stimuli="shared")
    np.testing.assert_array_equal(remote.get_betas("ses-01", roi="face", stimuli="shared"), want)
    if importlib.util.find_spec("neurotorch.io.nifti"):
        streamed = remote.get_betas("ses-01", roi="face", stimuli="shared", streaming=True)
        np.testing.assert_array_equal(streamed, want)
    np.testing.assert_array_equal(remote.embeddings.all("CLIP"), sub.embeddings.all("CLIP"))
    assert remote.captions.human(5) == sub.captions.human(5)
