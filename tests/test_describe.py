"""`describe` on the synthetic trees, checked against counts made by hand from the files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurotorch.cli import main
from neurotorch.describe import describe
from neurotorch.errors import DataNotDownloadedError

pytest_plugins = ["s3_server"]

GLM = "derivatives/glmsingle-tedana"


def hand_trial_counts(root: Path) -> pd.DataFrame:
    """One row per trials TSV, counted with pandas straight from the files."""
    rows = []
    for tsv in sorted(root.glob(f"{GLM}/sub-*/ses-*/func/*_trials.tsv")):
        table = pd.read_csv(tsv, sep="\t", dtype={"label": str})
        rows.append({
            "subject": tsv.parts[-4],
            "session": tsv.parts[-3],
            "n_runs": table["run"].nunique(),
            "n_trials": len(table),
            "n_shared": int(table["label"].str.startswith("shared_").sum()),
            "n_unique": int(table["label"].str.startswith("unique_").sum()),
            "n_images": table["label"].nunique(),
        })  # fmt: skip
    return pd.DataFrame(rows)


def hand_rois(root: Path) -> dict[str, dict[str, list[str]]]:
    found: dict[str, dict[str, set[str]]] = {}
    for path in root.glob("derivatives/rois/sub-*/*/*"):
        if match := re.search(r"_label-(.+?)_mask\.", path.name):
            found.setdefault(path.parts[-3], {}).setdefault(path.parts[-2], set()).add(match[1])
    return {
        sub: {cat: sorted(names) for cat, names in sorted(cats.items())}
        for sub, cats in sorted(found.items())
    }


def test_laion_fmri_summary_matches_hand_counts(tiny_laion_root):
    summary = describe(tiny_laion_root)
    assert summary.kinds == ["laion-fmri"]
    fmri = summary.laion_fmri
    assert fmri.subjects == sorted(p.name for p in (tiny_laion_root / GLM).iterdir())
    expected = hand_trial_counts(tiny_laion_root)
    pd.testing.assert_frame_equal(fmri.trials.reset_index(drop=True), expected, check_dtype=False)
    assert (fmri.trials["n_shared"] + fmri.trials["n_unique"] == fmri.trials["n_trials"]).all()
    assert fmri.rois == hand_rois(tiny_laion_root)
    counts = fmri.roi_counts()
    assert counts.loc["sub-01", "face"] == len(hand_rois(tiny_laion_root)["sub-01"]["face"])

    metadata = pd.read_csv(tiny_laion_root / "stimuli/task-images_metadata.csv")
    assert fmri.images == metadata["unique_or_shared"].value_counts().sort_index().to_dict()
    assert fmri.stimulus_modalities == [
        "metadata", "images", "embeddings:CLIP", "embeddings:DINOv2", "embeddings:PEcore",
        "embeddings:SigLIP2", "captions", "segmentations",
    ]  # fmt: skip
    pools = sorted(p.name for p in (tiny_laion_root / "splits").iterdir())
    assert sorted(fmri.splits) == pools
    for pool in pools:
        assert fmri.splits[pool] == sorted(
            p.stem for p in (tiny_laion_root / "splits" / pool).glob("*.json")
        )
    tracked = [
        p
        for top in ("derivatives", "stimuli", "splits")
        for p in (tiny_laion_root / top).rglob("*")
    ]
    assert fmri.total_bytes == sum(p.stat().st_size for p in tracked if p.is_file())


def test_text_and_json_output_of_the_command(tiny_laion_root, capsys):
    assert main(["describe", str(tiny_laion_root)]) == 0
    text = capsys.readouterr().out
    expected = hand_trial_counts(tiny_laion_root)
    for sub, group in expected.groupby("subject"):
        assert re.search(rf"{sub}: {group.n_trials.sum()} trials in {len(group)} sessions "
                         rf"\({group.n_shared.sum()} shared, {group.n_unique.sum()} unique\)", text)  # fmt: skip
    assert "splits/shared: 12 splits (random ×5, cluster ×5, tau, ood)" in text
    assert f"splits are read from data_dir: {tiny_laion_root / 'splits'}" in text
    assert "embeddings:SigLIP2" in text

    assert main(["describe", str(tiny_laion_root), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["kinds"] == ["laion-fmri"]
    assert [row["n_trials"] for row in payload["laion_fmri"]["trials"]] == expected[
        "n_trials"
    ].tolist()


def test_stimuli_only_tree(tmp_path, tiny_laion_root):
    (tmp_path / "stimuli").mkdir()
    for name in ("task-images_metadata.csv", "task-images_desc-captions.csv"):
        (tmp_path / "stimuli" / name).write_bytes((tiny_laion_root / "stimuli" / name).read_bytes())
    fmri = describe(tmp_path).laion_fmri
    assert fmri.subjects == [] and len(fmri.trials) == 0
    assert fmri.stimulus_modalities == ["metadata", "captions"]


def _write_leadfield(path: Path, n_sensors: int, n_sources: int, free: bool) -> None:
    from neurotorch.meeg.leadfield import LeadfieldData, save_leadfield_npz

    shape = (n_sensors, n_sources, 3) if free else (n_sensors, n_sources)
    data = LeadfieldData(np.random.default_rng(0).standard_normal(shape), sensor_kind=2, sensor_units=107,
                         sensor_unitmult=-6, coil_type=1)  # fmt: skip
    save_leadfield_npz(path, data)


def _write_connectome(
    folder: Path, subjects_per_file: list[int], n_timepoints: int = 12
) -> np.ndarray:
    from neurotorch.connectome.writer import write_batch

    mask_indices = np.argwhere(np.ones((4, 5, 3), dtype=bool))
    for k, n in enumerate(subjects_per_file):
        write_batch(folder / f"gsp1000_chunk_{k:03d}.h5",
                    (np.zeros((n_timepoints, len(mask_indices))) for _ in range(n)),
                    [f"s{k}-{i}" for i in range(n)], mask_indices, np.eye(4), (4, 5, 3), n_timepoints)  # fmt: skip
    return mask_indices


def test_calibrain_and_connectome_are_recognised_together(tmp_path, capsys):
    leadfields = tmp_path / "1284src_leadfield"
    leadfields.mkdir()
    _write_leadfield(leadfields / "fsaverage_fixed_leadfield.npz", 16, 50, free=False)
    _write_leadfield(leadfields / "fsaverage_free_leadfield.npz", 16, 50, free=True)
    (tmp_path / "1284src_fwd").mkdir()
    (tmp_path / "1284src_fwd" / "fsaverage-fwd.fif").write_bytes(b"")
    runs = tmp_path / "runs"
    runs.mkdir()
    for run in range(3):
        (runs / f"posterior_summary_run{run:08d}_seed0.h5").write_bytes(b"")
    (runs / "fsaverage_bmn_run00000001_seed0.npz").write_bytes(b"")
    (tmp_path / "batches").mkdir()
    mask_indices = _write_connectome(tmp_path / "batches", [3, 2])
    (tmp_path / "lesions").mkdir()
    for k in range(2):
        nib.save(
            nib.Nifti1Image(np.zeros((4, 5, 3), np.uint8), np.eye(4)),
            tmp_path / "lesions" / f"l{k}.nii.gz",
        )

    summary = describe(tmp_path)
    assert summary.kinds == ["calibrain", "connectome"]
    (meeg,) = summary.meeg
    table = meeg.leadfields.set_index("orientation")
    assert table.loc["fixed", ["n_sensors", "n_sources", "n_components"]].tolist() == [16, 50, 1]
    assert table.loc["free", ["n_sensors", "n_sources", "n_components"]].tolist() == [16, 50, 3]
    assert set(table["units"]) == {"µV/nAm"} and set(table["sensors"]) == {"EEG"}
    assert meeg.forwards == ["1284src_fwd/fsaverage-fwd.fif"]
    assert (meeg.posterior_summaries, meeg.aggregated_runs) == (3, 1)

    connectome = summary.connectome
    assert connectome.batches["n_subjects"].tolist() == [3, 2] and connectome.n_subjects == 5
    assert set(connectome.batches["n_voxels"]) == {len(mask_indices)}
    assert set(connectome.batches["n_timepoints"]) == {12}
    assert connectome.n_lesions == 2
    print(summary)
    text = capsys.readouterr().out
    assert "2 batch files, 5 subjects, 12 timepoints, 60 voxels in a 4×5×3 mask" in text
    assert "2 leadfields, 1 forward models, 3 posterior summaries, 1 aggregated runs" in text
    assert set(connectome.batches["checksum"]) == {"fletcher32"} and "no checksum" not in text


def test_batch_files_without_checksums_are_reported(tmp_path):
    """A batch file as another converter may write it: plain h5py, no Fletcher-32."""
    import h5py

    _write_connectome(tmp_path, [2])
    with h5py.File(tmp_path / "gsp1000_chunk_001.h5", "w") as f:
        f.create_dataset("timeseries", data=np.zeros((1, 12, 60), np.float32), chunks=(1, 12, 60))
        f.create_dataset("mask_indices", data=np.argwhere(np.ones((4, 5, 3), dtype=bool)))
        f.create_dataset("mask_affine", data=np.eye(4))
        f.attrs.update(n_subjects=1, n_timepoints=12, n_voxels=60, mask_shape=[4, 5, 3])
    connectome = describe(tmp_path).connectome
    assert connectome.batches["checksum"].tolist() == ["fletcher32", "none"]
    assert any("1 batch file(s) carry no checksum" in line for line in connectome.lines())


def test_a_folder_of_batch_files_or_leadfields_alone(tmp_path):
    _write_connectome(tmp_path, [4])
    summary = describe(tmp_path)
    assert summary.kinds == ["connectome"] and summary.connectome.n_lesions is None
    leadfields = tmp_path / "lf"
    leadfields.mkdir()
    _write_leadfield(leadfields / "sub-01_fixed_leadfield.npz", 8, 20, free=False)
    assert describe(leadfields).meeg[0].leadfields["subject"].tolist() == ["sub-01"]


def test_nothing_recognisable_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataNotDownloadedError, match="Nothing neurotorch reads"):
        describe(tmp_path)
    assert main(["describe", str(tmp_path / "missing")]) == 1
    assert "error:" in capsys.readouterr().err


def test_remote_tree_gives_the_local_summary(
    moto_server, public_laion_bucket, tiny_laion_root, tmp_path
):
    remote = describe(public_laion_bucket, storage_options=moto_server.options())
    local = describe(tiny_laion_root)
    pd.testing.assert_frame_equal(remote.laion_fmri.trials, local.laion_fmri.trials)
    assert remote.laion_fmri.rois == local.laion_fmri.rois
    assert remote.laion_fmri.splits == local.laion_fmri.splits
    assert remote.laion_fmri.stimulus_modalities == local.laion_fmri.stimulus_modalities
    assert remote.laion_fmri.total_bytes == local.laion_fmri.total_bytes

    _write_connectome(tmp_path, [2, 3])
    (tmp_path / "1284src_leadfield").mkdir()
    _write_leadfield(
        tmp_path / "1284src_leadfield" / "fsaverage_free_leadfield.npz", 16, 40, free=True
    )
    url = moto_server.upload_tree(tmp_path, "describe-mixed", public=True)
    summary = describe(url, storage_options=moto_server.options())
    assert summary.kinds == ["calibrain", "connectome"]
    assert summary.connectome.batches["n_subjects"].tolist() == [2, 3]
    row = summary.meeg[0].leadfields.iloc[0]
    assert (row.n_sensors, row.n_sources, row.n_components) == (16, 40, 3)


def test_describe_names_which_copy_of_the_splits_is_read(tmp_path, tiny_laion_root):
    """Without a splits/ folder of its own, a tree reads the bundled copy: describe says which
    upstream files that copy holds."""
    root = tmp_path / "tree"
    shutil.copytree(tiny_laion_root / "stimuli", root / "stimuli")
    text = str(describe(root))
    line = next(line for line in text.splitlines() if "splits are read from" in line)
    assert "bundled:" in line and "2d7a36c" in line and "cd9f141" in line
    assert "regenerated" in line
