"""Map-style `BetasDataset`: workers under every start method, values against nibabel and h5py."""

from __future__ import annotations

import io
import pickle
from functools import cache
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

import neurotorch
from neurotorch.data.collate import collate_items
from neurotorch.data.fmri.betas import BetasDataset
from neurotorch.data.sampling import GroupedBatchSampler
from neurotorch.errors import MixedBatchError
from neurotorch.fmri import layout


@cache
def _volumes(root: Path, subject: str, session: str) -> np.ndarray:
    return np.asarray(nib.load(root / layout.session_betas(subject, session)).dataobj)


@cache
def _clip_by_name(root: Path) -> dict[str, np.ndarray]:
    with h5py.File(root / layout.embeddings("CLIP"), "r") as f:
        ids = [i.decode() for i in f["image_ids"][()]]
        return dict(zip(ids, f["embedding"][()].astype(np.float32), strict=True))


def _trial_table(root: Path, subject: str, session: str) -> pd.DataFrame:
    return pd.read_csv(root / layout.session_trials(subject, session), sep="\t")


def _check_batches(root: Path, dataset: BetasDataset, batches: list[dict]) -> None:
    seen = [
        (s, ses, int(t))
        for b in batches
        for s, ses, t in zip(b["subject"], b["session"], b["trial"], strict=True)
    ]
    expected = list(
        zip(
            dataset.trials["subject"],
            dataset.trials["session"],
            dataset.trials["trial"],
            strict=True,
        )
    )
    assert sorted(seen) == sorted(expected) and len(set(seen)) == len(expected)
    clip = _clip_by_name(root)
    for batch in batches:
        for k, (subject, session, trial) in enumerate(
            zip(batch["subject"], batch["session"], batch["trial"], strict=True)
        ):
            label = (
                _trial_table(root, subject, session)
                .set_index("beta_index")
                .loc[int(trial), "label"]
            )
            assert batch["image_name"][k] == label
            volume = _volumes(root, subject, session)[..., int(trial)]
            np.testing.assert_array_equal(
                batch["betas"][k].numpy(), volume[dataset.voxel_mask(subject)]
            )
            np.testing.assert_array_equal(batch["embedding"][k].numpy(), clip[label])


@pytest.fixture(scope="module")
def train_set(tiny_laion_root) -> BetasDataset:
    return BetasDataset(
        tiny_laion_root,
        "sub-01",
        voxels={"roi": ["face", "V1v"]},
        trials={"split": "random_0", "part": "train"},
    )


def _epoch(dataset, context: str | None, collate=collate_items) -> list[dict]:
    loader = DataLoader(
        dataset,
        batch_size=32,
        shuffle=True,
        num_workers=2,
        multiprocessing_context=context,
        collate_fn=collate,
    )
    return list(loader)


def test_fork_workers_yield_every_trial_once(tiny_laion_root, train_set):
    _check_batches(tiny_laion_root, train_set, _epoch(train_set, "fork"))


def test_default_collate_gives_the_same_batch(train_set):
    indices = [5, 0, 17, 3]
    ours = collate_items(train_set.__getitems__(indices))
    theirs = torch.utils.data.default_collate(train_set.__getitems__(indices))
    assert torch.equal(ours["betas"], theirs["betas"]) and torch.equal(
        ours["embedding"], theirs["embedding"]
    )
    assert ours["image_name"] == theirs["image_name"] and torch.equal(
        ours["trial"], theirs["trial"]
    )
    assert sorted(ours["index"].tolist()) == sorted(indices)
    k = ours["index"].tolist().index(17)
    single = train_set[17]
    assert (
        torch.equal(single["betas"], ours["betas"][k])
        and single["image_name"] == ours["image_name"][k]
    )


@pytest.mark.parametrize("subject", ["sub-01", "sub-02"])
def test_a_batch_comes_back_in_the_order_asked_for(tiny_laion_root, subject):
    dataset = BetasDataset(
        tiny_laion_root,
        ["sub-01", "sub-02"],
        voxels={"roi": "face"},
        trials={"split": "random_0", "part": "test"},
    )
    of_subject = np.flatnonzero(dataset.items["subject"] == subject)
    indices = np.random.default_rng(7).permutation(of_subject)[:11]  # not in read order
    batch = collate_items(dataset.__getitems__(indices.tolist()))
    assert batch["index"].tolist() == indices.tolist()
    items = dataset.items
    for k, index in enumerate(indices):
        assert batch["subject"][k] == items["subject"].iloc[index]
        assert batch["session"][k] == items["session"].iloc[index]
        assert int(batch["trial"][k]) == int(items["trial"].iloc[index])
    for k in range(len(indices)):
        subject, session, trial = batch["subject"][k], batch["session"][k], int(batch["trial"][k])
        volume = _volumes(tiny_laion_root, subject, session)[..., trial]
        np.testing.assert_array_equal(
            batch["betas"][k].numpy(), volume[dataset.voxel_mask(subject)]
        )


@pytest.mark.slow
@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_spawned_workers_yield_every_trial_once(tiny_laion_root, train_set, context):
    assert len(pickle.dumps(train_set)) < 200_000  # no arrays or handles travel with it
    _check_batches(tiny_laion_root, train_set, _epoch(train_set, context))


def test_a_batch_that_mixes_subjects_is_refused_by_name(tiny_laion_root):
    dataset = BetasDataset(
        tiny_laion_root, ["sub-01", "sub-02"], voxels={"roi": "face"}, features=None
    )
    first = int(np.flatnonzero(dataset.items["subject"] == "sub-02")[0])
    with pytest.raises(MixedBatchError, match=r"sub-01 \(\d+ voxels\), sub-02.*dataset.loader"):
        dataset.__getitems__([0, first])


def _split(name: str, part: str, **more) -> dict:
    return {"split": name, "part": part, **more}


def test_selection_by_split_pool_and_stimuli(tiny_laion_root):
    face = {"roi": "face"}
    test = BetasDataset(tiny_laion_root, "sub-01", voxels=face, trials=_split("random_0", "test"))
    train = BetasDataset(tiny_laion_root, "sub-01", voxels=face, trials=_split("random_0", "train"))
    assert not set(test.trials["image_name"]) & set(train.trials["image_name"])
    ood = BetasDataset(
        tiny_laion_root, "sub-02", voxels=face, trials=_split("ood", "test", ood_types="shape")
    )
    assert len(ood) > 0 and all("_OOD_shape_" in n for n in ood.trials["image_name"])
    unique = BetasDataset(
        tiny_laion_root, "sub-02", voxels=face, trials={"stimuli": "unique", "sessions": "ses-02"}
    )
    table = _trial_table(tiny_laion_root, "sub-02", "ses-02")
    assert sorted(unique.trials["trial"]) == sorted(
        table.loc[table["label"].str.startswith("unique_"), "beta_index"]
    )


def test_zscore_and_repeat_averaging_against_numpy(tiny_laion_root):
    subject = "sub-02"
    dataset = BetasDataset(
        tiny_laion_root,
        subject,
        voxels={"roi": "face"},
        features=None,
        read={"zscore": True, "average_repeats": True},
    )
    mask = dataset.voxel_mask()
    zscored, labels = [], []
    for session in ("ses-01", "ses-02"):
        rows = _volumes(tiny_laion_root, subject, session)[mask].T.astype(np.float64)
        zscored.append((rows - rows.mean(0)) / rows.std(0))
        labels += _trial_table(tiny_laion_root, subject, session)["label"].tolist()
    zscored, labels = np.concatenate(zscored), np.asarray(labels)
    assert len(dataset) == len(set(labels))
    batch = collate_items(dataset.__getitems__(np.arange(len(dataset))))
    for k, name in enumerate(batch["image_name"]):
        expected = zscored[labels == name]
        assert int(batch["n_repeats"][k]) == len(expected)
        np.testing.assert_allclose(
            batch["betas"][k].numpy(), expected.mean(0), rtol=1e-5, atol=1e-5
        )


def test_a_store_deleted_under_an_open_dataset_is_named_as_missing(tiny_laion_root, tmp_path):
    import shutil

    from neurotorch.errors import CacheError

    dataset = BetasDataset(
        tiny_laion_root,
        "sub-01",
        voxels={"roi": "face"},
        features=None,
        read={"zscore": True, "cache_dir": tmp_path / "store"},
    )
    shutil.rmtree(tmp_path / "store")
    with pytest.raises(CacheError, match="manifest .* is missing"):  # not "an older version"
        dataset[0]


def test_modalities_and_several_models(tiny_laion_root):
    dataset = BetasDataset(
        tiny_laion_root,
        "sub-01",
        voxels={"roi": "face"},
        features=["CLIP", "DINOv2", "image", "captions", "segmentation"],
        trials=_split("random_0", "test"),
    )
    item = dataset[0]
    name = item["image_name"]
    names = pd.read_csv(tiny_laion_root / layout.stimuli_metadata())["image_name"].tolist()
    with h5py.File(tiny_laion_root / layout.stimuli_images(), "r") as f:
        raw = bytes(f["images"][names.index(name)])
    expected = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(item["image"].numpy(), expected)
    captions = pd.read_csv(tiny_laion_root / layout.captions(), keep_default_na=False)
    rows = captions[captions["image_name"] == name].sort_values("caption_idx")
    assert item["captions"] == rows["caption"].tolist()
    with h5py.File(tiny_laion_root / layout.embeddings("DINOv2"), "r") as f:
        ids = [i.decode() for i in f["image_ids"][()]]
        np.testing.assert_array_equal(
            item["embedding_DINOv2"].numpy(), f["embedding"][ids.index(name)].astype(np.float32)
        )
    seg_meta = pd.read_csv(tiny_laion_root / layout.segmentations_metadata())
    assert item["segmentation"].shape[0] == int((seg_meta["image_name"] == name).sum())
    assert len(item["segmentation_nouns"]) == item["segmentation"].shape[0]


def test_several_subjects_batch_by_subject(tiny_laion_root):
    dataset = BetasDataset(
        tiny_laion_root,
        ["sub-01", "sub-02"],
        voxels={"roi": "face"},
        trials=_split("random_0", "test"),
    )
    assert isinstance(dataset.n_voxels, dict) and len(set(dataset.n_voxels.values())) == 2
    sampler = GroupedBatchSampler.for_dataset(dataset, 16, shuffle=True, seed=1)
    batches = list(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_items))
    assert all(len(set(b["subject"])) == 1 for b in batches)
    _check_batches(tiny_laion_root, dataset, batches)
    groups = dataset.items["subject"].to_numpy()
    ranks = [
        list(
            GroupedBatchSampler(DistributedSampler(dataset, 2, r), 16, groups=groups, shuffle=True)
        )
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1])
    seen = [i for rank in ranks for batch in rank for i in batch]
    assert set(seen) == set(range(len(dataset))) and len(seen) - len(set(seen)) <= 16


def test_load_dataset_builds_both_kinds(tiny_laion_root):
    mapped = neurotorch.load_dataset(
        "laion-fmri", split="tau/train", data_dir=tiny_laion_root, roi="face"
    )
    streamed = neurotorch.load_dataset(
        "laion-fmri", split="tau/train", streaming=True, data_dir=tiny_laion_root, roi="face"
    )
    assert isinstance(mapped, BetasDataset) and len(mapped) == len(streamed.trials) > 0


@pytest.mark.slow
def test_a_plain_dataloader_over_several_subjects_names_what_to_use(tiny_laion_root):
    dataset = neurotorch.load_dataset(
        "laion-fmri", data_dir=tiny_laion_root, subject=["sub-01", "sub-02"], roi="face"
    )
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=2)
    with pytest.raises(MixedBatchError, match=r"dataset\.loader\(batch_size=32"):
        next(iter(loader))


@pytest.mark.slow
def test_the_plain_pytorch_recipe_for_several_subjects(tiny_laion_root):
    """The recipe of docs/data.md: one subject per batch, every trial once per epoch, a new
    order every epoch with nobody calling set_epoch."""
    dataset = neurotorch.load_dataset(
        "laion-fmri", data_dir=tiny_laion_root, subject=["sub-01", "sub-02"], roi="face"
    )
    loader = DataLoader(
        dataset,
        batch_sampler=dataset.batch_sampler(32, shuffle=True),
        collate_fn=collate_items,
        num_workers=2,
        persistent_workers=True,
    )
    epochs = [list(loader) for _ in range(2)]
    for batches in epochs:
        assert all(len(set(b["subject"])) == 1 for b in batches)
        _check_batches(tiny_laion_root, dataset, batches)
    assert [b["index"].tolist() for b in epochs[0]] != [b["index"].tolist() for b in epochs[1]]
