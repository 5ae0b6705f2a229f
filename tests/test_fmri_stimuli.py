"""The stimulus hub and the per-trial namespaces against independent h5py / pandas reads."""

from __future__ import annotations

import io
import multiprocessing
import pickle
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from neurotorch.errors import FormatError, ParameterError, StimuliNotDownloadedError
from neurotorch.fmri import load_stimuli, load_subject
from neurotorch.fmri.stimuli import decode_image, read_rows

STIM = "stimuli"


@pytest.fixture(scope="module")
def root(tiny_laion_root: Path) -> Path:
    return tiny_laion_root


@pytest.fixture(scope="module")
def stim(root: Path):
    return load_stimuli(root)


@pytest.fixture(scope="module")
def table(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / STIM / "task-images_metadata.csv")


@pytest.fixture(scope="module")
def trials(root: Path) -> pd.DataFrame:
    """sub-01's trials across sessions, in session then file order (the global trial index)."""
    folder = root / "derivatives/glmsingle-tedana/sub-01"
    tables = [pd.read_csv(p, sep="\t") for p in sorted(folder.glob("ses-*/func/*_trials.tsv"))]
    return pd.concat(tables, ignore_index=True)


def h5_rows(path: Path, names, key: str = "embedding") -> np.ndarray:
    with h5py.File(path, "r") as f:
        ids = [i.decode() if isinstance(i, bytes) else i for i in f["image_ids"][()]]
        data = f[key][()]
    return np.stack([data[ids.index(n)] for n in names])


def raw_image(root: Path, table: pd.DataFrame, name: str) -> bytes:
    row = int(np.flatnonzero(table["image_name"] == name)[0])
    with h5py.File(root / STIM / "task-images_stimuli.h5", "r") as f:
        return f["images"][row].tobytes()


# -- the hub, keyed by image name ----------------------------------------------------------------


def test_images_by_name(stim, root, table):
    names = table["image_name"].tolist()
    assert stim.images.names() == names and len(stim.images) == len(names)
    png = next(n for n in names if n.endswith(".png"))
    for name in (names[0], png):
        raw = raw_image(root, table, name)
        assert stim.images[name] == raw
        got = np.asarray(stim.images.get(name))
        np.testing.assert_array_equal(got, np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))
    picked = [names[5], names[1], names[5]]
    assert stim.images[picked] == [raw_image(root, table, n) for n in picked]
    iterated = dict(stim.images)
    assert list(iterated) == names and iterated[names[-1]] == raw_image(root, table, names[-1])
    # laion_fmri's positional access: an int is a row of the metadata table
    assert stim.images[7] == raw_image(root, table, names[7])
    assert stim.images.index_of(names[7]) == 7
    assert names[7] in stim.images and 7 in stim.images and len(names) not in stim.images
    for outside in (len(names), -1):  # laion_fmri: rows 0 <= i < n only
        with pytest.raises(IndexError, match="out of range"):
            stim.images[outside]
        assert outside not in stim.images
    with pytest.raises(ParameterError, match="name or a row number, got True"):
        stim.images[True]  # not row 1
    with pytest.raises(KeyError, match="not_an_image"):
        stim.images.index_of("not_an_image.jpg")
    pd.testing.assert_frame_equal(stim.images.metadata, table)  # blank participant: NaN
    assert table["participant"].isna().sum() == (table["unique_or_shared"] == "shared").sum()


def test_display_composites_transparency_on_grey():
    pixels = np.zeros((1, 3, 4), dtype=np.uint8)
    pixels[0, 1] = (255, 0, 0, 255)
    pixels[0, 2] = (255, 0, 0, 128)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, format="PNG")
    shown = decode_image(buffer.getvalue())
    assert shown.mode == "RGB"
    assert shown.getpixel((0, 0)) == (128, 128, 128) and shown.getpixel((1, 0)) == (255, 0, 0)
    a = 128 / 255
    want = np.array([255 * a + 128 * (1 - a), 128 * (1 - a), 128 * (1 - a)])
    assert np.abs(np.asarray(shown.getpixel((2, 0))) - want).max() <= 1
    assert decode_image(buffer.getvalue(), as_displayed=False).mode == "RGBA"


def test_embeddings_by_name(stim, root, table):
    assert stim.embeddings.models == ["CLIP", "DINOv2", "PEcore", "SigLIP2"]
    rng = np.random.default_rng(1)
    names = list(rng.choice(table["image_name"], size=12, replace=True))
    for model in ("CLIP", "SigLIP2"):
        path = root / STIM / f"task-images_desc-{model}_embeddings.h5"
        got = stim.embeddings.get(model, names)
        np.testing.assert_array_equal(got, h5_rows(path, names))
        assert got.dtype == np.float16
        np.testing.assert_array_equal(
            stim.embeddings.get(model, names[0]), h5_rows(path, names[:1])[0]
        )
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(stim.embeddings[model], f["embedding"][()])
    assert stim.embeddings.get("CLIP", names, dtype=np.float32).dtype == np.float32
    with pytest.raises(KeyError, match="not_an_image"):
        stim.embeddings.get("CLIP", ["not_an_image.jpg"])
    for error in (KeyError, ValueError):  # laion_fmri: KeyError; any unknown option: ValueError
        with pytest.raises(error, match="CLIP"):
            stim.embeddings.get("ResNet", names[0])


def test_embeddings_length_and_membership_as_laion_fmri(stim, root, table):
    """laion_fmri: len() counts the images, ``model in`` / ``(model, name) in`` ask the files."""
    with h5py.File(root / STIM / "task-images_desc-DINOv2_embeddings.h5", "r") as f:
        n_rows = len(f["image_ids"])
    assert len(stim.embeddings) == n_rows == len(table)
    assert "CLIP" in stim.embeddings and "ResNet" not in stim.embeddings
    name = table["image_name"].iloc[3]
    assert ("CLIP", name) in stim.embeddings
    assert ("CLIP", "not_an_image.jpg") not in stim.embeddings
    assert ("ResNet", name) not in stim.embeddings and 3 not in stim.embeddings


def test_load_embeddings_covers_the_models_asked_for(root, table):
    from neurotorch.errors import UnknownModelError
    from neurotorch.fmri import load_embeddings

    names = table["image_name"].tolist()[:5]
    every = load_embeddings(data_dir=root)
    assert every.models == ["CLIP", "DINOv2", "PEcore", "SigLIP2"]
    clip = load_embeddings("CLIP", data_dir=root)  # a string is one model
    assert clip.models == ["CLIP"] and "DINOv2" not in clip
    path = root / STIM / "task-images_desc-CLIP_embeddings.h5"
    np.testing.assert_array_equal(clip.get("CLIP", names), h5_rows(path, names))
    with pytest.raises(KeyError, match="DINOv2"):
        clip.get("DINOv2", names)
    with pytest.raises(UnknownModelError, match="ResNet"):
        load_embeddings(["CLIP", "ResNet"], data_dir=root)


def test_load_embeddings_names_a_missing_file(root, tmp_path):
    import shutil

    from neurotorch.fmri import load_embeddings

    copy = Path(shutil.copytree(root, tmp_path / "tree"))
    (copy / STIM / "task-images_desc-PEcore_embeddings.h5").unlink()
    with pytest.raises(FileNotFoundError, match="PEcore"):  # laion_fmri's class
        load_embeddings(data_dir=copy)
    assert load_embeddings(["CLIP"], data_dir=copy).models == ["CLIP"]


@pytest.mark.parametrize(
    "rows",
    [[3, 1, 3, 0], [40, 2, 90, 2, 7], list(range(20, 0, -1)), []],
    ids=["dense", "sparse", "reversed", "empty"],
)
def test_read_rows_restores_caller_order(tmp_path, rows):
    data = np.arange(100 * 3).reshape(100, 3)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"] = data
    with h5py.File(tmp_path / "d.h5", "r") as f:
        np.testing.assert_array_equal(read_rows(f["x"], np.array(rows, dtype=int)), data[rows])


def test_segmentations_by_name(stim, root, table):
    path = root / STIM / "task-images_desc-segmentations_metadata.csv"
    seg = pd.read_csv(path)
    assert len(stim.segmentations) == len(seg) and stim.segmentations.metadata.equals(seg)
    # the real table's counting: instance_id numbers the masks of one noun, best score first
    for _, group in seg.groupby(["image_name", "noun"]):
        ordered = group.sort_values("instance_id")
        assert ordered["instance_id"].tolist() == list(range(len(group)))
        assert ordered["score"].is_monotonic_decreasing
    not_localized = seg.loc[seg["localized"] == 0, "image_name"]
    shared = not_localized.iloc[0]  # an image with a localized and a non-localized noun
    rows = seg[seg["image_name"] == shared]
    assert stim.segmentations.has_image(shared)
    # nouns: first appearance in the file; localized_only (default) drops localized == 0 rows
    first_seen = list(dict.fromkeys(rows["noun"]))
    localized = list(dict.fromkeys(rows.loc[rows["localized"] == 1, "noun"]))
    assert localized != first_seen
    assert stim.segmentations.nouns(shared) == localized
    assert stim.segmentations.nouns(shared, localized_only=False) == first_seen
    name = seg["image_name"].value_counts().index[0]  # the image with the most masks
    with h5py.File(root / STIM / "task-images_desc-segmentations.h5", "r") as f:
        for _, row in seg[seg["image_name"] == name].iterrows():
            want = f["masks"][int(row["mask_row"])]
            got = stim.segmentations.get(name, row["noun"], instance=int(row["instance_id"]))
            np.testing.assert_array_equal(got, want)
    noun = seg.loc[seg["image_name"] == name, "noun"].iloc[-1]
    pd.testing.assert_frame_equal(stim.segmentations.for_image(shared), rows.reset_index(drop=True))
    with pytest.raises(KeyError, match="nouns"):
        stim.segmentations.get(shared, "no_such_noun")
    with pytest.raises(KeyError, match="instance=9"):
        stim.segmentations.get(name, noun, instance=9)
    unique = table.loc[table["unique_or_shared"] == "unique", "image_name"].iloc[0]
    assert not stim.segmentations.has_image(unique)
    assert stim.segmentations.nouns(unique) == []
    with pytest.raises(KeyError, match="shared images only"):
        stim.segmentations.get(unique, noun)
    assert stim.segmentations.for_image(unique).empty
    assert stim.segmentations.images() == sorted(set(seg["image_name"]))  # laion_fmri: sorted


def test_segmentation_metadata_of_the_documented_columns_only(root, tmp_path):
    """The metadata as the dataset documents it (no ``localized`` column) is read: every row then
    counts as localised, and masks are found by name and noun."""
    import shutil

    copy = shutil.copytree(root, tmp_path / "tree")
    path = copy / STIM / "task-images_desc-segmentations_metadata.csv"
    seg = pd.read_csv(path).drop(columns="localized")
    seg.to_csv(path, index=False)
    stim = load_stimuli(copy)
    name = seg["image_name"].iloc[0]
    rows = seg[seg["image_name"] == name]
    assert stim.segmentations.nouns(name) == list(dict.fromkeys(rows["noun"]))
    with h5py.File(copy / STIM / "task-images_desc-segmentations.h5", "r") as f:
        want = f["masks"][int(rows["mask_row"].iloc[0])]
    np.testing.assert_array_equal(stim.segmentations.get(name, rows["noun"].iloc[0]), want)


def test_segmentations_by_mask_row_as_laion_fmri(stim, root):
    """laion_fmri: ``segmentations[row]`` is row ``row`` of the masks file (negative from the
    end, like h5py); ``name in segmentations`` raises there (it compares masks with the name)."""
    with h5py.File(root / STIM / "task-images_desc-segmentations.h5", "r") as f:
        masks = f["masks"][()]
    for row in (0, 5, len(masks) - 1, -1):
        np.testing.assert_array_equal(stim.segmentations[row], masks[row])
    with pytest.raises(IndexError, match="out of range"):
        stim.segmentations[len(masks)]
    name = stim.segmentations.images()[0]
    with pytest.raises(ValueError, match="has_image"):
        name in stim.segmentations  # noqa: B015 - the membership test itself must raise


def test_captions_by_name(stim, root, table):
    captions = pd.read_csv(root / STIM / "task-images_desc-captions.csv", keep_default_na=False)
    assert len(stim.captions) == len(captions)
    for kind, n_human in (("shared", 5), ("unique", 3)):
        name = table.loc[table["unique_or_shared"] == kind, "image_name"].iloc[0]
        assert name in stim.captions
        rows = captions[captions["image_name"] == name].sort_values("caption_idx")
        human = rows.loc[rows["source"] == "human", "caption"].tolist()
        assert stim.captions.human(name) == human and len(human) == n_human
        assert stim.captions.human(name, limit=2) == human[:2]
        assert stim.captions.list(name, source="human") == human
        assert stim.captions.list(name) == rows["caption"].tolist()
        assert (
            stim.captions.list(name, source="ai")
            == rows.loc[rows["source"] == "ai", "caption"].tolist()
        )
        assert stim.captions.ai(name) == rows.loc[rows["caption_idx"] == 0, "caption"].iloc[0]
        pd.testing.assert_frame_equal(stim.captions.get(name), rows.reset_index(drop=True))
    with pytest.raises(ValueError, match="source"):
        stim.captions.list(name, source="robot")
    assert "not_an_image.jpg" not in stim.captions
    assert stim.captions.get("not_an_image.jpg").empty
    assert stim.captions.images() == sorted(set(captions["image_name"]))  # laion_fmri: sorted


# -- per-trial namespaces -------------------------------------------------------------------------


def test_trial_namespaces_align_with_trials(root, trials, table):
    sub = load_subject("sub-01", root)
    labels = trials["label"].tolist()
    clip = root / STIM / "task-images_desc-CLIP_embeddings.h5"
    np.testing.assert_array_equal(sub.embeddings.all("CLIP"), h5_rows(clip, labels))
    n_first = len(sub.get_trial_info("ses-01"))
    np.testing.assert_array_equal(
        sub.embeddings.all("CLIP", session="ses-02"), h5_rows(clip, labels[n_first:])
    )
    assert len(sub.embeddings.all("CLIP")) == sum(
        len(b) for b in sub.get_betas(sub.get_sessions(), roi="FFA1").values()
    )
    np.testing.assert_array_equal(
        sub.embeddings.get("DINOv2", 7),
        h5_rows(root / STIM / "task-images_desc-DINOv2_embeddings.h5", [labels[7]])[0],
    )

    assert sub.images[4] == raw_image(root, table, labels[4])
    np.testing.assert_array_equal(
        np.asarray(sub.images.get(4)),
        np.asarray(Image.open(io.BytesIO(sub.images[4])).convert("RGB")),
    )
    stack = sub.images.array(session="ses-01")
    assert stack.shape[0] == n_first and stack.dtype == np.uint8 and stack.shape[3] == 3
    np.testing.assert_array_equal(stack[9], np.asarray(sub.images.get(9)))
    assert sum(1 for _ in sub.images.all(session="ses-02")) == len(labels) - n_first
    with pytest.raises(IndexError):
        sub.images[len(labels)]

    captions = pd.read_csv(root / STIM / "task-images_desc-captions.csv").sort_values(
        ["image_name", "caption_idx"]
    )
    assert (
        sub.captions.list(2)
        == captions.loc[captions["image_name"] == labels[2], "caption"].tolist()
    )
    assert sub.captions.human(2) == load_stimuli(root).captions.human(labels[2])
    assert sub.captions.human(2, limit=1) == sub.captions.human(2)[:1]
    assert sub.captions.list(2, source="ai") == sub.captions.list(2)[:1]
    pd.testing.assert_frame_equal(
        sub.captions.for_image(2),
        captions[captions["image_name"] == labels[2]].reset_index(drop=True),
    )

    seg_names = set(
        pd.read_csv(root / STIM / "task-images_desc-segmentations_metadata.csv")["image_name"]
    )
    covered = [i for i, name in enumerate(labels) if name in seg_names]
    uncovered = [i for i, name in enumerate(labels) if name not in seg_names]
    assert [sub.segmentations.has_image(i) for i in range(len(labels))] == [
        n in seg_names for n in labels
    ]
    assert sub.segmentations.nouns(uncovered[0]) == []
    assert sub.segmentations.for_image(uncovered[0]).empty
    with pytest.raises(KeyError):
        sub.segmentations.get(uncovered[0], "tree")
    noun = sub.segmentations.nouns(covered[0])[0]
    assert (
        sub.segmentations.get(covered[0], noun).shape
        == Image.open(io.BytesIO(sub.images[covered[0]])).size[::-1]
    )


# -- processes, pickling, missing files ----------------------------------------------------------


def _child_read(hub, name, queue):
    queue.put(hub.embeddings.get("CLIP", name))


def test_handles_reopen_per_process_and_pickle(stim, root, table):
    name = table["image_name"].iloc[3]
    want = h5_rows(root / STIM / "task-images_desc-CLIP_embeddings.h5", [name])[0]
    np.testing.assert_array_equal(stim.embeddings.get("CLIP", name), want)  # opens in this process
    clone = pickle.loads(pickle.dumps(stim))
    assert all(h5._file is None for h5 in clone.embeddings._files.values())
    np.testing.assert_array_equal(clone.embeddings.get("CLIP", name), want)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_read, args=(stim, name, queue))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        stim.embeddings.get("CLIP", name), want
    )  # parent handle still fine


def test_missing_and_malformed_files(tmp_path):
    hub = load_stimuli(tmp_path)
    with pytest.raises(StimuliNotDownloadedError, match="task-images_metadata.csv") as info:
        _ = hub.metadata
    assert "neurotorch download laion-fmri --out DIR --include-stimuli" in str(info.value)
    with pytest.raises(StimuliNotDownloadedError, match="CLIP"):
        hub.embeddings.get("CLIP", "x.jpg")
    assert hub.embeddings.models == []
    (tmp_path / STIM).mkdir()
    pd.DataFrame({"image_name": ["a.jpg"]}).to_csv(
        tmp_path / STIM / "task-images_metadata.csv", index=False
    )
    with pytest.raises(FormatError, match="unique_or_shared"):
        _ = load_stimuli(tmp_path).metadata
