"""Edges of the data, io, fmri and features layers that other tests left unpinned (an epoch's
pass count, a CRC on a partial read, bytes after an .npy's data, a shifted grid, an ROI overlap,
cache keys and damaged cache files). Every expectation is computed independently (by hand, with
numpy, PIL, nibabel or h5py), never by the function under test."""

from __future__ import annotations

import gzip
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from neurotorch.errors import CacheError, FormatError, ParameterError, ShapeMismatchError
from neurotorch.io.storage import DataRoot

SUB = "sub-01"


# -- data: sharding, collation, partition --------------------------------------------------------


def _fresh_each_pass_dataset():
    """A dataset that draws fresh data every pass (``auto_advance``) and yields its pass epoch."""
    from neurotorch.data.sharding import ShardedIterable

    class Fresh(ShardedIterable):
        auto_advance = True

        def __iter__(self):
            yield self.pass_epoch()

    return Fresh()


def test_set_epoch_restarts_the_pass_count_of_a_fresh_each_pass_dataset():
    dataset = _fresh_each_pass_dataset()
    assert [next(iter(dataset)) for _ in range(3)] == [0, 1, 2]  # moves on by itself
    dataset.set_epoch(5)
    # the epoch set is the next pass's epoch: the three earlier passes are not added to it
    assert [next(iter(dataset)) for _ in range(2)] == [5, 6]
    dataset.epoch = 0
    assert next(iter(dataset)) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_an_epoch_must_be_a_non_negative_integer(bad):
    from neurotorch.errors import ShardingError

    dataset = _fresh_each_pass_dataset()
    dataset.set_epoch(np.int64(3))
    with pytest.raises(ShardingError, match="epoch"):
        dataset.set_epoch(bad)
    assert dataset.epoch == 3  # a refused epoch changes nothing


def test_an_item_batch_takes_negative_indices_like_a_sequence():
    from neurotorch.data.collate import ItemBatch

    names = ["a", "b", "c"]
    batch = ItemBatch({"x": torch.arange(6).reshape(3, 2), "name": names}, 3)
    assert batch[-1]["name"] == "c" and batch[-1]["x"].tolist() == [4, 5]
    assert batch[-3]["name"] == "a" and batch[-3]["x"].tolist() == [0, 1]
    assert [item["name"] for item in reversed(batch)] == names[::-1]
    for outside in (3, -4):
        with pytest.raises(IndexError):
            batch[outside]


def test_booleans_stay_a_list_while_numbers_become_a_tensor():
    from neurotorch.data.collate import collate_items

    batch = collate_items([{"flag": True, "n": 1, "x": 0.5}, {"flag": False, "n": 2, "x": 1.5}])
    assert batch["flag"] == [True, False] and isinstance(batch["flag"], list)
    assert isinstance(batch["n"], torch.Tensor) and batch["n"].tolist() == [1, 2]
    assert batch["x"].tolist() == [0.5, 1.5]


def test_val_fraction_is_a_fraction_of_all_units_not_of_what_the_test_part_leaves():
    from neurotorch.data.partition import partition

    units = [f"img{k:03d}" for k in range(100)]
    parts = partition(units, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert {name: len(part) for name, part in parts.items()} == {"train": 60, "val": 20, "test": 20}
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == units


# -- io: volume reads --------------------------------------------------------------------------


def _write_4d(path: Path, n_volumes: int = 4) -> np.ndarray:
    data = np.random.default_rng(0).standard_normal((5, 4, 3, n_volumes)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return np.asarray(nib.load(path).get_fdata(dtype=np.float32))


def test_a_volume_index_equal_to_the_count_is_out_of_range_not_a_corrupt_file(tmp_path):
    from neurotorch.io.nifti import read_masked_betas, resolve_volume_indices

    path = tmp_path / "betas.nii"
    _write_4d(path, n_volumes=4)
    with pytest.raises(IndexError, match="out of range"):
        resolve_volume_indices([4], 4, "betas")
    assert resolve_volume_indices([3, -4], 4, "betas").tolist() == [3, 0]
    with pytest.raises(IndexError, match="out of range"):
        read_masked_betas(path, None, volumes=[0, 4])


def test_repeated_volumes_are_each_filled(tmp_path):
    from neurotorch.io.nifti import read_masked_betas

    path = tmp_path / "betas.nii.gz"
    data = _write_4d(path, n_volumes=4)
    mask = np.zeros(data.shape[:3], dtype=bool)
    mask[1:4, ::2, 1:] = True
    wanted = [2, 0, 2, 3, 2]
    expected = np.stack([data[..., v][mask] for v in wanted])  # C order over the grid
    np.testing.assert_array_equal(read_masked_betas(path, mask, volumes=wanted), expected)


def test_reading_the_first_volumes_still_checks_the_gzip_crc(tmp_path):
    from neurotorch.errors import CorruptFileError
    from neurotorch.io.nifti import read_masked_betas

    path = tmp_path / "betas.nii.gz"
    data = np.random.default_rng(0).standard_normal((40, 40, 40, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)  # 2 MB: more than one read buffer
    expected = np.stack([data[..., v].ravel() for v in (0, 1)])
    np.testing.assert_array_equal(read_masked_betas(path, None, volumes=[0, 1]), expected)
    content = bytearray(path.read_bytes())
    content[-8] ^= 0xFF  # the CRC-32 of the gzip trailer, far past volumes 0 and 1
    path.write_bytes(bytes(content))
    with pytest.raises(CorruptFileError):
        read_masked_betas(path, None, volumes=[0, 1])


def test_a_volume_range_past_the_end_is_an_index_error(tmp_path):
    from neurotorch.io.seek_index import iter_volume_range

    path = tmp_path / "betas.nii"  # plain .nii: no seek index needed
    data = _write_4d(path, n_volumes=4)
    got = [values for _, values in iter_volume_range(path, 1, 4)]  # full (x, y, z) volumes
    np.testing.assert_array_equal(np.stack(got), np.moveaxis(data[..., 1:4], -1, 0))
    with pytest.raises(IndexError, match="outside"):
        list(iter_volume_range(path, 2, 5))


# -- io: integrity and atomic writes -----------------------------------------------------------


def test_a_gzipped_nifti_with_a_singular_affine_is_bad(tmp_path):
    from neurotorch.io.integrity import check_file

    header = nib.Nifti1Header()
    header.set_data_shape((3, 3, 3, 2))
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    header.set_qform(None, code=0)
    header["vox_offset"] = 352
    raw = bytearray(header.binaryblock) + bytes(4) + np.ones(54, "<f4").tobytes()
    raw[312:328] = np.zeros(4, "<f4").tobytes()  # srow_z = 0: the third axis collapses
    (tmp_path / "flat.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    affine = nib.load(tmp_path / "flat.nii.gz").affine
    assert np.all(np.isfinite(affine)) and np.linalg.det(affine[:3, :3]) == 0  # finite, singular
    result = check_file(DataRoot(tmp_path), "flat.nii.gz")
    assert result.status == "bad" and "invertible" in result.detail


def test_an_npy_with_bytes_after_its_data_is_bad(tmp_path):
    from neurotorch.io.integrity import check_file

    path = tmp_path / "array.npy"
    np.save(path, np.arange(10))
    size = path.stat().st_size
    path.write_bytes(path.read_bytes() + b"junk")
    result = check_file(DataRoot(tmp_path), path.name)
    assert result.status == "bad" and str(size) in result.detail


def test_an_hdf5_file_without_data_is_not_called_verified(tmp_path):
    from neurotorch.io.integrity import check_file

    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("nothing")
    assert check_file(DataRoot(tmp_path), "empty.h5").status == "no checksum"


def test_json_files_end_with_a_newline(tmp_path):
    import json

    from neurotorch.io.atomic import write_json

    write_json(tmp_path / "a.json", {"a": [1, 2]})
    text = (tmp_path / "a.json").read_text()
    assert text.endswith("}\n") and json.loads(text) == {"a": [1, 2]}


# -- fmri: masks, voxel table, tables ----------------------------------------------------------


def test_a_custom_mask_is_read_on_the_grid_in_c_order_and_kept_inside_the_brain():
    from neurotorch.fmri.masks import custom_mask_on_grid

    rng = np.random.default_rng(0)
    brain = rng.random((4, 5, 6)) < 0.7
    grid = rng.random((4, 5, 6)) < 0.5
    flat = grid.ravel()  # numpy's default ravel: C order
    expected = np.zeros_like(brain)
    for i, j, k in np.ndindex(brain.shape):
        expected[i, j, k] = grid[i, j, k] and brain[i, j, k]
    np.testing.assert_array_equal(custom_mask_on_grid(grid, brain), expected)
    np.testing.assert_array_equal(custom_mask_on_grid(flat, brain), expected)
    per_brain_voxel = grid[brain]
    np.testing.assert_array_equal(custom_mask_on_grid(per_brain_voxel, brain), expected)


def test_scatter_to_grid_fills_the_voxels_outside_the_mask():
    from neurotorch.fmri.masks import scatter_to_grid

    mask = np.zeros((3, 4, 2), dtype=bool)
    mask[0, 1, 1] = mask[2, 3, 0] = True
    volume = scatter_to_grid(np.array([1.5, 2.5]), mask, fill=np.nan)
    assert volume[0, 1, 1] == 1.5 and volume[2, 3, 0] == 2.5
    assert np.isnan(volume[~mask]).all()
    assert (scatter_to_grid(np.array([1.5, 2.5]), mask, fill=-1)[~mask] == -1).all()


def test_a_shifted_grid_is_not_the_same_grid():
    from neurotorch.fmri.masks import check_affine

    reference = np.diag([1.8, 1.8, 1.8, 1.0])
    reference[:3, 3] = [-90.0, -126.0, -72.0]
    check_affine(reference + 1e-4, reference, "float32 noise")  # within the tolerance
    shifted = reference.copy()
    shifted[0, 3] += 1.8  # one voxel along x: same zooms and rotation, other points in space
    with pytest.raises(ShapeMismatchError, match="different affines"):
        check_affine(shifted, reference, "a shifted ROI")


@pytest.fixture(scope="module")
def roi_volumes(tiny_laion_root) -> dict[str, np.ndarray]:
    files = sorted((tiny_laion_root / "derivatives/rois" / SUB).glob("*/*_label-*_mask.nii.gz"))
    return {
        f.name.split("_label-")[1].removesuffix("_mask.nii.gz"): np.asarray(nib.load(f).dataobj)
        != 0
        for f in files
    }


def test_voxel_table_labels_a_voxel_with_the_first_roi_of_the_query(tiny_laion_root, roi_volumes):
    from neurotorch.fmri.voxel_selection import VoxelSelection
    from neurotorch.fmri.voxel_table import voxel_table

    names = sorted(roi_volumes)
    first, second = next(
        (a, b) for a in names for b in names if a != b and (roi_volumes[a] & roi_volumes[b]).any()
    )
    both = set(np.flatnonzero((roi_volumes[first] & roi_volumes[second]).ravel()).tolist())
    for query in ([first, second], [second, first]):
        table = voxel_table(DataRoot(tiny_laion_root), SUB, VoxelSelection(roi=query))
        shared = table[table["voxel"].isin(both)]
        assert len(shared) > 0 and set(shared["roi"]) == {query[0]}


def test_voxel_table_ceiling_r_uses_the_repetitions_of_its_noise_ceiling(tiny_laion_root):
    from neurotorch.fmri.voxel_selection import VoxelSelection
    from neurotorch.fmri.voxel_table import voxel_table

    for desc, reps in (("Noiseceiling4rep", 4), ("Noiseceiling12rep", 12)):
        table = voxel_table(DataRoot(tiny_laion_root), SUB, VoxelSelection(), ceiling_desc=desc)
        f = np.clip(np.nan_to_num(table["noise_ceiling"].to_numpy()) / 100, 0, 1 - 1e-12)
        snr2 = f / (reps * (1 - f))  # the documented inversion of the noise ceiling
        np.testing.assert_allclose(table["ceiling_r"], np.sqrt(snr2 / (snr2 + 1)), rtol=1e-12)
        assert (table["noise_ceiling"] > 0).any()


def test_a_fractional_value_in_an_integer_column_is_refused():
    from neurotorch.fmri.datafiles import check_integer_column

    check_integer_column(pd.DataFrame({"beta_index": [0.0, 1.0, 2.0]}), "beta_index", "t.tsv")
    with pytest.raises(FormatError, match=r"'1\.5' in data row 2"):
        check_integer_column(pd.DataFrame({"beta_index": [0, 1.5, 2]}), "beta_index", "t.tsv")


# -- features: pooling, spec, cache ------------------------------------------------------------


def test_pca_needs_fewer_components_than_fitting_images():
    from neurotorch.features.pooling import check_pca_size

    check_pca_size(4, 5, 10, layer="l")
    for k, m, dim in ((5, 5, 10), (6, 5, 10), (3, 10, 2)):
        with pytest.raises(ParameterError):
            check_pca_size(k, m, dim, layer="l")


def test_pca_explained_variance_is_the_sample_variance_of_the_scores():
    from neurotorch.features.pooling import fit_pca

    x = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    fitted = fit_pca(torch.from_numpy(x), 3, layer="l")
    scores = (x.astype(np.float64) - x.mean(axis=0)) @ fitted["components"].T.astype(np.float64)
    np.testing.assert_allclose(fitted["explained_variance"], scores.var(axis=0, ddof=1), rtol=1e-4)


def test_the_cache_key_of_a_reducing_pooling_holds_its_seed_and_pca_sample():
    from neurotorch.features.spec import FeatureSpec

    def key(**options):
        return FeatureSpec("m", **options).pooling_identity()

    assert key(pooling="pca", k=2, pca_images=10) != key(pooling="pca", k=2, pca_images=20)
    assert key(pooling="pca", k=2, seed=1) != key(pooling="pca", k=2, seed=2)
    assert key(pooling="random_projection", k=2, seed=1) != key(
        pooling="random_projection", k=2, seed=2
    )
    assert key(pooling="avg", seed=1) == key(pooling="avg", seed=2) == {"kind": "avg"}


def test_image_transform_values_are_checked():
    from neurotorch.features.spec import ImageTransform

    for bad in ({"std": (0.0, 1.0, 1.0)}, {"std": (-0.2, 1.0, 1.0)}, {"resize": 10, "crop": 12}):
        with pytest.raises(ParameterError):
            ImageTransform(**bad)
    ImageTransform(resize=10, crop=10, mean=(-1.0, 0.0, 2.0))


def test_image_transform_rounds_the_longer_side_to_nearest():
    from neurotorch.features.spec import ImageTransform

    pixels = (np.arange(20 * 31 * 3) % 251).astype(np.uint8).reshape(20, 31, 3)
    image = Image.fromarray(pixels)  # 31 wide, 20 high: 31 * 10 / 20 = 15.5 -> 16
    transform = ImageTransform(resize=10, crop=10, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    resized = image.resize((16, 10), resample=Image.Resampling.BILINEAR)
    cropped = resized.crop((3, 0, 13, 10))  # left (16 - 10) // 2 = 3
    expected = np.asarray(cropped, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    np.testing.assert_array_equal(transform(image).numpy(), expected)


@pytest.fixture
def entry(tmp_path):
    from neurotorch.features.cache import FeatureEntry, features_root

    def make(name: str):
        made = FeatureEntry(features_root(tmp_path) / name)
        parts = {"chunk_size": 4, "stimuli": {"n_images": 10}, "model": name, "layer": "l"}
        made.create({**parts, "pooling": {"kind": "avg"}, "transform": None}, {"name": name})
        return made

    return make


def test_rows_of_the_last_short_chunk_are_read(entry):
    made = entry("abc111")
    values = np.arange(40, dtype=np.float32).reshape(10, 4)
    for chunk, (start, stop) in enumerate([(0, 4), (4, 8), (8, 10)]):
        made.write_chunk(chunk, (start, stop), values[start:stop])
    np.testing.assert_array_equal(made.read_rows([9, 0, 8, 5]), values[[9, 0, 8, 5]])
    assert made.describe()["chunks"] == [3, 3]  # 10 images in chunks of 4: three chunks


def test_describe_counts_the_short_last_chunk(entry):
    made = entry("abc111")
    made.write_chunk(0, (0, 4), np.zeros((4, 2), np.float32))
    assert made.describe()["chunks"] == [1, 3] and made.describe()["complete"] is False


def test_a_chunk_recorded_for_other_rows_is_not_served(entry):
    made = entry("abc111")
    made.write_chunk(0, (4, 8), np.ones((4, 2), np.float32))
    assert made.load_chunk(0, (0, 4)) is None
    with pytest.raises(CacheError):
        made.read_chunk(0, (0, 4))


def test_a_damaged_pca_file_is_not_used(entry):
    made = entry("abc111")
    made.write_pca({"mean": np.arange(3, dtype=np.float32)})
    assert made.has_pca()
    path = made.directory / "pca.npz"
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not made.has_pca()
    with pytest.raises(CacheError, match="pca"):
        made.read_pca()


def test_an_ambiguous_entry_prefix_is_refused(entry, tmp_path):
    from neurotorch.features.cache import find_entry

    entry("abc111")
    entry("abc222")
    assert find_entry("abc1", tmp_path).name == "abc111"
    with pytest.raises(ParameterError, match="2 entries"):
        find_entry("abc", tmp_path)


# -- data: grouped batches --------------------------------------------------------------------


def test_shuffled_grouped_batches_interleave_the_groups_and_cover_every_item():
    from neurotorch.data.sampling import GroupedBatchSampler

    groups = np.repeat([0, 1], 8)
    sampler = GroupedBatchSampler(range(16), 2, groups=groups, shuffle=True, seed=0)
    orders = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(16))
        assert all(len({int(groups[i]) for i in b}) == 1 for b in batches)
        orders.append([int(groups[b[0]]) for b in batches])
    # 4 batches of each group in a random order: all of group 0 first has chance 1/70 an epoch
    assert any(order != sorted(order) for order in orders)


@pytest.mark.parametrize("world_size", [2, 3])
def test_grouped_sampler_length_is_the_batches_one_rank_yields(world_size):
    from torch.utils.data import DistributedSampler

    from neurotorch.data.sampling import GroupedBatchSampler

    groups = np.repeat([0, 1, 2], [7, 5, 6])
    dataset = list(range(len(groups)))
    counts = []
    for rank in range(world_size):
        inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        sampler = GroupedBatchSampler(inner, 4, groups=groups)
        batches = list(sampler)
        assert len(sampler) == len(batches)
        counts.append(len(batches))
    # batches of 4 per group: 2 + 2 + 2 = 6 batches, split so that every rank gets as many
    assert counts == [-(-6 // world_size)] * world_size


def test_nan_voxels_of_a_mask_volume_are_outside_it():
    from neurotorch.fmri.masks import nonzero_mask

    data = np.array([[[0.0, 1.0], [np.nan, -2.5]], [[np.nan, 0.0], [3.0, np.inf]]])
    expected = np.array([[[False, True], [False, True]], [[False, False], [True, True]]])
    np.testing.assert_array_equal(nonzero_mask(data), expected)
    integers = np.array([[[0, 2], [1, 0]]], dtype=np.int16)
    np.testing.assert_array_equal(nonzero_mask(integers), integers != 0)
