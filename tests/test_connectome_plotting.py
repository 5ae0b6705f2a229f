"""Network-map figures: drawn by nilearn, in mm, with L/R, over the MNI152 template where the
connectome is in an MNI152 space (over its brain mask otherwise); a named error without nilearn."""

from __future__ import annotations

import sys
from unittest import mock

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("nilearn")

from neurotorch.connectome import network_map  # noqa: E402
from neurotorch.errors import MissingDependencyError  # noqa: E402
from neurotorch.plotting import connectome as plots  # noqa: E402
from neurotorch.synthetic.connectome import BATCH_DIR, LESION_DIR, make_connectome  # noqa: E402


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = make_connectome(tmp_path_factory.mktemp("plots") / "c", n_subjects=5, n_timepoints=20)
    return network_map(root / LESION_DIR, root / BATCH_DIR)


def _drawn(call) -> list[str]:
    """The texts of the figure ``call`` saves (slice labels, L/R marks, title)."""
    figures, save = [], plots.save_png

    def capture(fig, path):
        figures.append(fig)
        return save(fig, path)

    with mock.patch.object(plots, "save_png", capture):
        path = call()
    assert path.stat().st_size > 10_000  # a real PNG
    return [text.get_text() for ax in figures[0].axes for text in ax.texts]


def test_slices_cross_at_the_peak_in_mm_with_left_and_right(result, tmp_path):
    row = 1
    texts = _drawn(lambda: plots.plot_network_map(result, row, tmp_path / "t.png"))
    outside = np.where(result.lesion_masks[row], -1.0, np.abs(result.t[row].astype(np.float64)))
    peak = nib.affines.apply_affine(result.affine, result.mask_indices[np.argmax(outside)])
    for axis, coordinate in zip("xyz", peak, strict=True):
        assert f"{axis}={coordinate:.0f}" in texts  # world coordinates, not voxel indices
    assert {"L", "R"} <= set(texts)
    assert any("MNI152 template" in text for text in texts)
    texts = _drawn(
        lambda: plots.plot_network_map(result, row, tmp_path / "c.png", cut_mm=(10.0, -20.0, 4.0))
    )
    assert {"x=10", "y=-20", "z=4"} <= set(texts)


def test_underlay_is_the_template_only_in_an_mni152_space(result):
    background, what = plots.underlay(result)
    assert what == "MNI152 template" and background.shape == (99, 117, 95)
    other = type(result)(**{**vars(result), "space": "unknown"})
    background, what = plots.underlay(other)
    assert what == "brain mask"
    mask = np.asarray(background.dataobj)
    assert mask.sum() == len(result.mask_indices) and mask[tuple(result.mask_indices.T)].all()


@pytest.mark.parametrize(("kind", "style"), [("q", "slices"), ("t", "glass"), ("meanz", "glass")])
def test_other_maps_and_the_glass_brain(result, tmp_path, kind, style):
    texts = _drawn(
        lambda: plots.plot_network_map(
            result, 0, tmp_path / "x.png", kind=kind, style=style, threshold=1.3
        )
    )
    assert {"L", "R"} <= set(texts)


def test_without_nilearn_the_error_names_the_extra(result, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nilearn", None)
    with pytest.raises(MissingDependencyError, match=r"neurotorch\[plot\]"):
        plots.plot_network_map(result, 0, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_lnm_command_without_nilearn_fails_before_the_work(tmp_path, monkeypatch, capsys):
    from neurotorch.cli import main

    root = make_connectome(tmp_path / "c", n_subjects=3, n_timepoints=8, subjects_per_chunk=3)
    monkeypatch.setitem(sys.modules, "nilearn", None)
    command = ["lnm", str(root / LESION_DIR), "--connectome", str(root / BATCH_DIR), "--out"]
    with mock.patch("neurotorch.connectome.network_map") as mapping:
        assert main([*command, str(tmp_path / "maps")]) == 1
    err = capsys.readouterr().err
    assert "neurotorch[plot]" in err and "--no-figures" in err and not mapping.called
    assert main([*command, str(tmp_path / "maps"), "--no-figures"]) == 0
