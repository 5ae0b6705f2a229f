"""What a user of the connectome family sees: summaries that show every key column, reprs that
say what and where, ``data_dir="synthetic"``, parcel statistics in both conventions (Lacuna's
checked against nilearn's ``NiftiLabelsMasker``, which Lacuna calls), devices, choices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neurotorch.cli import main
from neurotorch.connectome import Atlas, ConnectomeBatches, load_lesions, network_map
from neurotorch.data.connectome.subjects import ConnectomeChunks, ConnectomeSubjects
from neurotorch.data.registry import load_dataset
from neurotorch.errors import ParameterError
from neurotorch.lightning.connectome import ConnectomeDataModule
from neurotorch.synthetic.connectome import (
    BATCH_DIR,
    LESION_DIR,
    NETWORKS_FILE,
    make_connectome_dataset,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_connectome_dataset(tmp_path_factory.mktemp("api") / "c", size="tiny")


@pytest.fixture(scope="module")
def result(root):
    return network_map(root / LESION_DIR, root / BATCH_DIR)


def test_printed_summary_shows_every_column_and_the_peak(root, result):
    table = result.summary(t_threshold=3.0)
    text = str(table)
    with pd.option_context("display.width", 80):
        assert "..." not in repr(table) and repr(table) == text
    for column in table.columns:
        assert column in text
    assert text.splitlines()[0].split()[:6] == [
        "lesion",
        "n_subjects",
        "n_lesion_voxels",
        "n_seed_voxels",
        "lesion_volume_mm3",
        "peak_t",
    ]
    for k, name in enumerate(result.names):
        outside = np.where(result.lesion_masks[k], 0.0, np.abs(result.t[k].astype(np.float64)))
        voxel = int(np.argmax(outside))
        row = table.set_index("lesion").loc[name]
        assert row.peak_t == result.t[k, voxel]
        world = result.affine @ np.r_[result.mask_indices[voxel], 1.0]
        assert (row.peak_x_mm, row.peak_y_mm, row.peak_z_mm) == tuple(world[:3])
    assert isinstance(table.head(2), pd.DataFrame)
    one_voxel = np.zeros(len(result.mask_indices), dtype=bool)
    one_voxel[100] = True  # its own voxel has t = inf: never the peak
    single = network_map({"one": one_voxel}, root / BATCH_DIR).summary()
    assert single.max_t[0] == np.inf and np.isfinite(single.peak_t[0])


def test_reprs_say_what_where_and_how_many(root, result):
    batches = ConnectomeBatches(root / BATCH_DIR)
    text = repr(batches)
    assert str(root / BATCH_DIR) in text and "6 subjects" in text and "2 files" in text
    assert f"{batches.n_voxels} voxels" in text and "MNI152NLin2009aAsym" in text
    lesions = load_lesions(root / LESION_DIR, batches)
    text = repr(lesions)
    assert "6 lesions" in text and str(root / LESION_DIR) in text and "MNI152NLin2009aAsym" in text
    text = repr(result)
    assert "6 lesions" in text and "6 subjects" in text and f"{batches.n_voxels} voxels" in text
    assert "maps meanz/r/t/p/q" in text and "space='MNI152NLin2009aAsym'" in text
    subjects = ConnectomeSubjects(batches, subjects=[0, 3])
    assert "2 of 6 subjects" in repr(subjects) and str(root / BATCH_DIR) in repr(subjects)
    chunks = ConnectomeChunks(batches, shuffle=True, seed=4)
    assert "shuffle=True" in repr(chunks) and "epoch=0" in repr(chunks)
    module = ConnectomeDataModule(data_dir=str(root / BATCH_DIR))
    assert "not opened" in repr(module)  # describing does not read or write data
    module.setup()
    assert "train=" in repr(module) and str(root / BATCH_DIR) in repr(module)


def test_synthetic_data_dir_is_one_spelling_with_none_as_alias(root):
    """``"synthetic"`` resolves through the synthetic resolver; ``None`` is its documented alias;
    both give the tiny synthetic connectome that ``make_connectome_dataset`` writes."""
    expected = ConnectomeBatches(root / BATCH_DIR)
    for spelling in ("synthetic", None):
        dataset = ConnectomeSubjects(spelling)
        assert dataset.batches.subject_ids == expected.subject_ids
        np.testing.assert_array_equal(dataset[1]["timeseries"].numpy(), expected.read_subject(1))
    served = load_dataset("connectome", data_dir="synthetic", split="test")
    assert isinstance(served, ConnectomeSubjects) and 0 < len(served) < 6
    module = ConnectomeDataModule()  # the default is the synthetic connectome
    module.setup()
    assert sorted(sum(module.subject_splits().values(), [])) == list(range(6))
    with pytest.raises(ParameterError, match="synthetic_size"):
        ConnectomeDataModule(synthetic_size="huge")


def _nilearn_parcel_values(result, kind, lesion, atlas_image, strategy):
    """What Lacuna's ParcelAggregation computes: nilearn's NiftiLabelsMasker on the saved map."""
    maskers = pytest.importorskip("nilearn.maskers")
    import nibabel as nib

    volume = result.volume(kind, lesion)[..., np.newaxis]
    masker = maskers.NiftiLabelsMasker(
        labels_img=atlas_image,
        strategy=strategy,
        resampling_target="data",
        standardize=None,
    )
    values = masker.fit_transform(nib.Nifti1Image(volume, result.affine))[0]
    present = sorted(set(np.unique(np.asarray(atlas_image.dataobj)).astype(int)) - {0})
    return dict(zip(present, values, strict=True))


@pytest.mark.parametrize("how", ["mean", "sum", "median", "percent"])
def test_lacuna_convention_equals_nilearns_labels_masker(root, result, how):
    import nibabel as nib

    networks = nib.load(root / NETWORKS_FILE)
    atlas = Atlas.from_files(networks, {1: "net-1", 2: "net-2", 3: "net-3"})
    frame = atlas.aggregate(result, kinds="t", how=how, convention="lacuna")
    strategy = "mean" if how == "percent" else how
    scale = 100.0 if how == "percent" else 1.0
    for k, name in enumerate(result.names[:2]):
        expected = _nilearn_parcel_values(result, "t", k, networks, strategy)
        rows = frame[frame.lesion == name].set_index("index")["value"]
        for label, value in expected.items():
            assert rows[label] == pytest.approx(scale * value, rel=1e-5, abs=1e-6)
    ours = atlas.aggregate(result, kinds=("t",), how=how)  # over the brain mask only
    labels = np.asarray(networks.dataobj)[tuple(result.mask_indices.T)]
    inside = result.t[0][labels == 1].astype(np.float64)
    expected = {
        "mean": inside.mean(),
        "sum": inside.sum(),
        "median": np.median(inside),
        "percent": 100.0 * np.count_nonzero(inside) / inside.size,
    }[how]
    value = ours[(ours.lesion == result.names[0]) & (ours["index"] == 1)]["value"].item()
    assert value == pytest.approx(expected, rel=1e-5)


def test_a_device_that_does_not_exist_is_a_usage_error(root, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ParameterError, match="CUDA"):
        network_map(root / LESION_DIR, root / BATCH_DIR, device="cuda")
    for device in ("cuda", "tpu9"):
        status = main(
            [
                "lnm",
                str(root / LESION_DIR),
                "--connectome",
                str(root / BATCH_DIR),
                "--out",
                "unused",
                "--device",
                device,
            ]
        )
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("error:") and "--device" in err
        assert "unexpected" not in err and device in err


def test_cli_choices_match_the_library():
    from neurotorch.cli import lnm
    from neurotorch.connectome.atlas import CONVENTIONS
    from neurotorch.connectome.parcellation import REDUCTIONS

    assert lnm.AGGREGATIONS == REDUCTIONS and lnm.CONVENTIONS == CONVENTIONS
