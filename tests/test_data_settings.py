"""The settings objects of the fMRI data layer: validated once, a string is one name, one meaning
of the split string per place, plain dicts accepted everywhere (load_dataset, YAML), and what the
datasets print."""

from __future__ import annotations

import json
from typing import get_args, get_type_hints

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from jsonargparse import ArgumentParser

import neurotorch
from neurotorch.data.fmri import ReadSettings, TrialSelection, VoxelSelection
from neurotorch.data.fmri.betas import BetasDataset
from neurotorch.data.fmri.pairing import FEATURES, MODALITIES
from neurotorch.data.fmri.store import DTYPES
from neurotorch.data.fmri.stream import BetasStream
from neurotorch.data.fmri.trials import OodType
from neurotorch.errors import ParameterError, ShapeMismatchError, SplitError
from neurotorch.fmri import layout
from neurotorch.fmri.masks import BRAIN_MASK_SOURCES
from neurotorch.fmri.nan_policy import NAN_POLICIES
from neurotorch.fmri.voxel_selection import MaskSource, NoiseCeilingDesc
from neurotorch.io.integrity import VERIFY_MODES
from neurotorch.lightning import LaionFMRIDataModule

FACE = {"roi": "face"}


def _split_ids(root, name: str) -> tuple[list[str], list[str]]:
    variant = json.loads((root / "splits" / "shared" / f"{name}.json").read_text())["variants"][0]
    return variant["train_ids"], variant["test_ids"]


def _labels(root, subject: str, session: str) -> pd.Series:
    return pd.read_csv(root / layout.session_trials(subject, session), sep="\t")["label"]


def test_every_choice_is_a_literal_of_the_accepted_values():
    assert set(get_args(OodType)) == set(layout.OOD_TYPES)
    assert set(get_args(NoiseCeilingDesc)) == set(layout.SUBJECT_NOISE_CEILINGS)
    assert set(get_args(MaskSource)) == set(BRAIN_MASK_SOURCES)
    read = get_type_hints(ReadSettings)
    assert set(get_args(read["nan_policy"])) == set(NAN_POLICIES)
    assert set(get_args(read["verify"])) == set(VERIFY_MODES)
    assert set(get_args(read["dtype"])) == set(DTYPES)
    assert set(FEATURES) == set(layout.EMBEDDING_MODELS) | set(MODALITIES)


@pytest.mark.parametrize(
    "fields, error, named",
    [
        ({"split": "random_0/train"}, SplitError, "part='train'"),
        ({"part": "train"}, ParameterError, "needs a split"),
        ({"split": "random_0", "part": "val"}, ParameterError, "val_fraction"),
        ({"split": "random_0", "part": "trian"}, ParameterError, "did you mean 'train'"),
        ({"split": "random_0", "ood_types": "shape"}, ParameterError, "'ood' split"),
        ({"split": "ood", "ood_types": ["shape", "ghost"]}, ParameterError, "ghost"),
        ({"val_fraction": 1.0}, ParameterError, "val_fraction"),
        ({"variant_id": 0.5}, ParameterError, "variant_id"),
        ({"sessions": []}, ParameterError, "sessions is empty"),
        ({"sessions": ["ses-01", "01"]}, ParameterError, "ses-01"),
        ({"stimuli": "both"}, ParameterError, "both"),
    ],
)
def test_trial_selection_is_checked_once_when_made(fields, error, named):
    with pytest.raises(error, match=named):
        TrialSelection(**fields)


def test_a_string_is_one_name_everywhere(tiny_laion_root):
    selection = TrialSelection(sessions="ses-01", ood_types="shape", image_names="x.jpg")
    assert selection.sessions == ("ses-01",) and selection.ood_types == ("shape",)
    assert selection.image_names == ("x.jpg",)
    assert VoxelSelection(roi="FFA1").roi == ("FFA1",)
    dataset = BetasDataset(
        tiny_laion_root, "sub-01", voxels=FACE, trials={"sessions": "ses-01"}, features="CLIP"
    )
    assert sorted(dataset.trials["trial"]) == sorted(
        pd.read_csv(tiny_laion_root / layout.session_trials("sub-01", "ses-01"), sep="\t")[
            "beta_index"
        ]
    )
    assert dataset.subjects == ["sub-01"] and dataset.pairing.features == ["CLIP"]


def test_image_names_that_no_trial_shows_are_named_not_dropped(tiny_laion_root):
    shown = _labels(tiny_laion_root, "sub-01", "ses-01")  # a name the subject was shown
    trials = {"sessions": "ses-01", "image_names": [shown.iloc[0]]}
    dataset = BetasDataset(tiny_laion_root, "sub-01", voxels=FACE, trials=trials, features=None)
    assert set(dataset.trials["image_name"]) == {shown.iloc[0]}
    trials["image_names"] = [shown.iloc[0], "shared_typo.jpg"]  # a typo would shrink the data
    with pytest.raises(ParameterError, match="1 name.*shared_typo.jpg"):
        BetasDataset(tiny_laion_root, "sub-01", voxels=FACE, trials=trials, features=None)


def test_a_session_the_subject_lacks_names_the_sessions_it_has(tiny_laion_root):
    from neurotorch.errors import DataNotDownloadedError

    with pytest.raises(DataNotDownloadedError, match=r"no session ses-07 .*here: ses-01, ses-02"):
        BetasDataset(tiny_laion_root, "sub-01", voxels=FACE, trials={"sessions": "ses-07"})


def test_parts_of_a_split_with_a_validation_share(tiny_laion_root):
    train_ids, test_ids = _split_ids(tiny_laion_root, "random_0")
    parts = {
        part: set(
            BetasDataset(
                tiny_laion_root,
                "sub-01",
                voxels=FACE,
                features=None,
                trials={"split": "random_0", "part": part, "val_fraction": 0.25, "val_seed": 2},
            ).trials["image_name"]
        )
        for part in ("train", "val", "test", "all")
    }
    shown = set(_labels(tiny_laion_root, "sub-01", "ses-01")) | set(
        _labels(tiny_laion_root, "sub-01", "ses-02")
    )
    assert parts["test"] == set(test_ids) & shown
    assert parts["train"] | parts["val"] == set(train_ids) & shown
    assert not parts["train"] & parts["val"] and parts["val"]
    assert parts["all"] == (set(train_ids) | set(test_ids)) & shown
    n_val = round(0.25 * len(set(train_ids)))  # carved from the split's training images
    assert len(parts["val"]) <= n_val and len(parts["val"]) >= n_val - 3


def test_ood_types_without_a_split_keep_those_ood_trials(tiny_laion_root):
    dataset = BetasDataset(
        tiny_laion_root, "sub-02", voxels=FACE, features=None, trials={"ood_types": "shape"}
    )
    labels = pd.concat([_labels(tiny_laion_root, "sub-02", s) for s in ("ses-01", "ses-02")])
    assert sorted(dataset.trials["image_name"]) == sorted(
        label for label in labels if "_OOD_shape_" in label
    )


def _brain(root, subject="sub-01") -> np.ndarray:
    return np.asarray(nib.load(root / layout.anatomical_brain_mask(subject)).dataobj) != 0


def test_a_mask_has_one_shape_as_an_array_or_a_nifti_file(tiny_laion_root, tmp_path):
    brain = _brain(tiny_laion_root)
    custom = np.zeros(brain.shape, dtype=bool)
    custom[: brain.shape[0] // 2] = True
    affine = nib.load(tiny_laion_root / layout.anatomical_brain_mask("sub-01")).affine
    path = tmp_path / "half.nii.gz"
    nib.save(nib.Nifti1Image(custom.astype(np.uint8), affine), path)
    from_array = BetasDataset(tiny_laion_root, "sub-01", voxels={"mask": custom}, features=None)
    from_file = BetasDataset(tiny_laion_root, "sub-01", voxels={"mask": str(path)}, features=None)
    np.testing.assert_array_equal(from_array.voxel_mask(), brain & custom)
    np.testing.assert_array_equal(from_file.voxel_mask(), brain & custom)
    with pytest.raises(ParameterError, match="3-D boolean array"):
        VoxelSelection(mask=np.ones(int(brain.sum()), dtype=bool))  # laion_fmri's 1-D shape
    with pytest.raises(ParameterError, match="float64"):
        VoxelSelection(mask=np.ones(brain.shape))
    with pytest.raises(ParameterError, match="missing.nii.gz"):
        VoxelSelection(mask=str(tmp_path / "missing.nii.gz"))
    with pytest.raises(ShapeMismatchError, match="grid"):
        BetasDataset(tiny_laion_root, "sub-01", voxels={"mask": custom[:-1]}, features=None)


def test_the_stream_refuses_what_only_the_store_can_do(tiny_laion_root):
    for read in ({"zscore": True}, {"average_repeats": True}, {"dtype": "float16"}):
        with pytest.raises(ParameterError, match="map-style"):
            BetasStream(tiny_laion_root, voxels=FACE, read=read)
    with pytest.raises(ParameterError, match="map-style"):
        LaionFMRIDataModule(data_dir=str(tiny_laion_root), streaming=True, read={"zscore": True})


def test_a_settings_dict_with_an_unknown_key_is_named_with_its_fix():
    with pytest.raises(ParameterError, match="'rio'.*did you mean 'roi'"):
        BetasDataset("unused", voxels={"rio": "face"})


def _keys(dataset) -> list[tuple]:
    table = dataset.trials
    return list(zip(table["subject"], table["session"], table["trial"], strict=True))


def test_load_dataset_takes_nested_or_named_settings_and_one_split_string(tiny_laion_root):
    common = dict(data_dir=tiny_laion_root, subject="sub-01", features=None)
    named = neurotorch.load_dataset(
        "laion-fmri", split="random_0/train", roi="face", zscore=True, **common
    )
    nested = neurotorch.load_dataset(
        "laion-fmri",
        trials={"split": "random_0", "part": "train"},
        voxels=FACE,
        read={"zscore": True},
        **common,
    )
    assert _keys(named) == _keys(nested) and named.read.zscore and nested.read.zscore
    np.testing.assert_array_equal(named.voxel_mask(), nested.voxel_mask())
    for part in ("train", "test"):  # the part by name joins the split's name
        by_name = neurotorch.load_dataset("laion-fmri", split="random_0", part=part, **common)
        in_split = neurotorch.load_dataset("laion-fmri", split=f"random_0/{part}", **common)
        assert _keys(by_name) == _keys(in_split)
    with pytest.raises(ParameterError, match="give the part once"):
        neurotorch.load_dataset("laion-fmri", split="random_0/train", part="test", **common)
    with pytest.raises(ParameterError, match="give them one way"):
        neurotorch.load_dataset("laion-fmri", roi="face", voxels=FACE, **common)
    with pytest.raises(ParameterError, match="give it once"):
        neurotorch.load_dataset("laion-fmri", split="tau/train", trials={"split": "tau"}, **common)
    with pytest.raises(ParameterError, match="modalities"):
        neurotorch.load_dataset("laion-fmri", modalities=["image"], **common)


def test_datasets_say_what_they_serve(tiny_laion_root):
    dataset = BetasDataset(
        tiny_laion_root,
        ["sub-01", "sub-02"],
        voxels=FACE,
        trials={"split": "random_0", "part": "test"},
    )
    counts = {s: int(m.sum()) for s, m in dataset.voxel_masks().items()}
    text = repr(dataset)
    assert text.startswith("BetasDataset(sub-01, sub-02 of ")
    assert f"{len(dataset)} trials" in text and str(tiny_laion_root) in text
    assert f"sub-01: {counts['sub-01']}, sub-02: {counts['sub-02']}" in text
    assert "split random_0/test of pool shared" in text and "roi face" in text
    stream = BetasStream(
        tiny_laion_root, "sub-01", voxels=FACE, trials={"split": "tau", "part": "train"}
    )
    text = repr(stream)
    assert text.startswith("BetasStream(sub-01 of ") and f"{len(stream.trials)} trials" in text
    assert f"{counts['sub-01']} voxels" in text and "split tau/train" in text


def test_yaml_dicts_become_settings_objects_and_choices_are_checked_at_parse_time(
    tiny_laion_root,
):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(LaionFMRIDataModule, "data")
    config = parser.parse_object(
        {
            "data": {
                "data_dir": str(tiny_laion_root),
                "trials": {"split": "tau", "sessions": "ses-01"},
                "voxels": {"roi": ["face", "V1v"], "nc_desc": "Noiseceiling4rep"},
                "read": {"nan_policy": "zero"},
            }
        }
    )
    module = parser.instantiate_classes(config)["data"]
    assert module.trial_selection == TrialSelection(split="tau", sessions=["ses-01"])
    assert module.voxel_selection.roi == ("face", "V1v")
    assert module.read == ReadSettings(nan_policy="zero")
    with pytest.raises(Exception, match="nan_policy"):
        parser.parse_object({"data": {"read": {"nan_policy": "ignore"}}})
