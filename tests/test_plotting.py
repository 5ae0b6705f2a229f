"""Every plotting function writes a non-trivial PNG; the numbers it plots match an independent computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import norm

from neurotorch.errors import ShapeMismatchError

MIN_PNG_BYTES = 5_000


def assert_real_png(path: Path) -> None:
    """A PNG of a few KB at least, with more than one colour and visible contrast."""
    path = Path(path)
    assert path.is_file() and path.stat().st_size > MIN_PNG_BYTES, path
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 5.0
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    assert not list(path.parent.glob(f".{path.name}.*")), "a temporary file was left behind"


# ── fMRI ────────────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def subject(tiny_laion_root):
    from neurotorch.fmri import load_subject

    return load_subject("sub-01", data_dir=tiny_laion_root)


@pytest.mark.parametrize("roi", ["face"])
def test_noise_ceiling_histograms(subject, tmp_path, roi):
    from neurotorch.plotting.fmri import plot_noise_ceilings

    out = plot_noise_ceilings(subject, tmp_path / "nc" / "ceilings.png", roi=roi)
    assert out == tmp_path / "nc" / "ceilings.png"
    assert_real_png(out)


@pytest.fixture
def drawn(monkeypatch):
    """What nilearn is asked to draw: the image, the underlay and the options of every call."""
    from nilearn import plotting

    calls = []
    for name in ("plot_roi", "plot_stat_map"):
        real = getattr(plotting, name)

        def record(image, real=real, name=name, **options):
            calls.append({"function": name, "image": image, **options})
            return real(image, **options)

        monkeypatch.setattr(plotting, name, record)
    return calls


def test_roi_overlay_with_nilearn_in_mm_over_the_t1w(subject, tiny_laion_root, tmp_path, drawn):
    import nibabel as nib

    from neurotorch.fmri import layout
    from neurotorch.plotting.fmri import plot_roi_overlay

    assert_real_png(plot_roi_overlay(subject, ["FFA1", "V1v"], tmp_path / "rois.png"))
    (call,) = drawn
    labels = np.asarray(call["image"].dataobj)
    for label, (category, name) in enumerate([("face", "FFA1"), ("retinotopy", "V1v")], 1):
        roi = nib.load(tiny_laion_root / layout.roi_volume("sub-01", category, name))
        np.testing.assert_array_equal(labels == label, np.asarray(roi.dataobj) > 0)
        np.testing.assert_allclose(call["image"].affine, roi.affine)  # mm, scanner space
    t1w = tiny_laion_root / layout.anatomical_image("sub-01", "T1w", "1pt8")
    np.testing.assert_array_equal(call["bg_img"].get_fdata(), nib.load(t1w).get_fdata())
    assert call.get("annotate", True)  # nilearn's L/R and mm labels
    assert_real_png(
        plot_roi_overlay(subject, "FFA1", tmp_path / "x.png", display_mode="x", cut_coords=[10.0])
    )
    assert drawn[1]["cut_coords"] == [10.0]


def test_brain_maps_without_an_anatomical_folder_have_no_underlay(tiny_laion_root, tmp_path):
    import shutil

    from neurotorch.fmri import layout, load_subject
    from neurotorch.plotting.fmri import plot_roi_overlay

    root = tmp_path / "tree"
    shutil.copytree(tiny_laion_root, root, ignore=shutil.ignore_patterns("anatomical"))
    assert not (root / layout.ANAT_DIR).exists()
    assert_real_png(plot_roi_overlay(load_subject("sub-01", root), "face", tmp_path / "r.png"))


def test_voxel_map_puts_each_value_on_its_voxel(subject, tiny_laion_root, tmp_path, drawn):
    import nibabel as nib

    from neurotorch.fmri import layout
    from neurotorch.plotting.fmri import plot_voxel_map

    mask = nib.load(tiny_laion_root / layout.anatomical_brain_mask("sub-01", "1pt8"))
    voxels = np.flatnonzero(np.asarray(mask.dataobj).ravel() > 0)[::7]
    values = np.linspace(-1, 1, len(voxels))
    assert_real_png(plot_voxel_map(subject, voxels, values, tmp_path / "r.png", title="test r"))
    (call,) = drawn
    volume = np.asarray(call["image"].dataobj)
    assert volume.shape == mask.shape
    np.testing.assert_allclose(volume[np.unravel_index(voxels, mask.shape)], values, rtol=1e-6)
    assert np.count_nonzero(volume) == np.count_nonzero(values)
    np.testing.assert_allclose(call["image"].affine, mask.affine)
    with pytest.raises(ShapeMismatchError, match="voxel indices"):
        plot_voxel_map(subject, np.array([np.prod(mask.shape)]), [1.0], tmp_path / "bad.png")
    with pytest.raises(ShapeMismatchError, match="one length"):
        plot_voxel_map(subject, voxels, values[:-1], tmp_path / "bad.png")


def test_brain_maps_name_the_extra_when_nilearn_is_missing(subject, tmp_path, monkeypatch):
    import sys

    from neurotorch.errors import MissingDependencyError
    from neurotorch.plotting.fmri import plot_roi_overlay

    monkeypatch.setitem(sys.modules, "nilearn", None)  # import nilearn fails
    with pytest.raises(MissingDependencyError, match=r"neurotorch\[plot\]"):
        plot_roi_overlay(subject, "face", tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize(("split", "pool"), [("tau", "shared"), ("ood", "sub-01")])
def test_split_projection(tiny_laion_root, tmp_path, split, pool):
    from neurotorch.plotting.fmri import plot_split_projection

    assert_real_png(plot_split_projection(tiny_laion_root, split, pool, tmp_path / f"{split}.png"))


def test_split_families(tiny_laion_root, tmp_path):
    from neurotorch.plotting.fmri import plot_split_families

    assert_real_png(plot_split_families(tiny_laion_root, "shared", tmp_path / "families.png"))


def test_plotting_leaves_the_pyplot_backend_alone(subject, tmp_path):
    import matplotlib

    from neurotorch.plotting.fmri import plot_noise_ceilings

    before = matplotlib.get_backend()
    plot_noise_ceilings(subject, tmp_path / "nc.png")
    assert matplotlib.get_backend() == before


# ── M/EEG ───────────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def leadfields():
    """Fixed EEG, free EEG and fixed magnetometer leadfields from real MNE forward models."""
    from neurotorch.meeg.forward import simulate_leadfield

    return {
        "eeg_fixed": simulate_leadfield("fixed", n_sources=120, sensor="eeg"),
        "eeg_free": simulate_leadfield("free", n_sources=120, sensor="eeg"),
        "mag_fixed": simulate_leadfield("fixed", n_sources=120, sensor="mag"),
    }


@pytest.mark.slow
def test_column_norms_match_numpy(leadfields):
    from neurotorch.plotting.meeg import column_norms

    fixed, free = leadfields["eeg_fixed"].leadfield, leadfields["eeg_free"].leadfield
    np.testing.assert_allclose(column_norms(fixed), np.linalg.norm(fixed, axis=0))
    expected = np.array([np.linalg.norm(free[:, s, :]) for s in range(free.shape[1])])
    np.testing.assert_allclose(column_norms(leadfields["eeg_free"]), expected)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["eeg_fixed", "eeg_free"])
def test_leadfield_column_norm_plot(leadfields, tmp_path, name):
    from neurotorch.plotting.meeg import plot_leadfield_column_norms

    data = leadfields[name]
    assert_real_png(
        plot_leadfield_column_norms(
            data if name == "eeg_fixed" else data.leadfield, tmp_path / "lf.png"
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "source"), [("eeg_fixed", 7), ("eeg_free", 7), ("mag_fixed", None)]
)
def test_sensor_topomap(leadfields, tmp_path, name, source):
    from neurotorch.plotting.meeg import plot_sensor_topomap

    assert_real_png(plot_sensor_topomap(leadfields[name], tmp_path / "topo.png", source=source))


@pytest.mark.slow
def test_sensor_positions_follow_the_leadfield_channels(leadfields):
    import mne

    from neurotorch.plotting.meeg import leadfield_sensor_info

    for name, montage in (("eeg_fixed", "easycap-M43"), ("mag_fixed", None)):
        lf = leadfields[name]
        info = leadfield_sensor_info(lf)
        assert info["ch_names"] == list(lf.ch_names)
        if montage:  # MNE's own montage placement of the same channels, in the same order
            expected = mne.create_info(list(lf.ch_names), 250.0, "eeg").set_montage(montage)
        else:
            helmet = mne.channels.read_meg_canonical_info("neuromag")
            expected = mne.pick_info(helmet, [helmet["ch_names"].index(c) for c in lf.ch_names])
        np.testing.assert_allclose(
            [c["loc"][:3] for c in info["chs"]], [c["loc"][:3] for c in expected["chs"]]
        )


def _run(rng, scale: float, free: bool = False):
    from neurotorch.meeg.summaries import PosteriorRun

    if free:
        x_hat = rng.standard_normal((40, 3, 25))
        cov = np.broadcast_to(np.eye(3), (40, 3, 3)).copy()
        return PosteriorRun(
            x_true=x_hat + scale * rng.standard_normal(x_hat.shape),
            x_hat=x_hat,
            var=np.ones((40, 3)),
            cov_blocks=cov,
        )
    x_hat = rng.standard_normal((60, 25))
    return PosteriorRun(
        x_true=x_hat + scale * rng.standard_normal(x_hat.shape), x_hat=x_hat, var=np.ones(60)
    )


def test_run_coverage_counts_covered_samples():
    from scipy.stats import chi2

    from neurotorch.plotting.meeg import run_coverage

    rng = np.random.default_rng(0)
    levels = np.array([0.5, 0.9])
    fixed = _run(rng, 2.0)
    z = np.abs(fixed.x_true - fixed.x_hat) / np.sqrt(fixed.var)[:, None]
    expected = [np.mean(z <= norm.ppf((1 + c) / 2)) for c in levels]
    np.testing.assert_allclose(run_coverage(fixed, levels, "pointwise"), expected)
    # time-averaged (default): |mean_t (x - mu)| against sqrt(var / T), T = 25
    z_bar = np.abs((fixed.x_true - fixed.x_hat).mean(axis=1)) / np.sqrt(fixed.var / 25)
    expected = [np.mean(z_bar <= norm.ppf((1 + c) / 2)) for c in levels]
    np.testing.assert_allclose(run_coverage(fixed, levels), expected)
    free = _run(rng, 1.0, free=True)
    d2 = np.sum((free.x_true - free.x_hat) ** 2, axis=1)  # identity covariance
    np.testing.assert_allclose(
        run_coverage(free, levels, "pointwise"), [np.mean(d2 <= chi2.ppf(c, 3)) for c in levels]
    )


def test_coverage_plot(tmp_path):
    from neurotorch.plotting.meeg import plot_coverage

    rng = np.random.default_rng(1)
    runs = {
        "calibrated": _run(rng, 1.0),
        "over-confident": _run(rng, 2.5),
        "free": _run(rng, 1.0, True),
    }
    assert_real_png(plot_coverage(runs, tmp_path / "coverage.png"))
    assert_real_png(plot_coverage(runs["calibrated"], tmp_path / "one.png"))


# ── connectome ──────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def network_result(tmp_path_factory):
    """Lesion network maps on a small grid: voxels of the left and right blobs share a signal."""
    from neurotorch.connectome import network_map
    from neurotorch.connectome.writer import write_batch

    shape = (12, 12, 10)
    mask = np.zeros(shape, dtype=bool)
    mask[1:-1, 1:-1, 1:-1] = True
    indices = np.argwhere(mask)
    network = (
        (np.abs(indices[:, 0] - 5.5) > 2.5) & (np.abs(indices[:, 1] - 6) < 2) & (indices[:, 2] < 5)
    )
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("connectome")

    def series():
        for _ in range(5):
            data = rng.standard_normal((30, len(indices))).astype(np.float32)
            data[:, network] += 2 * rng.standard_normal((30, 1)).astype(np.float32)
            yield data

    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    write_batch(
        folder / "gsp1000_chunk_000.h5",
        series(),
        [f"s{i}" for i in range(5)],
        indices,
        affine,
        shape,
        30,
    )
    lesion = np.zeros(shape, dtype=bool)
    lesion[tuple(indices[network][0])] = True
    return network_map({"lesion-a": lesion}, folder), lesion


@pytest.mark.parametrize(
    ("kind", "threshold", "per_voxel"),
    [("t", None, False), ("meanz", 0.2, True), ("q", 1.3, False)],
)
def test_network_map_slices(network_result, tmp_path, kind, threshold, per_voxel):
    from neurotorch.plotting.connectome import plot_network_map

    result, lesion = network_result
    mask = lesion[tuple(result.mask_indices.T)] if per_voxel else lesion
    out = plot_network_map(
        result,
        "lesion-a",
        tmp_path / f"{kind}.png",
        kind=kind,
        threshold=threshold,
        lesion_mask=mask,
    )
    assert_real_png(out)


def test_network_map_rejects_a_lesion_on_another_grid(network_result, tmp_path):
    from neurotorch.errors import ShapeMismatchError
    from neurotorch.plotting.connectome import plot_network_map

    result, _ = network_result
    with pytest.raises(ShapeMismatchError, match="lesion_mask"):
        plot_network_map(result, 0, tmp_path / "x.png", lesion_mask=np.zeros((3, 3, 3), dtype=bool))
