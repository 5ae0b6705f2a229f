"""The dataset-wide stimulus hub, keyed by image name: images, embeddings, segmentations, captions.

``load_stimuli()`` returns a `Stimuli` object with four namespaces, as in laion_fmri::

    stim = load_stimuli()
    stim.images.get("shared_12rep_LAION_cluster_1003_i0.jpg")       # PIL image
    stim.embeddings.get("CLIP", names)                               # (n, 1024) float16
    stim.segmentations.nouns(name); stim.captions.human(name)

HDF5 files are opened on first use in each process (the handle is dropped when the object is
pickled or used after a fork), so a `Stimuli` can be handed to DataLoader workers. Lookups of many
names read the needed rows in sorted order (HDF5 fancy indexing needs increasing indices) and
return them in the caller's order.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from typing import Any, cast

import h5py
import numpy as np
import pandas as pd

from neurotorch._docs import fill_doc
from neurotorch._options import as_names, check_int, check_option
from neurotorch.errors import (
    CorruptFileError,
    FormatError,
    NameNotFoundError,
    NeurotorchError,
    ParameterError,
)
from neurotorch.fmri import layout
from neurotorch.fmri.datafiles import read_table, require, resolve_root
from neurotorch.io.storage import DataRoot

DISPLAY_BACKGROUND = (128, 128, 128)
CAPTION_SOURCES = ("human", "ai")
ITER_CHUNK = 64

Names = str | Sequence[str] | np.ndarray


class LazyH5:
    """An HDF5 file of the dataset, opened read-only on first use in each process.

    Every read goes through `read` / `read_rows`, so that what h5py raises on a damaged file (a
    truncated file, a damaged object header, attribute or chunk) becomes a `CorruptFileError`
    naming it.
    """

    def __init__(self, root: DataRoot, relpath: str, what: str):
        self.root = root
        self.relpath = relpath
        self.what = what
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def exists(self) -> bool:
        return self.root.exists(self.relpath)

    @contextlib.contextmanager
    def _damage_named(self) -> Iterator[None]:
        try:
            yield
        except NeurotorchError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise CorruptFileError(
                f"{self.root.path(self.relpath)} cannot be read ({type(exc).__name__}: {exc}); "
                "the HDF5 file is truncated or damaged, download it again."
            ) from exc

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            require(self.root, self.relpath, self.what, stimuli=True)
            with self._damage_named():
                self._file = h5py.File(self.root.local_path(self.relpath), "r")
            self._pid = os.getpid()
        return self._file

    def dataset(self, key: str) -> h5py.Dataset:
        """The dataset ``key``; `FormatError` if the file has none of that name."""
        with self._damage_named():
            if key not in self.file:
                raise FormatError(
                    f"{self.root.path(self.relpath)} has no dataset {key!r} (found "
                    f"{list(self.file)}); re-download the file."
                )
            found = self.file[key]
            if not isinstance(found, h5py.Dataset):  # a damaged object header reads as another type
                raise CorruptFileError(
                    f"{self.root.path(self.relpath)}: {key!r} is a {type(found).__name__}, not a "
                    "dataset; the file is damaged, download it again."
                )
            return found

    def read(self, key: str, index: Any = ()) -> np.ndarray:
        """``dataset[index]`` of the dataset ``key``."""
        dataset = self.dataset(key)
        with self._damage_named():
            return dataset[index]

    def read_text(self, key: str) -> np.ndarray:
        """Every element of the string dataset ``key``, decoded."""
        dataset = self.dataset(key)
        with self._damage_named():
            return dataset.asstr()[()]

    def read_rows(self, key: str, rows: np.ndarray) -> np.ndarray:
        """`read_rows` of the dataset ``key``."""
        dataset = self.dataset(key)
        with self._damage_named():
            return read_rows(dataset, rows)

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None


def read_rows(dataset: h5py.Dataset | np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``dataset[rows]`` for any row order and repeats, with one sorted read.

    Dense requests read the covering slice (one contiguous read), sparse ones use HDF5 fancy
    indexing on the sorted unique rows; the result is restored to the order of ``rows``.
    """
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if rows.size == 0:
        return np.asarray(dataset[0:0])
    unique, inverse = np.unique(rows, return_inverse=True)
    first, last = int(unique[0]), int(unique[-1])
    if last - first + 1 <= 4 * unique.size:
        block = np.asarray(dataset[first : last + 1])[unique - first]
    else:
        block = np.asarray(dataset[unique])
    return block[inverse]


def _as_list(names: Names) -> tuple[list[str], bool]:
    """(names as a list, whether a single name was given)."""
    if isinstance(names, str):
        return [names], True
    return [str(n) for n in names], False


def unique_index(names: Sequence[str], where: str) -> dict[str, int]:
    """Name → position; `FormatError` naming ``where`` if a name occurs twice."""
    index = {name: row for row, name in enumerate(names)}
    if len(index) != len(names):
        listed = pd.Series(list(names))
        repeated = sorted(set(listed[listed.duplicated()]))
        raise FormatError(
            f"{where} lists {len(names) - len(index)} image name(s) more than once "
            f"(e.g. {repeated[:3]}), so rows cannot be matched by name; re-download the file."
        )
    return index


def _rows_of(names: list[str], index: dict[str, int], what: str) -> np.ndarray:
    try:
        return np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
    except KeyError as err:
        raise NameNotFoundError(f"Image {err.args[0]!r} is not in the {what}.") from None


def decode_image(raw: bytes, as_displayed: bool = True):
    """Decode encoded image bytes to a PIL image.

    ``as_displayed=True`` gives the RGB image the subject saw: transparency is composited onto
    the mid-grey (128, 128, 128) screen background. ``False`` keeps the stored mode (e.g. RGBA).
    """
    from PIL import Image

    image = Image.open(io.BytesIO(raw))
    image.load()
    if not as_displayed:
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        background = Image.new("RGBA", image.size, (*DISPLAY_BACKGROUND, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _to_bytes(item: Any) -> bytes:
    return item.tobytes() if isinstance(item, np.ndarray) else bytes(item)


class StimulusImages:
    """Encoded stimulus images (``task-images_stimuli.h5``, rows in metadata order)."""

    def __init__(self, hub: Stimuli):
        self._hub = hub
        self._h5 = LazyH5(hub.root, layout.stimuli_images(), "Stimulus images")
        self._checked = False

    def _check(self) -> None:
        """Once: the images file holds one image per metadata row."""
        if self._checked:
            return
        n_images = self._h5.dataset("images").shape[0]
        if n_images != len(self._hub.metadata):
            raise FormatError(
                f"{self._h5.root.path(self._h5.relpath)} holds {n_images} images but "
                f"the stimulus metadata has {len(self._hub.metadata)} rows; they must match."
            )
        self._checked = True

    @property
    def metadata(self) -> pd.DataFrame:
        """The stimulus metadata; row ``i`` describes image ``i`` of the file."""
        return self._hub.metadata

    def names(self) -> list[str]:
        """Every image name, in metadata (= file) order."""
        return self._hub.metadata["image_name"].tolist()

    def __len__(self) -> int:
        return len(self._hub.metadata)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is an image name of the set, or a row number ``0 <= key < len``."""
        if isinstance(key, int | np.integer) and not isinstance(key, bool):
            return bool(0 <= key < len(self))
        return key in self._hub.row_index

    def index_of(self, name: str) -> int:
        """Row of ``name`` in the metadata and the images file; `NameNotFoundError` if absent."""
        return int(self._hub.rows([name])[0])

    def read(self, names: Sequence[str]) -> list[bytes]:
        """Encoded bytes of several images, in the order of ``names``."""
        rows = self._hub.rows(list(names))
        self._check()
        return [_to_bytes(item) for item in self._h5.read_rows("images", rows)]

    def __getitem__(self, key: int | Names) -> bytes | list[bytes]:
        """Encoded (JPEG/PNG) bytes of one image (by name, or by metadata row ``0 <= key < len``
        for an int; a negative row raises `IndexError`, as in laion_fmri), or a list for a list
        of names."""
        if isinstance(key, bool):
            raise ParameterError(f"An image key is a name or a row number, got {key!r}.")
        if isinstance(key, int | np.integer):
            n_images = len(self)
            if not 0 <= key < n_images:
                raise IndexError(
                    f"Image row {key} is out of range [0, {n_images}): rows are counted from 0 "
                    "(use images.names() or index_of(name) to find one)."
                )
            self._check()
            return _to_bytes(self._h5.read("images", int(key)))
        listed, single = _as_list(key)
        raw = self.read(listed)
        return raw[0] if single else raw

    def get(self, names: Names, as_displayed: bool = True):
        """PIL image of one name (a list of images for a list of names); see `decode_image`."""
        listed, single = _as_list(names)
        images = [
            self._decode(name, raw, as_displayed)
            for name, raw in zip(listed, self.read(listed), strict=True)
        ]
        return images[0] if single else images

    def _decode(self, name: str, raw: bytes, as_displayed: bool):
        try:
            return decode_image(raw, as_displayed)
        except (OSError, ValueError) as exc:  # PIL: unidentified, truncated or damaged data
            raise CorruptFileError(
                f"Image {name!r} in {self._h5.root.path(self._h5.relpath)} cannot be decoded "
                f"({exc}); the file is damaged, download it again."
            ) from exc

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        """``(name, encoded bytes)`` for every image, in file order."""
        names = self.names()
        self._check()
        for start in range(0, len(names), ITER_CHUNK):
            block = self._h5.read("images", slice(start, start + ITER_CHUNK))
            for offset, item in enumerate(block):
                yield names[start + offset], _to_bytes(item)

    def close(self) -> None:
        self._h5.close()


class StimulusEmbeddings:
    """Pretrained image embeddings (CLIP, DINOv2, PEcore, SigLIP2), one HDF5 file per model.

    Rows are found through each file's ``image_ids``; values keep the stored dtype (float16)
    unless ``dtype`` is given. ``len()`` is the number of images (rows of the first model's file),
    ``"CLIP" in emb`` whether the model is covered and ``("CLIP", name) in emb`` whether the image
    has a row, as in laion_fmri.

    Parameters
    ----------
    hub
        The stimulus hub whose root holds the files.
    models
        The models this reader covers (`load_embeddings`); None: every model whose file is present.
    """

    def __init__(self, hub: Stimuli, models: Sequence[str] | None = None):
        self._root = hub.root
        self._chosen = None if models is None else list(models)
        self._files = {
            model: LazyH5(hub.root, layout.embeddings(model), f"{model} embeddings")
            for model in layout.EMBEDDING_MODELS
        }
        self._index: dict[str, dict[str, int]] = {}

    @property
    def models(self) -> list[str]:
        """Models this reader covers: those given to `load_embeddings`, else those whose embedding
        file is present."""
        if self._chosen is not None:
            return list(self._chosen)
        return [model for model, h5 in self._files.items() if h5.exists()]

    def _file(self, model: str) -> LazyH5:
        layout.embeddings(model)  # an unknown model raises UnknownModelError naming the known ones
        if self._chosen is not None and model not in self._chosen:
            raise NameNotFoundError(
                f"Model {model!r} is not loaded by this reader (it covers {self._chosen}); "
                "load_embeddings(models=...) chooses them."
            )
        return self._files[model]

    def image_ids(self, model: str) -> list[str]:
        """Image names of the rows of ``model``'s embedding matrix."""
        return [str(i) for i in self._file(model).read_text("image_ids")]

    def __len__(self) -> int:
        """Number of images (rows of the embedding files; they share one order)."""
        models = self.models
        return len(self.image_ids(models[0])) if models else 0

    def __contains__(self, item: object) -> bool:
        """``model in emb``: a covered model; ``(model, name) in emb``: the image has a row."""
        if isinstance(item, str):
            return item in self.models
        if isinstance(item, tuple) and len(item) == 2 and item[0] in self.models:
            model, name = item
            return not self.missing(model, [name])
        return False

    def missing(self, model: str, names: Sequence[str]) -> list[str]:
        """The ``names`` that have no row in ``model``'s embedding file, in the order given."""
        self._rows(model, [])
        return [name for name in names if name not in self._index[model]]

    def _rows(self, model: str, names: list[str]) -> np.ndarray:
        if model not in self._index:
            where = self._root.path(layout.embeddings(model))
            self._index[model] = unique_index(self.image_ids(model), where)
        return _rows_of(names, self._index[model], f"{model} embedding file")

    def __getitem__(self, model: str) -> np.ndarray:
        """The whole ``(n_images, D)`` matrix of ``model`` in file order."""
        return self._file(model).read("embedding")

    def get(self, model: str, names: Names, dtype: np.dtype | type | None = None) -> np.ndarray:
        """``(D,)`` vector of one name or ``(n, D)`` rows for a list, in the caller's order."""
        listed, single = _as_list(names)
        values = self._file(model).read_rows("embedding", self._rows(model, listed))
        if dtype is not None:
            values = values.astype(dtype, copy=False)
        return values[0] if single else values

    def valid(self, model: str, names: Names) -> np.ndarray | bool:
        """Whether the stored vector of each name is a valid embedding (the file's ``valid``)."""
        listed, single = _as_list(names)
        flags = self._file(model).read_rows("valid", self._rows(model, listed)).astype(bool)
        return bool(flags[0]) if single else flags

    def close(self) -> None:
        for h5 in self._files.values():
            h5.close()


class _GroupedTable:
    """A CSV of the stimulus folder, read once, with its row positions grouped by image name.

    Rows of one image keep the file's order unless ``sort_by`` names a column to order them by.
    """

    def __init__(
        self,
        root: DataRoot,
        relpath: str,
        what: str,
        columns: Sequence[str],
        sort_by: str | None = None,
        **read_kwargs: Any,
    ):
        self._root, self._relpath, self._what = root, relpath, what
        self._columns, self._sort_by, self._read_kwargs = tuple(columns), sort_by, read_kwargs
        self._table: pd.DataFrame | None = None
        self._groups: dict[str, np.ndarray] = {}

    @property
    def table(self) -> pd.DataFrame:
        if self._table is None:
            table = read_table(
                self._root,
                self._relpath,
                self._what,
                columns=self._columns,
                stimuli=True,
                **self._read_kwargs,
            )
            self._table = table
            groups = cast(dict[str, np.ndarray], table.groupby("image_name", sort=False).indices)
            order = self._sort_by
            self._groups = {
                name: np.asarray(rows)[
                    np.argsort(table[order].to_numpy()[rows], kind="stable")
                    if order
                    else slice(None)
                ]
                for name, rows in groups.items()
            }
        return self._table

    def rows_for(self, name: str) -> pd.DataFrame:
        """The rows of ``name`` (none for an unknown name), indexed 0…k-1."""
        table = self.table
        rows = self._groups.get(name)
        selected = table.iloc[rows] if rows is not None else table.iloc[0:0]
        return selected.reset_index(drop=True)

    def images(self) -> list[str]:
        """Image names with at least one row, sorted (as laion_fmri lists them)."""
        _ = self.table
        return sorted(self._groups)

    def has(self, name: object) -> bool:
        _ = self.table
        return name in self._groups


class _TableNamespace:
    """What the caption and segmentation namespaces share: their table (``metadata``, one row per
    caption or mask, in file order), its length, and the images it names."""

    _meta: _GroupedTable

    @property
    def metadata(self) -> pd.DataFrame:
        return self._meta.table

    def __len__(self) -> int:
        return len(self._meta.table)

    def __contains__(self, name: object) -> bool:
        return self._meta.has(name)

    def images(self) -> list[str]:
        """Names of the images with at least one row, sorted by name (as in laion_fmri)."""
        return self._meta.images()


class StimulusSegmentations(_TableNamespace):
    """Object masks of the shared images (``task-images_desc-segmentations.h5`` + metadata CSV).

    The metadata has one row per mask: ``instance_id`` numbers the masks of one noun in one image
    (0 = the highest-scored detection) and ``localized`` is 1 where the detector gave a box and
    the mask covers less than 99 % of the image. Images without masks (every unique image) give
    empty results from `nouns` and `for_image`; `get` raises `NameNotFoundError` for them.
    """

    def __init__(self, hub: Stimuli):
        self._h5 = LazyH5(hub.root, layout.segmentations(), "Segmentation masks")
        self._meta = _GroupedTable(
            hub.root,
            layout.segmentations_metadata(),
            "Segmentation metadata",
            columns=layout.SEGMENTATION_COLUMNS,
            dtype={"image_name": str, "noun": str},
        )

    def has_image(self, name: str) -> bool:
        """Whether any mask exists for ``name``."""
        return self._meta.has(name)

    def __getitem__(self, mask_row: int) -> np.ndarray:
        """The ``(H, W)`` uint8 mask in row ``mask_row`` of the masks file (the metadata's
        ``mask_row``; negative rows count from the end, as h5py and laion_fmri do)."""
        row = check_int("mask_row", mask_row)
        n_masks = self._h5.dataset("masks").shape[0]
        if not -n_masks <= row < n_masks:
            raise IndexError(f"Mask row {row} is out of range; the file holds {n_masks} masks.")
        return np.asarray(self._h5.read("masks", row))

    def __contains__(self, name: object) -> bool:
        """Refused, as in laion_fmri (whose ``in`` compares masks with the name and raises): the
        namespace is indexed by mask row. Use `has_image`."""
        raise ParameterError(
            f"'{name!r} in segmentations' is ambiguous: the segmentations are indexed by mask "
            "row; use segmentations.has_image(name) to ask whether an image has masks."
        )

    def for_image(self, name: str) -> pd.DataFrame:
        """Metadata rows of ``name`` (indexed 0…k-1, in file order); empty if it has no masks."""
        return self._meta.rows_for(name)

    def nouns(self, name: str, localized_only: bool = True) -> list[str]:
        """Distinct nouns segmented in ``name``, in order of first appearance; ``[]`` without masks.

        ``localized_only`` drops the rows whose ``localized`` flag is 0 (the noun is present but
        its mask is not localised), where the metadata has that column (it is optional: without
        it every row counts as localised).
        """
        rows = self._meta.rows_for(name)
        if localized_only and "localized" in rows:
            rows = rows[rows["localized"].astype(int) == 1]
        return list(dict.fromkeys(rows["noun"]))

    def get(self, name: str, noun: str, instance: int | None = 0) -> np.ndarray:
        """Mask of ``(name, noun, instance_id)``, ``(H, W)`` uint8.

        ``instance`` is the ``instance_id`` (0 = highest-scored detection of that noun);
        ``instance=None`` gives every mask of the noun, ``(k, H, W)`` in ``instance_id`` order.

        Raises
        ------
        NameNotFoundError
            The image has no masks (every unique image), or no such noun or instance (a
            ``KeyError``, as laion_fmri raises).
        """
        rows = self._meta.rows_for(name)
        if rows.empty:
            raise NameNotFoundError(
                f"No segmentation masks for image {name!r}: masks exist for the shared images "
                "only (see segmentations.images())."
            )
        matches = rows[rows["noun"] == noun].sort_values("instance_id", kind="stable")
        if instance is not None:
            matches = matches[matches["instance_id"].astype(int) == instance]
        if matches.empty:
            raise NameNotFoundError(
                f"No mask for noun={noun!r} instance={instance} in image {name!r}; its nouns: "
                f"{self.nouns(name, localized_only=False)}, instance_ids: "
                f"{sorted(rows.loc[rows['noun'] == noun, 'instance_id'].astype(int))}."
            )
        mask_rows = matches["mask_row"].to_numpy(dtype=np.int64)
        if instance is None:
            return self._h5.read_rows("masks", mask_rows)
        return np.asarray(self._h5.read("masks", int(mask_rows[0])))

    def close(self) -> None:
        self._h5.close()


class StimulusCaptions(_TableNamespace):
    """Captions (long-form CSV): ``caption_idx`` 0 is the AI caption, 1.. are human captions."""

    def __init__(self, hub: Stimuli):
        self._meta = _GroupedTable(
            hub.root,
            layout.captions(),
            "Captions",
            columns=layout.CAPTION_COLUMNS,
            sort_by="caption_idx",
            keep_default_na=False,
            dtype={"image_name": str, "caption": str},
        )

    def get(self, name: str) -> pd.DataFrame:
        """All caption rows of ``name`` in ``caption_idx`` order, indexed 0…k-1 (empty if none)."""
        return self._meta.rows_for(name)

    def list(self, name: str, source: str | None = None) -> builtins.list[str]:
        """Captions of ``name`` in ``caption_idx`` order; ``source`` ``"human"``/``"ai"`` keeps one
        source."""
        rows = self._meta.rows_for(name)
        if source is not None:
            check_option("source", source, CAPTION_SOURCES)
            rows = rows[rows["source"] == source]
        return rows["caption"].tolist()

    def human(self, name: str, limit: int | None = None) -> builtins.list[str]:
        """Human captions of ``name`` in rank order (five for shared images, three for unique
        ones); ``limit`` keeps the first ``limit``."""
        captions = self.list(name, source="human")
        return captions if limit is None else captions[:limit]

    def ai(self, name: str) -> str | None:
        """The AI caption of ``name``, or None where there is none."""
        captions = self.list(name, source="ai")
        return captions[0] if captions and captions[0] != "" else None


@fill_doc
class Stimuli:
    """The LAION-fMRI stimulus set, keyed by image name.

    Parameters
    ----------
    %(fmri_data_dir)s
    %(storage_options)s

    Attributes
    ----------
    images, embeddings, segmentations, captions
        The four namespaces (`StimulusImages`, `StimulusEmbeddings`, `StimulusSegmentations`,
        `StimulusCaptions`). Nothing is read until a namespace is used.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | DataRoot | None = None,
        storage_options: dict | None = None,
    ):
        self.root = resolve_root(data_dir, storage_options)
        self._metadata: pd.DataFrame | None = None
        self._row_index: dict[str, int] | None = None
        self.images = StimulusImages(self)
        self.embeddings = StimulusEmbeddings(self)
        self.segmentations = StimulusSegmentations(self)
        self.captions = StimulusCaptions(self)

    def __repr__(self) -> str:
        return f"Stimuli({self.root.url!r})"

    @property
    def metadata(self) -> pd.DataFrame:
        """``task-images_metadata.csv``: image_name, dataset, participant, unique_or_shared, n_reps.

        A blank ``participant`` (the shared images) is NaN, as pandas and laion_fmri read it.
        """
        if self._metadata is None:
            table = read_table(
                self.root,
                layout.stimuli_metadata(),
                "Stimulus metadata",
                columns=layout.METADATA_COLUMNS,
                stimuli=True,
                keep_default_na=False,
                dtype={"image_name": str, "participant": str},
            )
            table["participant"] = table["participant"].replace("", np.nan)
            self._metadata = table
        return self._metadata

    @property
    def row_index(self) -> dict[str, int]:
        """Image name → row of the metadata table (and of the images file)."""
        if self._row_index is None:
            names = self.metadata["image_name"].tolist()
            self._row_index = unique_index(names, self.root.path(layout.stimuli_metadata()))
        return self._row_index

    def rows(self, names: Sequence[str]) -> np.ndarray:
        """Metadata rows of ``names``; KeyError for a name not in the stimulus set."""
        return _rows_of(list(names), self.row_index, "stimulus metadata")

    def has_images(self) -> bool:
        """Whether the stimulus images file is present."""
        return self.root.exists(layout.stimuli_images())

    def close(self) -> None:
        """Close every open HDF5 handle (they reopen on next use)."""
        for namespace in (self.images, self.embeddings, self.segmentations):
            namespace.close()

    def __enter__(self) -> Stimuli:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@fill_doc
def load_stimuli(
    data_dir: str | os.PathLike | DataRoot | None = None, storage_options: dict | None = None
) -> Stimuli:
    """The dataset-wide stimulus hub (see `Stimuli`).

    Parameters
    ----------
    %(fmri_data_dir)s
    %(storage_options)s
    """
    return Stimuli(data_dir, storage_options)


@fill_doc
def load_embeddings(
    models: str | Sequence[str] = "all",
    data_dir: str | os.PathLike | DataRoot | None = None,
    storage_options: dict | None = None,
) -> StimulusEmbeddings:
    """A reader of the embeddings of some models (laion_fmri's ``load_embeddings``).

    Parameters
    ----------
    models
        ``"all"`` (every model of the dataset: CLIP, DINOv2, PEcore, SigLIP2), one model name or
        a list of them; a string is one name.
    %(fmri_data_dir)s
    %(storage_options)s

    Raises
    ------
    UnknownModelError
        A model the dataset does not have (a ``KeyError`` and a ``ValueError``).
    StimuliNotDownloadedError
        The embedding file of a chosen model is missing (a ``FileNotFoundError``).
    """
    hub = Stimuli(data_dir, storage_options)
    chosen = list(layout.EMBEDDING_MODELS) if models == "all" else as_names("models", models)
    for model in chosen:
        require(hub.root, layout.embeddings(model), f"{model} embeddings", stimuli=True)
    return StimulusEmbeddings(hub, models=chosen)
