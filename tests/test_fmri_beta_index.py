"""Trials are paired with beta volumes by ``beta_index``, never by the row order of the trials TSV.

The expectations are computed here with nibabel and pandas alone: volume ``v`` of a session's betas
file belongs to the row whose ``beta_index`` is ``v``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurotorch.data.fmri.betas import BetasDataset
from neurotorch.data.fmri.store import build_store
from neurotorch.data.fmri.stream import BetasStream
from neurotorch.errors import FormatError, ShapeMismatchError
from neurotorch.fmri import load_subject, load_subjects
from neurotorch.synthetic.laion_fmri import make_laion_fmri

SUB, SES = "sub-01", "ses-01"
GLM = "derivatives/glmsingle-tedana"


def trials_file(root: Path, ses: str = SES, sub: str = SUB) -> Path:
    return root / f"{GLM}/{sub}/{ses}/func/{sub}_{ses}_task-images_desc-SingletrialBetas_trials.tsv"


def betas_file(root: Path, ses: str = SES, sub: str = SUB) -> Path:
    return root / (
        f"{GLM}/{sub}/{ses}/func/"
        f"{sub}_{ses}_task-images_space-T1w_stat-effect_desc-SingletrialBetas_statmap.nii.gz"
    )


def brain(root: Path, sub: str = SUB) -> np.ndarray:
    anat = f"derivatives/anatomical/{sub}/ses-PrismaAnat/anat"
    path = root / f"{anat}/{sub}_ses-PrismaAnat_space-T1w_res-1pt8_desc-brain_mask.nii.gz"
    return np.asarray(nib.load(path).dataobj) != 0


def volumes(root: Path, indices, ses: str = SES, sub: str = SUB) -> np.ndarray:
    """Brain voxels of the given volumes, read with nibabel: (len(indices), n_brain)."""
    data = np.asarray(nib.load(betas_file(root, ses, sub)).dataobj, dtype=np.float32)
    return data[brain(root, sub)].T[np.asarray(indices, dtype=int)]


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shuffled") / "tiny"
    return make_laion_fmri(root, size="tiny", seed=0, shuffle_trials_tables=True)


@pytest.fixture
def corrupt_copy(tiny_laion_root, tmp_path):
    """A copy of the tiny tree whose trials tables the test may edit."""

    def make(edit) -> Path:
        root = tmp_path / "copy"
        shutil.copytree(tiny_laion_root, root)
        table = pd.read_csv(trials_file(root), sep="\t")
        edit(table)
        table.to_csv(trials_file(root), sep="\t", index=False)
        return root

    return make


def test_shuffled_tree_differs_only_in_row_order(shuffled, tiny_laion_root):
    for ses in ("ses-01", "ses-02"):
        table = pd.read_csv(trials_file(shuffled, ses), sep="\t")
        plain = pd.read_csv(trials_file(tiny_laion_root, ses), sep="\t")
        assert not table["beta_index"].is_monotonic_increasing
        pd.testing.assert_frame_equal(table.sort_values("beta_index").reset_index(drop=True), plain)
        assert (
            betas_file(shuffled, ses).read_bytes() == betas_file(tiny_laion_root, ses).read_bytes()
        )


def test_get_betas_stimuli_returns_the_volumes_of_those_trials(shuffled):
    table = pd.read_csv(trials_file(shuffled), sep="\t")
    sub = load_subject(SUB, shuffled)
    for subset in ("shared", "unique"):
        chosen = np.sort(table.loc[table["label"].str.startswith(f"{subset}_"), "beta_index"])
        expected = volumes(shuffled, chosen)
        np.testing.assert_array_equal(sub.get_betas(SES, stimuli=subset), expected)
        np.testing.assert_array_equal(sub.get_betas(SES, stimuli=subset, streaming=True), expected)
    np.testing.assert_array_equal(sub.get_betas(SES), volumes(shuffled, range(len(table))))
    group = load_subjects("all", shuffled).get_shared_betas(SES)
    for sid, betas in group.items():
        other = pd.read_csv(trials_file(shuffled, SES, sid), sep="\t")
        chosen = np.sort(other.loc[other["label"].str.startswith("shared_"), "beta_index"])
        np.testing.assert_array_equal(betas, volumes(shuffled, chosen, SES, sid))


def test_metadata_rows_follow_the_volumes(shuffled):
    sub = load_subject(SUB, shuffled)
    meta = sub.metadata
    assert list(meta.columns[:4]) == ["session", "run", "beta_index", "label"]
    assert list(meta.columns[4:9]) == [
        "session_trial",
        "image_name",
        "stim_idx",
        "unique_or_shared",
        "dataset",
    ]
    for ses in ("ses-01", "ses-02"):
        table = pd.read_csv(trials_file(shuffled, ses), sep="\t")
        label_of_volume = dict(zip(table["beta_index"], table["label"], strict=True))
        rows = meta[meta["session"] == ses]
        np.testing.assert_array_equal(rows["session_trial"], np.arange(len(table)))
        assert rows["image_name"].tolist() == [label_of_volume[v] for v in range(len(table))]
        # row i of the session's metadata is row i of get_betas(session)
        shared_rows = rows["image_name"].str.startswith("shared_").to_numpy()
        np.testing.assert_array_equal(
            sub.get_betas(ses)[shared_rows], sub.get_betas(ses, stimuli="shared")
        )


def test_datasets_serve_each_trial_its_own_volume(shuffled):
    """... in volume order on both paths, whatever the table's row order: item i of the map-style
    dataset is row i of ``get_betas`` (and the stream's i-th item)."""
    table = pd.read_csv(trials_file(shuffled), sep="\t")
    label_of_volume = dict(zip(table["beta_index"], table["label"], strict=True))
    mapped = BetasDataset(shuffled, SUB, features=None, trials={"sessions": SES})
    batch = mapped.__getitems__(list(range(len(mapped)))).data
    trials = batch["trial"].numpy()
    assert list(trials) == list(range(len(table)))
    np.testing.assert_array_equal(
        batch["betas"].numpy(), load_subject(SUB, data_dir=shuffled).get_betas(SES)
    )
    assert batch["image_name"] == [label_of_volume[t] for t in trials]
    np.testing.assert_array_equal(batch["betas"].numpy(), volumes(shuffled, trials))
    stream = BetasStream(shuffled, SUB, features=None, trials={"sessions": SES})
    items = list(stream)
    trials = np.array([int(item["trial"]) for item in items])
    assert list(trials) == list(range(len(table)))
    assert [item["image_name"] for item in items] == [label_of_volume[t] for t in trials]
    got = np.stack([np.asarray(item["betas"]) for item in items])
    np.testing.assert_array_equal(got, volumes(shuffled, trials))


def _out_of_range(table: pd.DataFrame) -> None:
    table.loc[3, "beta_index"] = 999


def _one_past_the_end(table: pd.DataFrame) -> None:
    table.loc[3, "beta_index"] = len(table)


def _repeated(table: pd.DataFrame) -> None:
    table.loc[3, "beta_index"] = table.loc[5, "beta_index"]


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (_out_of_range, ShapeMismatchError, r"beta_index values from 0 to 999.*volumes 0\.\.\d+"),
        (_one_past_the_end, ShapeMismatchError, r"beta_index values from 0 to (\d+).*0\.\.\d+"),
        (_repeated, FormatError, "more than one trial"),
    ],
)
def test_bad_beta_index_is_named_at_open_time(corrupt_copy, edit, error, message):
    root = corrupt_copy(edit)
    where = str(trials_file(root))
    sub = load_subject(SUB, root)
    checks = [
        lambda: sub.get_betas(SES),
        lambda: sub.get_betas(SES, stimuli="shared", streaming=True),
        lambda: sub.metadata,
        lambda: build_store(root, SUB, [SES]),
        lambda: BetasDataset(root, SUB, features=None, trials={"sessions": SES}),
        lambda: BetasStream(root, SUB, features=None, trials={"sessions": SES}),
    ]
    for check in checks:
        with pytest.raises(error, match=message) as info:
            check()
        assert where in str(info.value)


def test_synth_command_passes_the_shuffle_option(monkeypatch, tmp_path, capsys):
    import neurotorch.synthetic.laion_fmri as synthetic
    from neurotorch.cli import main

    calls = []
    monkeypatch.setattr(synthetic, "make_laion_fmri", lambda out, **kw: calls.append(kw) or out)
    main(["synth", "laion-fmri", "--out", str(tmp_path), "--size", "tiny", "--shuffled-trials"])
    main(["synth", "laion-fmri", "--out", str(tmp_path), "--size", "tiny"])
    assert calls[0]["shuffle_trials_tables"] is True and "shuffle_trials_tables" not in calls[1]
    capsys.readouterr()
    assert main(["synth", "calibrain", "--out", str(tmp_path), "--shuffled-trials"]) == 2
    assert "laion-fmri only" in capsys.readouterr().err
