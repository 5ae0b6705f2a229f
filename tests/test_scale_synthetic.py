"""The ``real`` synthetic preset: LAION-fMRI's geometry as parameters, written volume by volume.

The real geometry (143³, 1,050 trials per session, ≈ 2.3 GB per session) is too large for the
test suite; its parameters are checked by hand-counted arithmetic, and the writer runs on scaled
down geometries through the same code path (a `SizePreset` is all the writer knows). Files are
read back with nibabel, and the writer's peak memory is measured in fresh processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_synthetic_laion_fmri import _nsd_noise_ceiling, betas_path, trials_path

from neurotorch.cli import main
from neurotorch.errors import ParameterError
from neurotorch.synthetic import brain
from neurotorch.synthetic.laion_fmri import SIZES, SizePreset, make_laion_fmri

GLM = "derivatives/glmsingle-tedana"
N_OOD_TYPES = 9  # cropped, gabor, gaudy, illusion-classic, illusion-natural, relations, ...


def trials_per_subject(preset: SizePreset) -> int:
    """Hand count: 12 repetitions of each shared12 image, 4 of shared4 and OOD ones, 1 unique."""
    return (
        12 * preset.n_shared12
        + 4 * preset.n_shared4
        + 4 * N_OOD_TYPES * preset.n_ood_per_type
        + preset.n_unique
    )


def small_real_like(n_sessions: int = 2) -> SizePreset:
    """The real preset's brain fraction and layout on a small grid, fewer trials."""
    return SizePreset(1, n_sessions, (20, 22, 18), 2, 4, 1, 20, 4, 16, 2.0, 200, 0.7256)


def test_real_preset_has_laion_fmri_geometry():
    real = SIZES["real"]
    assert real.grid == (143, 143, 143)
    affine = brain.grid_affine(real.grid)
    assert np.allclose(np.abs(np.diag(affine)[:3]), 1.8)
    mask = brain.ellipsoid_mask(real.grid, fill=real.brain_fill)
    assert 0.19 < mask.mean() < 0.21 and 560_000 < mask.sum() < 590_000  # ≈ 572,557 in the data
    assert trials_per_subject(real) == 1050 * real.n_sessions
    for sessions in (3, 34):  # more sessions: more images, sessions keep their length
        assert trials_per_subject(real.with_sessions(sessions)) == 1050 * sessions


def test_streamed_volumes_are_nibabel_save_byte_for_byte(tmp_path):
    grid = (6, 7, 5)
    mask = brain.ellipsoid_mask(grid)
    brain_index = np.flatnonzero(mask.ravel())
    betas = np.random.default_rng(0).standard_normal((9, len(brain_index))).astype(np.float32)
    affine = brain.grid_affine(grid)
    with brain.write_volumes(tmp_path / "streamed.nii.gz", grid, 9, affine, brain_index) as out:
        for row in betas:
            out.write(row)
    whole = np.zeros((*grid, 9), dtype=np.float32)
    whole[mask] = betas.T
    brain.save_nifti(whole, affine, tmp_path / "whole.nii.gz")
    streamed = tmp_path / "streamed.nii.gz"
    assert streamed.read_bytes() == (tmp_path / "whole.nii.gz").read_bytes()
    np.testing.assert_array_equal(nib.load(streamed).get_fdata(dtype=np.float32), whole)


def test_a_writer_that_stops_early_leaves_no_file(tmp_path):
    grid = (4, 4, 4)
    index = np.arange(10)
    with (
        pytest.raises(RuntimeError, match="2 of 3 volumes"),
        brain.write_volumes(tmp_path / "b.nii.gz", grid, 3, np.eye(4), index) as out,
    ):
        out.write(np.ones(10, np.float32))
        out.write(np.ones(10, np.float32))
    assert list(tmp_path.iterdir()) == []


def test_real_like_geometry_through_the_same_writer(tmp_path):
    preset = small_real_like()
    root = make_laion_fmri(tmp_path / "real-like", size=preset, sessions=3)
    scaled = preset.with_sessions(3)
    mask = nib.load(
        root / "derivatives/anatomical/sub-01/ses-PrismaAnat/anat/"
        "sub-01_ses-PrismaAnat_space-T1w_res-1pt8_desc-brain_mask.nii.gz"
    ).get_fdata()
    assert 0.15 < (mask > 0).mean() < 0.25  # the real preset's brain fraction
    counts, betas, labels = [], [], []
    for ses in ("ses-01", "ses-02", "ses-03"):
        image = nib.load(betas_path(root, "sub-01", ses))
        data = image.get_fdata(dtype=np.float32)
        table = pd.read_csv(trials_path(root, "sub-01", ses), sep="\t")
        assert data.shape == (*preset.grid, len(table))
        assert np.all(data[mask == 0] == 0) and np.all(np.isfinite(data))
        counts.append(len(table))
        betas.append(data[mask > 0].T.astype(np.float64))
        labels.append(table["label"].to_numpy())
    assert sum(counts) == trials_per_subject(scaled) and max(counts) - min(counts) <= 12
    written = nib.load(
        root / GLM / "sub-01" / "sub-01_task-images_space-T1w_desc-Noiseceiling4rep_statmap.nii.gz"
    ).get_fdata()
    np.testing.assert_allclose(
        written[mask > 0], _nsd_noise_ceiling(betas, labels, 4), rtol=1e-4, atol=1e-3
    )
    assert make_laion_fmri(root, size=preset, sessions=3) == root  # the same preset is reused


def test_a_custom_preset_needs_a_folder():
    with pytest.raises(ParameterError, match="root="):
        make_laion_fmri(size=small_real_like())
    with pytest.raises(ParameterError, match="sessions"):
        make_laion_fmri(size="tiny", sessions=0)


def test_synth_command_sessions_and_real_only_for_laion_fmri(tmp_path, capsys):
    out = tmp_path / "three"
    assert (
        main(["synth", "laion-fmri", "--size", "tiny", "--sessions", "3", "--out", str(out)]) == 0
    )
    sessions = sorted(p.name for p in (out / GLM / "sub-01").iterdir() if p.is_dir())
    assert sessions == ["ses-01", "ses-02", "ses-03"]
    info = json.loads((out / "_groundtruth" / "dataset.json").read_text())
    assert info["sessions"] == 3
    assert main(["synth", "connectome", "--size", "real", "--out", str(tmp_path / "c")]) == 2
    assert "laion-fmri only" in capsys.readouterr().err


PEAK_RSS_CHILD = """
import json, sys
from neurotorch.synthetic.laion_fmri import SizePreset, make_laion_fmri
preset = SizePreset(*json.loads(sys.argv[2]))
make_laion_fmri(sys.argv[1], size=preset, progress=False)
status = open("/proc/self/status").read()
print(int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM:"))) * 1024)
"""


def peak_rss_of_writing(folder: Path, preset: SizePreset) -> int:
    """Peak resident memory (VmHWM) of a fresh process that writes ``preset``."""
    fields = [getattr(preset, name) for name in SizePreset.__dataclass_fields__]
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_CHILD, str(folder), json.dumps(fields)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_writer_memory_does_not_grow_with_the_trial_count(tmp_path):
    grid = (64, 64, 64)  # 1 MB per volume: a session of 300 trials is 300 MB in memory
    short = SizePreset(1, 1, grid, 1, 4, 1, 20, 4, 16, 3.0, 200, 0.9)  # 84 trials
    long = SizePreset(1, 1, grid, 4, 16, 4, 80, 4, 16, 3.0, 200, 0.9)  # 336 trials
    assert (trials_per_subject(short), trials_per_subject(long)) == (84, 336)
    session_growth = (336 - 84) * 4 * 64**3  # what holding the session would add: 264 MB
    rss = [peak_rss_of_writing(tmp_path / name, p) for name, p in (("a", short), ("b", long))]
    assert rss[1] - rss[0] < session_growth / 6, [r / 1e6 for r in rss]
